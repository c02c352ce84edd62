import Kerberos
import KerberosEngine
import LoginProtocol

/// The questions a conversation has not answered yet: thrown from the responder or prompter, which makes krb5
/// stop the exchange, and read by the attempt to ask the person.
struct Unanswered: Error, Equatable {
    let questions: [LoginQuestion]
}

/// How krb5's questions (responder questions, prompter rounds) are answered from a conversation's answers, and
/// what is asked of the person instead: pure functions of their arguments, with no krb5 context and no KDC.
enum AnswerMapping {
    /// The responder's answers to `questions` from `answers`, or the questions still to ask.
    ///
    /// One round of FAST may offer both a password and an OTP (or PKINIT): an answer to either one answers the
    /// round, so the other is not asked. `asked` is the principal as the client spelt it, for the prompt text.
    static func respond(_ questions: [ResponderQuestion], answers: LoginAnswers, asked: String) throws(Unanswered) -> ResponderAnswers {
        let given = ResponderAnswers(password: answers.password, otp: answers.otp, pkinit: answers.pkinit, raw: answers.raw)
        switch ResponderAnswers.answering(questions, from: given) {
        case .success(let answers):
            return answers
        case .failure(let unanswered):
            throw Unanswered(questions: unanswered.questions.map { question in
                switch question {
                case .password: .password(prompt: "Password for \(asked)")
                case .otp(let challenge): .otp(challenge)
                case .pkinit(let identities): .pkinit(identities)
                case .other(let name, let challenge): .raw(name: name, challenge: challenge)
                }
            })
        }
    }

    /// The prompter's replies to `round`, in order, from `answers`, or the questions still to ask. Prompts other
    /// than the password kinds take the free-text answers in the order they come.
    static func prompt(_ round: PromptRound, answers: LoginAnswers) throws(Unanswered) -> [Secret] {
        var replies: [Secret] = []
        var unanswered: [LoginQuestion] = []
        var textIndex = 0
        for prompt in round.prompts {
            let reply: Secret?
            switch prompt.kind {
            case .password:
                reply = answers.password
                if reply == nil { unanswered.append(.password(prompt: prompt.text)) }
            case .newPassword:
                reply = answers.newPassword
                if reply == nil { unanswered.append(.newPassword(prompt: prompt.text)) }
            case .newPasswordAgain:
                reply = answers.newPasswordAgain
                if reply == nil { unanswered.append(.newPasswordAgain(prompt: prompt.text)) }
            case .preauth, .other:
                reply = textIndex < answers.text.count ? answers.text[textIndex] : nil
                textIndex += 1
                if reply == nil { unanswered.append(.text(prompt: prompt.text, hidden: prompt.hidden)) }
            }
            if let reply { replies.append(reply) }
        }
        guard unanswered.isEmpty else { throw Unanswered(questions: unanswered) }
        return replies
    }

    /// The information line for the KDC's expiry warning (`Password expires in 3 days`; the password's expiry
    /// first), or nil when the reply named neither.
    static func expiryMessage(password: KerberosTime?, account: KerberosTime?, now: KerberosTime = .now) -> String? {
        guard let time = password ?? account else { return nil }
        let what = password != nil ? "Password" : "Account"
        let days = (time - now).components.seconds / 86400
        let when = days >= 1 ? "in \(days) day\(days == 1 ? "" : "s")" : "within a day"
        return "\(what) expires \(when)"
    }

    /// The failure's message for the client; krb5 never puts secrets in messages.
    static func message(for error: KerberosError) -> String {
        switch error.reason {
        case .badPassword: "Authentication failed"
        case .verificationFailed: "Credentials could not be verified: \(error.message)"
        default: error.message
        }
    }
}
