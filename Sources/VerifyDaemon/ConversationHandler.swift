import Kerberos
import LoginProtocol
import LoginService
import NIOCore

/// One JSON-lines conversation: a login request, rounds of questions and answers, then the result.
///
/// Between rounds the conversation is parked: no krb5 thread is held, only the answers so far. Each
/// round has a timeout; anything malformed ends the conversation with an `invalid-request` result.
final class ConversationHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum Phase {
        case awaitingLogin
        case running
        /// Parked at a question; the round awaited is the conversation's (``LoginConversation/awaitedRound``).
        case awaitingAnswers
        case finished
    }

    private let gate: LoginGate
    private let timeouts: ListenerTimeouts
    private var framer = LineFramer(maximumLength: 64 * 1024)
    private var phase = Phase.awaitingLogin
    private var conversation: LoginConversation?
    /// The login as the gate admitted it (canonical principal), once the login line arrived.
    private var login: LoginGate.Login?
    /// Where the result goes: logged under the canonical principal once admitted, timed from the login line.
    private var request = LoginGate.Request(listener: .conversation, principal: "-", peer: nil, arrived: .now())
    /// When the last exchange with the KDC began: the failure floor counts from here, so a person's
    /// thinking time between rounds never uses up the floor that hides how fast the KDC said no.
    private var roundStarted = NIODeadline.now()
    private var timer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    /// The client's own deadline for the whole conversation (``LoginRequest/timeout``), when it gave one.
    private var deadlineTimer: Scheduled<Void>?
    /// The client changes an expired password elsewhere (``LoginRequest/ExpiredPassword/report``).
    private var reportsExpiredPassword = false
    private var isParked = false

    init(gate: LoginGate, timeouts: ListenerTimeouts) {
        self.gate = gate
        self.timeouts = timeouts
    }

    func channelActive(context: ChannelHandlerContext) {
        PeerCredentials.of(context.channel).whenSuccess(context.onLoop(self) { handler, context, peer in
            handler.request.peer = peer
            if !handler.gate.admitPeer(peer, listener: .conversation) {
                handler.finish(.failed(.invalidRequest, "peer not allowed"), context: context)
            }
        })
        arm(timeouts.read, context: context) { handler, context in
            handler.finish(.failed(.timeout, "no login request within the read timeout"), context: context)
        }
        armIdleTimer(context: context)
        context.fireChannelActive()
    }

    /// While the daemon waits for the login line, or for the rest of a line already begun, silence longer
    /// than `idle_timeout` ends the conversation. A person thinking about a question is timed by the
    /// round timeout instead, and a login on the workers by nothing the client does.
    private func armIdleTimer(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        switch phase {
        case .awaitingLogin: break
        case .awaitingAnswers where framer.hasPartialLine: break
        default: return
        }
        idleTimer = context.schedule(in: timeouts.idle, self) { handler, context in
            handler.finish(.failed(.timeout, "nothing arrived within the idle timeout"), context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        let lines = buffer.withUnsafeReadableBytes { framer.feed($0) }
        buffer.moveReaderIndex(to: 0)
        buffer.withUnsafeMutableReadableBytes { Secret.wipe($0) }
        for line in lines {
            guard case .finished = phase else {
                switch line {
                case .tooLong: finish(.failed(.invalidRequest, "line longer than 64 KiB"), context: context)
                case .line(let bytes): handle(bytes, context: context)
                }
                continue
            }
            return
        }
        armIdleTimer(context: context)
    }

    private func handle(_ line: Secret, context: ChannelHandlerContext) {
        let message = line.withUnsafeBytes { bytes in Result { () throws(ProtocolError) in try ClientMessage.decode(bytes) } }
        switch (phase, message) {
        case (_, .failure(let error)):
            finish(.failed(.invalidRequest, error.reason), context: context)
        case (.awaitingLogin, .success(.login(let loginRequest))):
            request.principal = loginRequest.principal
            request.arrived = .now()
            roundStarted = request.arrived
            if let timeout = loginRequest.timeout {
                deadlineTimer = context.schedule(in: timeout, self) { handler, context in
                    handler.unpark()
                    handler.finish(.failed(.timeout, "the client's deadline passed", principal: handler.conversation?.principal), context: context)
                }
            }
            reportsExpiredPassword = loginRequest.expired == .report && loginRequest.purpose == .login
            // The remote host (PAM_RHOST) is the client address the throttle keys on, as saslauthd's fifth field is.
            switch gate.admit(name: loginRequest.principal, clientAddress: loginRequest.clientAddress) {
            case .success(let admitted):
                login = admitted
                request.principal = admitted.principal
                conversation = LoginConversation(principal: admitted.principal, password: loginRequest.password, service: loginRequest.service,
                                                 changesPassword: loginRequest.purpose == .changePassword,
                                                 wantsCredentials: loginRequest.wantsCredentials)
                step(context: context)
            case .failure(let refusal):
                finish(refusal.result, floor: refusal.delay, context: context)
            }
        case (.awaitingAnswers, .success(.answers(let id, let answers))):
            guard let conversation else { return }
            // The conversation keeps the round: answers for any other one are refused there.
            let awaited = conversation.awaitedRound
            do { try conversation.answer(answers, round: id) } catch {
                finish(.failed(.invalidRequest, "answers for round \(id), but round \(awaited.map(String.init) ?? "none") is awaited"), context: context)
                return
            }
            unpark()
            guard !answers.isEmpty else {
                finish(.failed(.badCredentials, "the questions were declined", principal: conversation.principal), context: context)
                return
            }
            step(context: context)
        case (.running, .success):
            finish(.failed(.invalidRequest, "a message arrived while the login was running; wait for questions or the result"), context: context)
        case (_, .success(.login)):
            finish(.failed(.invalidRequest, "one login per connection"), context: context)
        case (_, .success(.answers(let id, _))):
            finish(.failed(.invalidRequest, "answers for round \(id), but no questions are open"), context: context)
        }
    }

    /// Runs one replay of the exchange on the login service's threads, if the gate lets it through.
    ///
    /// The gate accounts for its outcome (throttle, in flight) even when the client has gone or broke the
    /// protocol meanwhile: a guess must count whether or not anyone waits for its answer.
    private func step(context: ChannelHandlerContext) {
        guard let conversation, let login else { return }
        phase = .running
        roundStarted = .now()
        timer?.cancel()
        let request = self.request
        gate.step(login, conversation, on: context.eventLoop, context.onLoop(self) { handler, context, outcome in
            switch outcome {
            case .failure(let refusal):
                handler.finish(refusal.result, floor: refusal.delay, context: context)
            case .success(let step):
                // When nobody is left to answer, the outcome is still logged.
                if !handler.stepped(step, context: context), case .finished(let result, _) = step {
                    handler.gate.log(result, request)
                }
            }
        })
    }

    /// Delivers a step's outcome; false when the conversation already ended (the client left or broke the protocol).
    private func stepped(_ step: LoginStep, context: ChannelHandlerContext) -> Bool {
        guard case .running = phase, context.channel.isActive else { return false }
        switch step {
        case .finished(let result, let info):
            for message in info { write(.info(message), context: context) }
            finish(result, context: context)
        case .questions(_, let questions, _) where reportsExpiredPassword && questions.contains(where: \.isNewPassword):
            // The questions come only once a kadmin/changepw ticket proved the old password.
            finish(.failed(.passwordExpired, "The password has expired; change it", principal: conversation?.principal), context: context)
        case .questions(let id, let questions, let info):
            guard gate.park() else {
                finish(.failed(.internal, "too many conversations waiting for answers"), context: context)
                return true
            }
            isParked = true
            for message in info { write(.info(message), context: context) }
            write(.questions(id: id, questions), context: context)
            phase = .awaitingAnswers
            arm(timeouts.round, context: context) { handler, context in
                handler.unpark()
                handler.finish(.failed(.timeout, "no answers within the round timeout", principal: handler.conversation?.principal), context: context)
            }
        }
        return true
    }

    /// Sends the result (failures no sooner than the floor, or `floor` when a refusal sets a longer one),
    /// records it and closes. Throttle accounting happens where KDC exchanges end, not here.
    private func finish(_ result: LoginResult, floor: Duration? = nil, context: ChannelHandlerContext) {
        if case .finished = phase { return }
        phase = .finished
        timer?.cancel()
        idleTimer?.cancel()
        deadlineTimer?.cancel()
        unpark()
        var request = self.request
        request.principal = conversation?.principal ?? result.principal ?? "-"
        conversation = nil
        let reply = context.onLoop(self) { (handler: ConversationHandler, context: ChannelHandlerContext) in
            handler.write(.result(result), context: context)
            context.flush()
            context.close(promise: nil)
        }
        gate.answer(result, request, on: context.eventLoop, floor: floor, started: roundStarted, reply)
    }

    private func write(_ message: ServerMessage, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var line = message.encodedLine
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: line)), promise: nil)
        line.withUnsafeMutableBytes { Secret.wipe($0) }  // a result may carry credentials
    }

    private func arm(_ timeout: Duration, context: ChannelHandlerContext, _ fire: @escaping (ConversationHandler, ChannelHandlerContext) -> Void) {
        timer?.cancel()
        timer = context.schedule(in: timeout, self, fire)
    }

    private func unpark() {
        if isParked {
            isParked = false
            gate.unpark()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        idleTimer?.cancel()
        deadlineTimer?.cancel()
        unpark()
        conversation = nil
        phase = .finished
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
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
