import Foundation
import Kerberos
import KerberosEngine
import LoginProtocol
import Testing
@testable import LoginService

/// How krb5's questions are answered from a conversation's answers, and what is asked instead: no KDC.
@Suite("Answer mapping (unit)")
struct AnswerMappingTests {
    static let otpChallenge = OTPChallenge(service: "R", tokens: [OTPToken(flags: .collectToken)])
    static let card = PKINITIdentity(identity: "PKCS11:token=card", flags: [])

    private func unanswered<T>(_ body: () throws(Unanswered) -> T) -> [LoginQuestion]? {
        do throws(Unanswered) { _ = try body(); return nil } catch { return error.questions }
    }

    private func bytes(_ secret: Secret?) -> String? {
        secret.map { $0.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
    }

    // MARK: Responder questions

    @Test("the password question takes the password; without one it asks, naming the principal as the client spelt it")
    func password() throws {
        let answered = try AnswerMapping.respond([.password], answers: LoginAnswers(password: Secret("pw")), asked: "alice")
        #expect(bytes(answered.password) == "pw")
        #expect(unanswered { () throws(Unanswered) in try AnswerMapping.respond([.password], answers: LoginAnswers(), asked: "alice") }
                == [.password(prompt: "Password for alice")])
    }

    @Test("a round offering a password and an OTP needs only the OTP when the OTP is given")
    func otpAnswersTheRound() throws {
        let answers = LoginAnswers(otp: OTPAnswer(value: Secret("123456")))
        let answered = try AnswerMapping.respond([.password, .otp(Self.otpChallenge)], answers: answers, asked: "alice")
        #expect(bytes(answered.otp?.value) == "123456")
        #expect(answered.password == nil)
    }

    @Test("a round offering a password and an OTP needs only the password when the password is given")
    func passwordAnswersTheRound() throws {
        let answered = try AnswerMapping.respond([.otp(Self.otpChallenge), .password], answers: LoginAnswers(password: Secret("pw")), asked: "alice")
        #expect(bytes(answered.password) == "pw")
        #expect(answered.otp == nil)
    }

    @Test("with neither, both the password and the OTP are asked, in krb5's order")
    func neitherAsksBoth() {
        let questions = unanswered { () throws(Unanswered) in
            try AnswerMapping.respond([.password, .otp(Self.otpChallenge)], answers: LoginAnswers(), asked: "bob")
        }
        #expect(questions == [.password(prompt: "Password for bob"), .otp(Self.otpChallenge)])
    }

    @Test("an OTP question alone is asked even when the password is known: the password answers only a round that asks for it")
    func otpAloneWithPassword() {
        let questions = unanswered { () throws(Unanswered) in
            try AnswerMapping.respond([.otp(Self.otpChallenge)], answers: LoginAnswers(password: Secret("pw")), asked: "a")
        }
        #expect(questions == [.otp(Self.otpChallenge)])
    }

    @Test("a PKINIT PIN answers its identity and makes the password question unnecessary")
    func pkinitAnswersTheRound() throws {
        let other = PKINITIdentity(identity: "FILE:other.pem", flags: [])
        let answers = LoginAnswers(pkinit: [Self.card.identity: Secret("1234")])
        let answered = try AnswerMapping.respond([.password, .pkinit([Self.card, other])], answers: answers, asked: "a")
        #expect(answered.pkinit.keys.sorted() == [Self.card.identity])
        #expect(bytes(answered.pkinit[Self.card.identity]) == "1234")
        #expect(unanswered { () throws(Unanswered) in try AnswerMapping.respond([.pkinit([Self.card])], answers: LoginAnswers(), asked: "a") }
                == [.pkinit([Self.card])])
    }

    @Test("questions this package does not decode are answered verbatim by name, or asked raw")
    func rawQuestions() throws {
        let answered = try AnswerMapping.respond([.other(name: "spake", challenge: "{}")], answers: LoginAnswers(raw: ["spake": Secret("{\"x\":1}")]), asked: "a")
        #expect(bytes(answered.raw["spake"]) == "{\"x\":1}")
        #expect(unanswered { () throws(Unanswered) in try AnswerMapping.respond([.other(name: "spake", challenge: "{}")], answers: LoginAnswers(), asked: "a") }
                == [.raw(name: "spake", challenge: "{}")])
    }

    // MARK: Prompter rounds

    @Test("prompts are answered in order by kind; free-text prompts take the text answers in turn")
    func promptsInOrder() throws {
        let round = PromptRound(name: nil, banner: "Password expired.", prompts: [
            Prompt(text: "Password", hidden: true, kind: .password),
            Prompt(text: "Enter new password", hidden: true, kind: .newPassword),
            Prompt(text: "Enter it again", hidden: true, kind: .newPasswordAgain),
            Prompt(text: "Pass phrase", hidden: true, kind: .preauth),
            Prompt(text: "Other", hidden: false, kind: .other),
        ])
        let answers = LoginAnswers(password: Secret("old"), newPassword: Secret("new"), newPasswordAgain: Secret("new2"), text: [Secret("t1"), Secret("t2")])
        #expect(try AnswerMapping.prompt(round, answers: answers).map(bytes) == ["old", "new", "new2", "t1", "t2"])
    }

    @Test("unanswered prompts are asked with krb5's text; a missing second text answer asks for the second prompt only")
    func promptsUnanswered() {
        let round = PromptRound(name: nil, banner: nil, prompts: [
            Prompt(text: "New password", hidden: true, kind: .newPassword),
            Prompt(text: "Again", hidden: true, kind: .newPasswordAgain),
            Prompt(text: "PIN", hidden: true, kind: .preauth),
            Prompt(text: "Code", hidden: false, kind: .other),
        ])
        let questions = unanswered { () throws(Unanswered) in try AnswerMapping.prompt(round, answers: LoginAnswers(text: [Secret("pin")])) }
        #expect(questions == [.newPassword(prompt: "New password"), .newPasswordAgain(prompt: "Again"), .text(prompt: "Code", hidden: false)])
    }

    @Test("an empty round needs no answers")
    func emptyRound() throws {
        #expect(try AnswerMapping.prompt(PromptRound(name: nil, banner: nil, prompts: []), answers: LoginAnswers()).isEmpty)
        #expect(try AnswerMapping.respond([], answers: LoginAnswers(), asked: "a").password == nil)
    }

    // MARK: Information and messages

    @Test("expiry warnings name the password first, in whole days, or within a day")
    func expiry() {
        let now = KerberosTime(secondsSince1970: 1_000_000)
        #expect(AnswerMapping.expiryMessage(password: now + .seconds(3 * 86400 + 60), account: now + .seconds(86400), now: now) == "Password expires in 3 days")
        #expect(AnswerMapping.expiryMessage(password: nil, account: now + .seconds(86400 + 1), now: now) == "Account expires in 1 day")
        #expect(AnswerMapping.expiryMessage(password: now + .seconds(3600), account: nil, now: now) == "Password expires within a day")
        #expect(AnswerMapping.expiryMessage(password: now - .seconds(3600), account: nil, now: now) == "Password expires within a day")
        #expect(AnswerMapping.expiryMessage(password: nil, account: nil, now: now) == nil)
    }

    @Test("a wrong password reads as 'Authentication failed'; a verification failure keeps krb5's reason")
    func messages() {
        #expect(AnswerMapping.message(for: KerberosError(code: 1, message: "Preauthentication failed", reason: .badPassword)) == "Authentication failed")
        #expect(AnswerMapping.message(for: KerberosError(code: 1, message: "Key version mismatch", reason: .verificationFailed))
                == "Credentials could not be verified: Key version mismatch")
        #expect(AnswerMapping.message(for: KerberosError(code: 1, message: "Clock skew too great", reason: .clockSkew)) == "Clock skew too great")
    }
}
