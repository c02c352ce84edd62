import KerberosSecrets
// The terminal prompts are the binding's (its `Prompter.terminal` asks through them); nothing else of it is used here.
import enum Kerberos.Terminal
import LoginService
import LoginProtocol
import SystemPackage

/// Where a round's answers come from.
protocol AnswerSource {
    /// The answers to one round, or nil to decline it.
    func answers(to questions: [LoginQuestion], round: Int) -> LoginAnswers?
    /// Shows a banner or expiry warning.
    func inform(_ message: String)
    /// Reports the end of the login.
    func finish(_ result: LoginResult)
}

/// pam-exec and line modes: the password was all there is; further questions decline the login.
struct NoAnswers: AnswerSource {
    func answers(to questions: [LoginQuestion], round: Int) -> LoginAnswers? { nil }
    func inform(_ message: String) {}
    func finish(_ result: LoginResult) {}
}

/// pam-exec mode: nothing can be asked. Expiry warnings go to standard output once the login has succeeded,
/// and nothing else does: pam_exec's `stdout` option shows that output to the user as PAM text messages.
final class PAMExecAnswers: AnswerSource {
    private let output: FileDescriptor
    private var warnings: [String] = []

    init(output: FileDescriptor) {
        self.output = output
    }

    func answers(to questions: [LoginQuestion], round: Int) -> LoginAnswers? { nil }

    func inform(_ message: String) {
        if Self.isExpiryWarning(message) { warnings.append(message) }
    }

    func finish(_ result: LoginResult) {
        guard result.ok else { return }
        let writer = LineWriter(descriptor: output)
        warnings.forEach { writer.line($0) }
    }

    /// LoginService's expiry messages ("Password expires in 3 days", "Account expires within a day").
    static func isExpiryWarning(_ message: String) -> Bool {
        message.hasPrefix("Password expires") || message.hasPrefix("Account expires")
    }
}

/// Interactive mode: asks on the terminal with hidden input.
struct TerminalAnswers: AnswerSource {
    func askPrincipal() throws -> String? {
        let secret = try Terminal.ask("Principal: ", hidden: false)
        return secret.withUnsafeBytes { String(validating: $0, as: UTF8.self) }
    }

    func answers(to questions: [LoginQuestion], round: Int) -> LoginAnswers? {
        var answers = LoginAnswers()
        do {
            for question in questions {
                switch question {
                case .password(let prompt):
                    answers.password = try Terminal.ask(prompt + ": ", hidden: true)
                case .otp(let challenge):
                    let token = challenge.tokens.first
                    let value = try Terminal.ask("One-time password\(challenge.service.map { " for \($0)" } ?? ""): ", hidden: true)
                    var pin: Secret?
                    if let flags = token?.flags, flags.contains(.collectPIN) {
                        pin = try Terminal.ask("PIN: ", hidden: true)
                    }
                    answers.otp = OTPAnswer(token: 0, value: value, pin: pin)
                case .pkinit(let identities):
                    for identity in identities {
                        if identity.flags.contains(.pinLocked) {
                            Terminal.say("The token \(identity.identity) is locked.")
                            continue
                        }
                        if identity.flags.contains(.pinFinalTry) { Terminal.say("Warning: one more wrong PIN locks the token.") }
                        else if identity.flags.contains(.pinCountLow) { Terminal.say("Warning: a wrong PIN was entered before.") }
                        answers.pkinit[identity.identity] = try Terminal.ask("PIN for \(identity.identity): ", hidden: true)
                    }
                case .newPassword(let prompt):
                    answers.newPassword = try Terminal.ask(prompt + ": ", hidden: true)
                case .newPasswordAgain(let prompt):
                    answers.newPasswordAgain = try Terminal.ask(prompt + ": ", hidden: true)
                case .text(let prompt, let hidden):
                    answers.text.append(try Terminal.ask(prompt + ": ", hidden: hidden))
                case .raw(let name, _):
                    Terminal.say("Cannot answer the \(name) question on a terminal.")
                }
            }
        } catch {
            return nil
        }
        return answers
    }

    func inform(_ message: String) { Terminal.say(message) }
    func finish(_ result: LoginResult) {}
}

/// Performs the steps of a conversation.
protocol LoginBackend {
    func start(_ conversation: LoginConversation) -> LoginStep
    func answer(_ conversation: LoginConversation, _ answers: LoginAnswers, round: Int) -> LoginStep
}

/// Calls krb5 in this process, on the calling thread, with one context for the whole conversation. With `finishing`,
/// a login that ends calls it instead of returning (``InProcessLogin/step(_:finishing:)``).
final class InProcessBackend: LoginBackend {
    private let login: InProcessLogin
    private let finishing: ((LoginResult, [String]) -> Never)?

    init(configuration: LoginConfiguration, finishing: ((LoginResult, [String]) -> Never)? = nil) {
        login = InProcessLogin(configuration: configuration)
        self.finishing = finishing
    }

    func start(_ conversation: LoginConversation) -> LoginStep {
        login.step(conversation, finishing: finishing)
    }

    func answer(_ conversation: LoginConversation, _ answers: LoginAnswers, round: Int) -> LoginStep {
        do { try conversation.answer(answers, round: round) } catch {
            return .finished(.failed(.invalidRequest, "\(error)", principal: conversation.principal), info: [])
        }
        return login.step(conversation, finishing: finishing)
    }
}
