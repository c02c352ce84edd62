public import KerberosSecrets
public import LoginProtocol

/// One step of a conversation: either questions for the person, or the end.
public enum LoginStep: Sendable {
    /// Questions of round `id`; answer them with ``LoginConversation/answer(_:round:)`` and step again.
    case questions(id: Int, [LoginQuestion], info: [String])
    /// The login ended.
    case finished(LoginResult, info: [String])
}

/// A login that may need several rounds of questions (OTP, PINs, a new password).
///
/// Between rounds nothing runs and no thread is held: every step replays the exchange from the start
/// with all answers so far (SSSD's approach), so a person can take as long as the round timeout allows.
/// Answers are kept in ``Secret``s and dropped with the conversation.
public final class LoginConversation: Sendable {
    /// The principal as requested.
    public let principal: String
    /// The service the client named (logged, not used by krb5).
    public let service: String?
    /// Whether the conversation changes the password (through kpasswd) rather than only logging in.
    public let changesPassword: Bool
    /// Whether a successful result carries the credentials (``LoginResult/credentials``).
    public let wantsCredentials: Bool

    private struct State {
        var answers: LoginAnswers
        var round = 0
        var awaiting: [LoginQuestion] = []
    }
    private let state: Locked<State>

    /// A conversation for `principal`, starting with `password` when the client sent one and the
    /// `service` it names (for logs).
    /// `changesPassword` makes it a password change, `wantsCredentials` returns the credentials with the result.
    public init(principal: String, password: Secret?, service: String? = nil, changesPassword: Bool = false, wantsCredentials: Bool = false) {
        self.principal = principal
        self.service = service
        self.changesPassword = changesPassword
        self.wantsCredentials = wantsCredentials
        self.state = Locked(State(answers: LoginAnswers(password: password)))
    }

    /// The round whose answers are awaited, or nil when none is.
    public var awaitedRound: Int? {
        state.withLock { $0.awaiting.isEmpty ? nil : $0.round }
    }

    /// Records the answers to round `round`; throws when that round is not the one awaited.
    public func answer(_ answers: LoginAnswers, round: Int) throws(LoginConversationError) {
        try state.withLock { state throws(LoginConversationError) in
            guard !state.awaiting.isEmpty, round == state.round else { throw .unexpectedRound(round) }
            state.answers.merge(answers)
            state.awaiting = []
        }
    }

    var answers: LoginAnswers { state.withLock { $0.answers } }

    /// The password given so far (up front or in an answer), if any.
    public var password: Secret? { answers.password }

    /// The answers given so far (for a relay that forwards them, such as `krb5-login --daemon`).
    public var initialAnswers: LoginAnswers { answers }

    /// Moves to a new round awaiting `questions`; returns its id.
    func await(_ questions: [LoginQuestion]) -> Int {
        state.withLock { state in
            state.round += 1
            state.awaiting = questions
            return state.round
        }
    }
}

/// Misuse of a conversation by the client.
public enum LoginConversationError: Error, Equatable, CustomStringConvertible {
    /// Answers named a round that is not awaited.
    case unexpectedRound(Int)

    /// The error in words, for the client.
    public var description: String {
        switch self {
        case .unexpectedRound(let id): "answers for round \(id), which is not awaited"
        }
    }
}
