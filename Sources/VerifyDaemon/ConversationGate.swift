import KerberosSecrets
import LoginProtocol
import LoginService
import NIOCore

/// The gate's side of one JSON-lines conversation: the policy's whole order for each message the client sends, in one
/// place. ``ConversationHandler`` decodes frames, forwards each message here, keeps the timers and writes what comes out.
///
/// For each message, in order:
/// 1. the peer (``connected(peer:)``, at the connection's start): `allowed_uids` / `allowed_gids`;
/// 2. the protocol: a login first and once, answers only for the round awaited, nothing while the login runs;
/// 3. admission of the login (``LoginGate/admit(name:clientAddress:)``): the name's checks;
/// 4. the throttles and the step (``LoginGate/step(_:_:on:_:)``), counted in flight and accounted for even when the
///    client has gone;
/// 5. parking at questions (``LoginGate/park()``): a place reserved, or the conversation ends when the daemon is full;
/// 6. the end (``LoginGate/answer(_:_:on:floor:started:_:)``): logged and counted once, a failure sent no sooner than
///    the failure floor after the last exchange with the KDC began.
///
/// Used on its channel's event loop only; `send` runs there too.
final class ConversationGate {
    private enum Phase {
        case awaitingLogin
        case running
        /// Parked at a question; the round awaited is the conversation's (``LoginConversation/awaitedRound``).
        case awaitingAnswers
        case finished
    }

    private let gate: LoginGate
    private let loop: any EventLoop
    /// Writes one message to the client: info lines and questions keep the conversation open, a result ends it.
    private let send: (ServerMessage) -> Void
    private var phase = Phase.awaitingLogin
    private var conversation: LoginConversation?
    /// The login as the gate admitted it (canonical principal), once the login line arrived.
    private var login: LoginGate.Login?
    /// Where the result goes: logged under the canonical principal once admitted, timed from the login line.
    private var request = LoginGate.Request(listener: .conversation, principal: "-", peer: nil, arrived: .now())
    /// When the last exchange with the KDC began: the failure floor counts from here, so a person's thinking time
    /// between rounds never uses up the floor that hides how fast the KDC said no.
    private var roundStarted = NIODeadline.now()
    /// The client changes an expired password elsewhere (``LoginRequest/ExpiredPassword/report``).
    private var reportsExpiredPassword = false
    private var isParked = false

    init(gate: LoginGate, loop: any EventLoop, send: @escaping (ServerMessage) -> Void) {
        self.gate = gate
        self.loop = loop
        self.send = send
    }

    /// Whether the conversation waits for the client's login line (the idle timeout applies).
    var awaitsLogin: Bool { if case .awaitingLogin = phase { true } else { false } }
    /// Whether the conversation waits for answers (only the round timeout applies, unless a line is half sent).
    var awaitsAnswers: Bool { if case .awaitingAnswers = phase { true } else { false } }
    /// Whether the result was sent or is on its way (or the client left).
    var isFinished: Bool { if case .finished = phase { true } else { false } }

    /// The connection's peer, as `SO_PEERCRED` read it (nil: unreadable): one outside the allow-lists ends the conversation.
    func connected(peer: PeerCredentials?) {
        request.peer = peer
        if !gate.admitPeer(peer, listener: .conversation) {
            finish(.failed(.invalidRequest, "peer not allowed"))
        }
    }

    /// One message from the client, or why its line could not be decoded.
    func received(_ message: Result<ClientMessage, ProtocolError>) {
        if case .finished = phase { return }
        switch (phase, message) {
        case (_, .failure(let error)):
            finish(.failed(.invalidRequest, error.reason))
        case (.awaitingLogin, .success(.login(let loginRequest))):
            begin(loginRequest)
        case (.awaitingAnswers, .success(.answers(let id, let answers))):
            guard let conversation else { return }
            // The conversation keeps the round: answers for any other one are refused there.
            let awaited = conversation.awaitedRound
            do { try conversation.answer(answers, round: id) } catch {
                finish(.failed(.invalidRequest, "answers for round \(id), but round \(awaited.map(String.init) ?? "none") is awaited"))
                return
            }
            unpark()
            guard !answers.isEmpty else {
                finish(.failed(.badCredentials, "the questions were declined", principal: conversation.principal))
                return
            }
            step()
        case (.running, .success):
            finish(.failed(.invalidRequest, "a message arrived while the login was running; wait for questions or the result"))
        case (_, .success(.login)):
            finish(.failed(.invalidRequest, "one login per connection"))
        case (_, .success(.answers(let id, _))):
            finish(.failed(.invalidRequest, "answers for round \(id), but no questions are open"))
        }
    }

    /// One of the handler's timers ran out (`reason` says which): the conversation ends with `timeout`.
    func timedOut(_ reason: String) {
        finish(.failed(.timeout, reason, principal: conversation?.principal))
    }

    /// The client went away: the parking place is given back; a login on the workers is still accounted and logged.
    func clientLeft() {
        unpark()
        conversation = nil
        phase = .finished
    }

    /// The login line: the name's checks, then the first step.
    private func begin(_ loginRequest: LoginRequest) {
        request.principal = loginRequest.principal
        request.arrived = .now()
        roundStarted = request.arrived
        reportsExpiredPassword = loginRequest.expired == .report && loginRequest.purpose == .login
        // The remote host (PAM_RHOST) is the client address the throttle keys on, as saslauthd's fifth field is.
        switch gate.admit(name: loginRequest.principal, clientAddress: loginRequest.clientAddress) {
        case .success(let admitted):
            login = admitted
            request.principal = admitted.principal
            conversation = LoginConversation(principal: admitted.principal, password: loginRequest.password, service: loginRequest.service,
                                             changesPassword: loginRequest.purpose == .changePassword,
                                             wantsCredentials: loginRequest.wantsCredentials)
            step()
        case .failure(let refusal):
            finish(refusal.result, floor: refusal.delay)
        }
    }

    /// Runs one replay of the exchange on the login service's threads, if the throttles let it through.
    ///
    /// The gate accounts for its outcome (throttle, in flight) even when the client has gone or broke the protocol
    /// meanwhile: a guess must count whether or not anyone waits for its answer.
    private func step() {
        guard let conversation, let login else { return }
        phase = .running
        roundStarted = .now()
        let request = self.request
        let this = NIOLoopBound(self, eventLoop: loop)
        gate.step(login, conversation, on: loop) { [gate] outcome in
            switch outcome {
            case .failure(let refusal):
                this.value.finish(refusal.result, floor: refusal.delay)
            case .success(let step):
                // When nobody is left to answer, the outcome is still logged.
                if !this.value.stepped(step), case .finished(let result, _) = step {
                    gate.log(result, request)
                }
            }
        }
    }

    /// Delivers a step's outcome; false when the conversation already ended (the client left or broke the protocol).
    private func stepped(_ step: LoginStep) -> Bool {
        guard case .running = phase else { return false }
        switch step {
        case .finished(let result, let info):
            for message in info { send(.info(message)) }
            finish(result)
        case .questions(_, let questions, _) where reportsExpiredPassword && questions.contains(where: \.isNewPassword):
            // The questions come only once a kadmin/changepw ticket proved the old password.
            finish(.failed(.passwordExpired, "The password has expired; change it", principal: conversation?.principal))
        case .questions(let id, let questions, let info):
            guard gate.park() else {
                finish(.failed(.internal, "too many conversations waiting for answers"))
                return true
            }
            isParked = true
            phase = .awaitingAnswers
            for message in info { send(.info(message)) }
            send(.questions(id: id, questions))
        }
        return true
    }

    /// Sends the result (failures no sooner than the floor, or `floor` when a refusal sets a longer one), logged once.
    /// Throttle accounting happens where KDC exchanges end, not here.
    private func finish(_ result: LoginResult, floor: Duration? = nil) {
        if case .finished = phase { return }
        phase = .finished
        unpark()
        var request = self.request
        request.principal = conversation?.principal ?? result.principal ?? "-"
        conversation = nil
        let send = NIOLoopBound(self.send, eventLoop: loop)
        gate.answer(result, request, on: loop, floor: floor, started: roundStarted) { send.value(.result(result)) }
    }

    private func unpark() {
        if isParked {
            isParked = false
            gate.unpark()
        }
    }
}

extension LoginQuestion {
    /// A question for a new password, which krb5 asks only once the old one is proven.
    var isNewPassword: Bool {
        switch self {
        case .newPassword, .newPasswordAgain: true
        default: false
        }
    }
}
