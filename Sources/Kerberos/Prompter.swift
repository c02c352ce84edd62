public import KerberosSecrets
import CKrb5

/// One prompt krb5 wants answered.
public struct Prompt: Sendable, Hashable {
    /// What krb5's prompt type says the prompt is for (`krb5_get_prompt_types`).
    public enum Kind: Sendable, Hashable {
        /// The user's password (`KRB5_PROMPT_TYPE_PASSWORD`).
        case password
        /// A new password after expiry (`KRB5_PROMPT_TYPE_NEW_PASSWORD`).
        case newPassword
        /// The new password again (`KRB5_PROMPT_TYPE_NEW_PASSWORD_AGAIN`).
        case newPasswordAgain
        /// A pre-authentication value: a PKINIT pass phrase or PIN, an OTP (`KRB5_PROMPT_TYPE_PREAUTH`).
        case preauth
        /// Not typed by krb5.
        case other
    }

    /// The text krb5 shows, such as `Password for alice@EXAMPLE.ORG`.
    public var text: String
    /// Whether the reply should not be echoed.
    public var hidden: Bool
    /// What the prompt is for.
    public var kind: Kind

    /// A prompt with its text, echo setting and kind (for tests and other front ends).
    public init(text: String, hidden: Bool, kind: Kind) {
        self.text = text
        self.hidden = hidden
        self.kind = kind
    }
}

/// The prompts of one prompter call, with the name and banner krb5 shows above them.
public struct PromptRound: Sendable, Hashable {
    /// The name krb5 shows above the prompts (such as the mechanism).
    public var name: String?
    /// A banner such as "Password expired.  You must change it now."
    public var banner: String?
    /// The prompts, each to be answered in order.
    public var prompts: [Prompt]

    /// A round of `prompts` under `name` and `banner`.
    public init(name: String?, banner: String?, prompts: [Prompt]) {
        self.name = name
        self.banner = banner
        self.prompts = prompts
    }
}

/// Answers krb5's prompts: a Swift closure in place of a `krb5_prompter_fct`.
///
/// The closure returns one reply per prompt, in order, or throws to cancel the login; the thrown error
/// reaches the caller of the krb5 call unchanged.
public struct Prompter {
    enum Body {
        case sync((PromptRound) throws -> [Secret])
        case async(@Sendable (PromptRound) async throws -> [Secret])
    }
    let body: Body

    /// A prompter that answers on the calling thread.
    public init(_ body: @escaping (PromptRound) throws -> [Secret]) {
        self.body = .sync(body)
    }

    /// A prompter that may suspend (for example to ask a remote user). The krb5 call's thread waits for it.
    public init(async body: @escaping @Sendable (PromptRound) async throws -> [Secret]) {
        self.body = .async(body)
    }

    func answer(_ round: PromptRound) throws -> [Secret] {
        switch body {
        case .sync(let body): try body(round)
        case .async(let body): try waitForAsync { try await body(round) }
        }
    }

    /// Prompts on the controlling terminal (`/dev/tty`), with echo off for hidden prompts.
    /// Throws ``KerberosError/Reason/cancelled`` when there is no terminal or input ends.
    public static var terminal: Prompter {
        Prompter { round in try Terminal.ask(round) }
    }
}

extension CallbackState {
    /// The prompter call: builds the typed round, asks the Swift prompter, copies the replies into krb5's buffers.
    func prompt(name: UnsafePointer<CChar>?, banner: UnsafePointer<CChar>?, count: Int32, prompts: UnsafeMutablePointer<krb5_prompt>?) -> krb5_error_code {
        guard let prompter else { return krb5_error_code(KRB5_LIBOS_CANTREADPWD) }
        let types = krb5_get_prompt_types(context.raw)
        let round = PromptRound(
            name: name.map { String(cString: $0) },
            banner: banner.map { String(cString: $0) },
            prompts: (0..<Int(count)).map { index in
                let prompt = prompts![index]
                let kind: Prompt.Kind
                switch types.map({ Int32($0[index]) }) {
                case Int32(KRB5_PROMPT_TYPE_PASSWORD)?: kind = .password
                case Int32(KRB5_PROMPT_TYPE_NEW_PASSWORD)?: kind = .newPassword
                case Int32(KRB5_PROMPT_TYPE_NEW_PASSWORD_AGAIN)?: kind = .newPasswordAgain
                case Int32(KRB5_PROMPT_TYPE_PREAUTH)?: kind = .preauth
                default: kind = .other
                }
                return Prompt(text: prompt.prompt.map { String(cString: $0) } ?? "", hidden: prompt.hidden != 0, kind: kind)
            })
        do {
            let replies = try prompter.answer(round)
            guard replies.count == Int(count) else {
                return fail(KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "The prompter gave \(replies.count) replies to \(count) prompts", reason: .invalidRequest))
            }
            for (index, reply) in replies.enumerated() {
                let target = prompts![index].reply!
                // krb5 compares some replies with strcmp (the new password and its confirmation), so the
                // reply is NUL-terminated inside krb5's buffer as its own prompter does.
                guard reply.count < Int(target.pointee.length), !reply.containsNUL else {
                    return fail(KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "Reply \(index + 1) is too long or contains a NUL byte", reason: .invalidRequest))
                }
                reply.withUnsafeBytes { bytes in
                    if let base = bytes.baseAddress { target.pointee.data.update(from: base.assumingMemoryBound(to: CChar.self), count: bytes.count) }
                }
                target.pointee.data[reply.count] = 0
                target.pointee.length = UInt32(reply.count)
            }
            return 0
        } catch {
            return fail(error)
        }
    }
}

/// Prompter entry point with krb5's exact signature (`krb5_prompter_fct`); state arrives in `data`.
func prompterTrampoline(_ context: krb5_context?, _ data: UnsafeMutableRawPointer?, _ name: UnsafePointer<CChar>?, _ banner: UnsafePointer<CChar>?,
                        _ count: Int32, _ prompts: UnsafeMutablePointer<krb5_prompt>?) -> krb5_error_code {
    guard let data else { return krb5_error_code(KRB5_LIBOS_CANTREADPWD) }
    return Unmanaged<CallbackState>.fromOpaque(data).takeUnretainedValue()
        .prompt(name: name, banner: banner, count: count, prompts: prompts)
}
