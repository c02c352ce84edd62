public import KerberosEngine
import Synchronization

/// Logins through the library's ``KerberosClient``: initial credentials, verified against the keytab, armored with
/// anonymous PKINIT so that the KDC may ask for a one-time password. Every call suspends; no thread waits on a KDC
/// or on the person at the browser.
///
/// A one-time password is a second round of the same exchange. The first attempt runs with the password only; when
/// the KDC asks for an OTP, the ``Responder`` keeps the question and stops the exchange, and the app shows the
/// question in its form. The person's answer comes with a second attempt, which replays the exchange with the
/// password and the OTP. Between the two nothing holds a worker: the library's public API has no way to park an
/// exchange at a question, so the replay is the way (krb5-verifyd's conversations do the same).
public final class KerberosLogin: Sendable {
    /// How a login attempt ended.
    public enum Outcome: Sendable {
        /// Verified credentials for `principal` (the name the KDC gave the ticket).
        case verified(principal: String)
        /// The KDC asks for a one-time password: show `challenge`, then call ``login(user:password:otp:)`` again.
        case needsOTP(OTPChallenge)
        /// Refused; `error.reason` says why (`bad-password`, `kdc-unreachable`, …).
        case failed(KerberosError)
    }

    private let client: KerberosClient
    private let verification: VerificationRequest
    private let armor: Bool

    /// Starts the library's worker threads for `configuration`.
    public init(configuration: AppConfiguration) throws {
        let krb5 = configuration.krb5Config.map { Context.Configuration(files: [$0]) } ?? .default
        client = try KerberosClient(configuration: .init(krb5: krb5, threads: 2, loginTimeout: .seconds(15)))
        verification = VerificationRequest(server: configuration.serverPrincipal, keytab: configuration.keytab, nofail: true)
        armor = configuration.armor == .anonymous
    }

    /// Stops the worker threads.
    public func shutdown() async { await client.shutdown() }

    /// One attempt: `user`'s `password`, and `otp` when the KDC asked for one in an earlier attempt.
    public func login(user: String, password: Secret, otp: OTPAnswer? = nil) async -> Outcome {
        let asked = AskedQuestion()
        let armor = self.armor
        do {
            let ticket = try await client.initialCredentials(verification: verification) { context in
                var options = InitialCredentialsOptions()
                if armor { options.armor = .anonymousPKINIT }
                // Runs on the worker during a step, and returns at once: answers to the questions asked (krb5 refuses
                // an answer to one it did not ask), or the exchange stops here.
                options.responder = Responder { questions in
                    var answers = ResponderAnswers(password: questions.contains(.password) ? password : nil)
                    for case .otp(let challenge) in questions {
                        guard let otp else {
                            asked.challenge.withLock { $0 = challenge }
                            throw OTPRequired()
                        }
                        answers.otp = otp
                    }
                    return answers
                }
                return InitialCredentialsSetup(client: try Principal(parsing: user, in: context), password: password, options: options)
            }
            return .verified(principal: ticket.client)
        } catch {
            if otp == nil, let challenge = asked.challenge.withLock({ $0 }) { return .needsOTP(challenge) }
            return .failed(error)
        }
    }
}

/// The OTP question a responder saw, handed from the worker back to the caller.
private final class AskedQuestion: Sendable {
    let challenge = Mutex<OTPChallenge?>(nil)
}

/// Thrown by the responder to stop an exchange at an OTP question the app must first put to the person.
private struct OTPRequired: Error {}
