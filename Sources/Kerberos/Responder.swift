public import KerberosSecrets
import CKrb5

/// A question krb5 asks a responder during one round of pre-authentication.
public enum ResponderQuestion: Sendable, Hashable {
    /// The user's password (`KRB5_RESPONDER_QUESTION_PASSWORD`); there is no challenge.
    case password
    /// A one-time password (`KRB5_RESPONDER_QUESTION_OTP`).
    case otp(OTPChallenge)
    /// PINs or pass phrases for PKINIT identities (`KRB5_RESPONDER_QUESTION_PKINIT`).
    case pkinit([PKINITIdentity])
    /// A question this library does not decode: its name and raw JSON challenge.
    case other(name: String, challenge: String)
}

extension ResponderQuestion {
    /// Whether a second factor decides the answer (an OTP, or a mechanism this library does not know), so the
    /// request carrying it must reach one KDC only.
    var decidedBySecondFactor: Bool {
        switch self {
        case .password, .pkinit: false
        case .otp, .other: true
        }
    }
}

/// Answers to one round of questions. Questions left unanswered fall through to the prompter.
public struct ResponderAnswers: Sendable {
    /// The answer to ``ResponderQuestion/password``.
    public var password: Secret?
    /// The answer to ``ResponderQuestion/otp(_:)``.
    public var otp: OTPAnswer?
    /// PINs or pass phrases by identity, for ``ResponderQuestion/pkinit(_:)``.
    public var pkinit: [String: Secret]
    /// Raw JSON answers by question name, for ``ResponderQuestion/other(name:challenge:)``.
    public var raw: [String: Secret]

    /// Answers with the given members; nothing by default.
    public init(password: Secret? = nil, otp: OTPAnswer? = nil, pkinit: [String: Secret] = [:], raw: [String: Secret] = [:]) {
        self.password = password
        self.otp = otp
        self.pkinit = pkinit
        self.raw = raw
    }

    /// No answers: everything falls through to the prompter.
    public static var none: ResponderAnswers { ResponderAnswers() }
}

/// The questions of a round that the answers given so far leave open.
package struct UnansweredQuestions: Error {
    package let questions: [ResponderQuestion]
}

extension ResponderAnswers {
    /// The answers a round of `questions` takes from `given`, or the questions it leaves open: the one rule of every
    /// conversation that replays its answers (``KerberosConversation``, `krb5-verifyd`'s).
    ///
    /// One round of FAST may offer both a password and an OTP (or PKINIT): an answer to either one answers the round,
    /// so the other is not asked. PKINIT is answered when any of its identities is.
    package static func answering(_ questions: [ResponderQuestion], from given: ResponderAnswers) -> Result<ResponderAnswers, UnansweredQuestions> {
        var answers = ResponderAnswers()
        var open: [ResponderQuestion] = []
        for question in questions {
            switch question {
            case .password:
                if let password = given.password { answers.password = password } else { open.append(question) }
            case .otp:
                if let otp = given.otp { answers.otp = otp } else { open.append(question) }
            case .pkinit(let identities):
                let known = identities.filter { given.pkinit[$0.identity] != nil }
                if known.isEmpty { open.append(question) }
                for identity in known { answers.pkinit[identity.identity] = given.pkinit[identity.identity] }
            case .other(let name, _):
                if let raw = given.raw[name] { answers.raw[name] = raw } else { open.append(question) }
            }
        }
        if answers.otp != nil || !answers.pkinit.isEmpty { open.removeAll { $0 == .password } }
        if answers.password != nil { open.removeAll { if case .otp = $0 { true } else { false } } }
        return open.isEmpty ? .success(answers) : .failure(UnansweredQuestions(questions: open))
    }
}

/// Answers the questions of each pre-authentication round: a Swift closure in place of a `krb5_responder_fn`.
///
/// The closure is called once per round with all of that round's questions. An error it throws cancels
/// the login and reaches the caller unchanged.
public struct Responder {
    enum Body {
        case sync(([ResponderQuestion]) throws -> ResponderAnswers)
        case async(@Sendable ([ResponderQuestion]) async throws -> ResponderAnswers)
    }
    let body: Body

    /// A responder that answers on the calling thread.
    public init(_ body: @escaping ([ResponderQuestion]) throws -> ResponderAnswers) {
        self.body = .sync(body)
    }

    /// A responder that may suspend (for example to ask a remote user); the krb5 call's dedicated thread waits.
    public init(async body: @escaping @Sendable ([ResponderQuestion]) async throws -> ResponderAnswers) {
        self.body = .async(body)
    }

    func answer(_ questions: [ResponderQuestion]) throws -> ResponderAnswers {
        switch body {
        case .sync(let body): try body(questions)
        case .async(let body): try waitForAsync { try await body(questions) }
        }
    }
}

extension CallbackState {
    /// The responder call: decodes the round's questions, asks the Swift responder, sets the answers.
    func respond(_ rctx: krb5_responder_context) -> krb5_error_code {
        guard let responder else { return 0 }
        let questions = Self.questions(context.raw, rctx)
        do {
            let answers = try responder.answer(questions)
            let code = try set(answers, questions: questions, rctx)
            if code == 0 && questions.contains(where: \.decidedBySecondFactor) { answeredOneTimeValue = true }
            return code
        } catch {
            return fail(error)
        }
    }

    /// Decodes the questions of this round (`krb5_responder_list_questions`).
    static func questions(_ raw: krb5_context, _ rctx: krb5_responder_context) -> [ResponderQuestion] {
        guard let names = krb5_responder_list_questions(raw, rctx) else { return [] }
        var result: [ResponderQuestion] = []
        var index = 0
        while let namePointer = names[index] {
            index += 1
            let name = String(cString: namePointer)
            switch name {
            case KRB5_RESPONDER_QUESTION_PASSWORD:
                result.append(.password)
            case KRB5_RESPONDER_QUESTION_OTP:
                var challenge: UnsafeMutablePointer<krb5_responder_otp_challenge>?
                if krb5_responder_otp_get_challenge(raw, rctx, &challenge) == 0, let challenge {
                    result.append(.otp(OTPChallenge(challenge.pointee)))
                    krb5_responder_otp_challenge_free(raw, rctx, challenge)
                } else {
                    result.append(.other(name: name, challenge: rawChallenge(raw, rctx, name)))
                }
            case KRB5_RESPONDER_QUESTION_PKINIT:
                var challenge: UnsafeMutablePointer<krb5_responder_pkinit_challenge>?
                if krb5_responder_pkinit_get_challenge(raw, rctx, &challenge) == 0, let challenge {
                    result.append(.pkinit(PKINITIdentity.list(challenge.pointee.identities)))
                    krb5_responder_pkinit_challenge_free(raw, rctx, challenge)
                } else {
                    result.append(.other(name: name, challenge: rawChallenge(raw, rctx, name)))
                }
            default:
                result.append(.other(name: name, challenge: rawChallenge(raw, rctx, name)))
            }
        }
        return result
    }

    private static func rawChallenge(_ raw: krb5_context, _ rctx: krb5_responder_context, _ name: String) -> String {
        krb5_responder_get_challenge(raw, rctx, name).map { String(cString: $0) } ?? ""
    }

    /// Hands the answers to krb5, which copies them (and wipes its copies when done).
    private func set(_ answers: ResponderAnswers, questions: [ResponderQuestion], _ rctx: krb5_responder_context) throws -> krb5_error_code {
        let raw = context.raw
        if let password = answers.password {
            try context.check(password.withCString { krb5_responder_set_answer(raw, rctx, KRB5_RESPONDER_QUESTION_PASSWORD, $0) })
        }
        if let otp = answers.otp {
            let tokenCount = questions.lazy.compactMap { if case .otp(let challenge) = $0 { challenge.tokens.count } else { nil } }.first ?? 0
            guard otp.token >= 0, otp.token < tokenCount else {
                throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "OTP answer names token \(otp.token), but the challenge has \(tokenCount)", reason: .invalidRequest)
            }
            let code = withOptionalCString(otp.value) { value in
                withOptionalCString(otp.pin) { pin in
                    krb5_responder_otp_set_answer(raw, rctx, otp.token, value, pin)
                }
            }
            try context.check(code)
        }
        for (identity, pin) in answers.pkinit.sorted(by: { $0.key < $1.key }) {
            try context.check(pin.withCString { krb5_responder_pkinit_set_answer(raw, rctx, identity, $0) })
        }
        for (name, answer) in answers.raw.sorted(by: { $0.key < $1.key }) {
            try context.check(answer.withCString { krb5_responder_set_answer(raw, rctx, name, $0) })
        }
        return 0
    }
}

private func withOptionalCString<R>(_ secret: Secret?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    if let secret { return secret.withCString { body($0) } }
    return body(nil)
}

extension OTPChallenge {
    init(_ raw: krb5_responder_otp_challenge) {
        var tokens: [OTPToken] = []
        if let list = raw.tokeninfo {
            var index = 0
            while let info = list[index] {
                index += 1
                let token = info.pointee
                tokens.append(OTPToken(
                    flags: OTPToken.Flags(rawValue: token.flags),
                    vendor: token.vendor.map { String(cString: $0) },
                    challenge: token.challenge.map { String(cString: $0) },
                    length: token.length >= 0 ? Int(token.length) : nil,
                    format: token.format >= 0 ? OTPToken.Format(rawValue: token.format) : nil,
                    tokenID: token.token_id.map { String(cString: $0) },
                    algorithmID: token.alg_id.map { String(cString: $0) }))
            }
        }
        self.init(service: raw.service.map { String(cString: $0) }, tokens: tokens)
    }
}

extension PKINITIdentity {
    static func list(_ identities: UnsafeMutablePointer<UnsafeMutablePointer<krb5_responder_pkinit_identity>?>?) -> [PKINITIdentity] {
        guard let identities else { return [] }
        var result: [PKINITIdentity] = []
        var index = 0
        while let identity = identities[index] {
            index += 1
            result.append(PKINITIdentity(
                identity: identity.pointee.identity.map { String(cString: $0) } ?? "",
                flags: Flags(rawValue: identity.pointee.token_flags)))
        }
        return result
    }
}

/// Responder entry point with krb5's exact signature (`krb5_responder_fn`); state arrives in `data`.
func responderTrampoline(_ context: krb5_context?, _ data: UnsafeMutableRawPointer?, _ rctx: krb5_responder_context?) -> krb5_error_code {
    guard let data, let rctx else { return 0 }
    return Unmanaged<CallbackState>.fromOpaque(data).takeUnretainedValue().respond(rctx)
}
