public import KerberosSecrets
internal import CKrb5

/// A login whose questions come out as values and whose answers go back in: OTP codes, smart-card PINs, a new
/// password when the old one expired. Nothing waits while a person types: each ``next(_:)`` runs the exchange from
/// the start on a worker with every answer given so far, and ends either with the ticket or with the questions still
/// open, before anything that would need their answers is sent. A one-time code therefore reaches the KDC (and its
/// second factor) once, in the attempt that has it.
///
/// ```swift
/// let login = client.conversation(for: "bob", verification: VerificationRequest())
/// var answers = KerberosConversation.Answers(password: Secret(typedPassword))
/// while case .questions(let questions) = try await login.next(answers) {
///     answers = try await askThePerson(questions)   // a web form, a terminal: no thread waits meanwhile
/// }
/// ```
///
/// The same replay serves `krb5-verifyd`'s conversations (see `docs/engine.md`).
public final class KerberosConversation: Sendable {
    /// What a person is asked.
    public enum Question: Sendable, Hashable {
        /// A question of the KDC's pre-authentication (a password, an OTP, a PKINIT PIN, a mechanism's JSON).
        case responder(ResponderQuestion)
        /// The password expired: a new one, which the conversation sets through kpasswd before logging in with it.
        case newPassword
    }

    /// Answers given so far; each ``next(_:)`` adds to them (a later answer replaces an earlier one).
    public struct Answers: Sendable {
        /// Answers to ``Question/responder(_:)``.
        public var responder: ResponderAnswers
        /// The answer to ``Question/newPassword``.
        public var newPassword: Secret?

        /// Answers with the given members; `password` answers `ResponderQuestion.password`.
        public init(password: Secret? = nil, otp: OTPAnswer? = nil, pkinit: [String: Secret] = [:], raw: [String: Secret] = [:], newPassword: Secret? = nil) {
            responder = ResponderAnswers(password: password, otp: otp, pkinit: pkinit, raw: raw)
            self.newPassword = newPassword
        }

        /// `self` with what `later` gives added or replaced.
        func merging(_ later: Answers) -> Answers {
            var merged = self
            if let password = later.responder.password { merged.responder.password = password }
            if let otp = later.responder.otp { merged.responder.otp = otp }
            merged.responder.pkinit.merge(later.responder.pkinit) { $1 }
            merged.responder.raw.merge(later.responder.raw) { $1 }
            if let newPassword = later.newPassword { merged.newPassword = newPassword }
            return merged
        }
    }

    /// Where a step ended.
    public enum Step: Sendable {
        /// These must be answered before the login can go on.
        case questions([Question])
        /// The login succeeded (and was verified when the conversation asks for it).
        case done(TicketInfo)
    }

    private let client: KerberosClient
    private let principal: String
    private let options: LoginOptions
    private let verification: VerificationRequest?
    private let timeout: Duration?
    private let given = Locked(Answers())

    init(client: KerberosClient, principal: String, options: LoginOptions, verification: VerificationRequest?, timeout: Duration?) {
        self.client = client
        self.principal = principal
        self.options = options
        self.verification = verification
        self.timeout = timeout
    }

    /// Adds `answers` to those given so far and runs the exchange once, bounded by the login timeout.
    ///
    /// Throws what ends the login: a wrong password or code (`KerberosError.Reason.badPassword`), an unreachable
    /// KDC, a failed verification; a new password the policy refuses ends it with `KerberosError.Reason.passwordExpired`.
    public func next(_ answers: Answers = Answers()) async throws(KerberosError) -> Step {
        let given = self.given.withLock { given in
            given = given.merging(answers)
            return given
        }
        let (principal, options, verification) = (self.principal, self.options, self.verification)
        return try await client.withSession(timeout: timeout) { session throws(KerberosError) -> Step in
            let open = Locked<[Question]>([])
            let setup = try session.onWorker { context in
                var setup = InitialCredentialsSetup(client: try Principal(parsing: principal, in: context), password: given.responder.password,
                                                    options: try options.make(in: context))
                setup.options.responder = Responder { questions in
                    switch ResponderAnswers.answering(questions, from: given.responder) {
                    case .success(let answers): return answers
                    case .failure(let unanswered):
                        open.withLock { $0 = unanswered.questions.map(Question.responder) }
                        throw unanswered
                    }
                }
                return setup
            }
            let credentials: Credentials
            do throws(KerberosError) {
                credentials = try await session.initialCredentials(setup)
            } catch {
                let questions = open.withLock { $0 }
                if !questions.isEmpty { return .questions(questions) }
                guard error.reason == .passwordExpired && error.code == KRB5KDC_ERR_KEY_EXP else { throw error }
                guard let old = given.responder.password, let new = given.newPassword else { return .questions([.newPassword]) }
                credentials = try await Self.changeExpired(setup, old: old, new: new, session: session)
            }
            var verified = false
            if let verification {
                verified = try await session.verify(credentials, options: try session.onWorker { context in try verification.make(in: context) })
            }
            return .done(TicketInfo(credentials, verified: verified))
        }
    }

    /// What MIT's `krb5_get_init_creds_password` does on an expired password: a `kadmin/changepw` ticket with the
    /// old password, the change through kpasswd, then the login with the new password.
    private static func changeExpired(_ setup: InitialCredentialsSetup, old: Secret, new: Secret, session: KerberosSession) async throws(KerberosError) -> Credentials {
        var withOld = setup
        withOld.key = .password(old)
        let ticket = try await session.passwordChangeTicket(withOld)
        let result = try await session.changePassword(with: ticket, newPassword: new)
        guard result.succeeded else {
            let reason = result.message.isEmpty ? result.codeText : "\(result.codeText): \(result.message)"
            throw KerberosError(code: Int32(KRB5_CHPW_FAIL), message: "The password could not be changed: \(reason)", reason: .passwordExpired)
        }
        var withNew = setup
        withNew.key = .password(new)
        return try await session.initialCredentials(withNew)
    }
}

extension KerberosClient {
    /// A login of `principal` as a conversation (``KerberosConversation``): questions out, answers in, no thread
    /// held between them. `verification` defaults to verification with nofail against the default keytab.
    public func conversation(for principal: String, options: LoginOptions = LoginOptions(), verification: VerificationRequest? = VerificationRequest(),
                             timeout: Duration? = nil) -> KerberosConversation {
        KerberosConversation(client: self, principal: principal, options: options, verification: verification, timeout: timeout)
    }
}
