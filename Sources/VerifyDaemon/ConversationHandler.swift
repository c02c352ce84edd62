import KerberosSecrets
import LoginProtocol
import NIOCore

/// One JSON-lines conversation's bytes: frames lines, decodes each into a message for its ``ConversationGate``, keeps
/// the timers, and writes what the gate sends back (info lines, questions, the result, after which it closes).
///
/// Between rounds the conversation is parked: no krb5 thread is held, only the answers so far. Each round has a
/// timeout; anything malformed ends the conversation with an `invalid-request` result.
final class ConversationHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let gate: LoginGate
    private let timeouts: ListenerTimeouts
    private var framer = LineFramer(maximumLength: 64 * 1024)
    /// The policy of this conversation, made once the channel (and so its event loop) is active.
    private var conversation: ConversationGate?
    /// The read timeout until the login line arrived, then each round's.
    private var timer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    /// The client's own deadline for the whole conversation (``LoginRequest/timeout``), when it gave one.
    private var deadlineTimer: Scheduled<Void>?

    init(gate: LoginGate, timeouts: ListenerTimeouts) {
        self.gate = gate
        self.timeouts = timeouts
    }

    func channelActive(context: ChannelHandlerContext) {
        let write = context.onLoop(self) { (handler: ConversationHandler, context: ChannelHandlerContext, message: ServerMessage) in
            handler.write(message, context: context)
        }
        conversation = gate.conversation(on: context.eventLoop, send: write)
        PeerCredentials.of(context.channel).whenSuccess(context.onLoop(self) { handler, context, peer in
            handler.conversation?.connected(peer: peer)
        })
        arm(timeouts.read, "no login request within the read timeout", context: context)
        armIdleTimer(context: context)
        context.fireChannelActive()
    }

    /// While the daemon waits for the login line, or for the rest of a line already begun, silence longer
    /// than `idle_timeout` ends the conversation. A person thinking about a question is timed by the
    /// round timeout instead, and a login on the workers by nothing the client does.
    private func armIdleTimer(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        guard let conversation, conversation.awaitsLogin || (conversation.awaitsAnswers && framer.hasPartialLine) else { return }
        idleTimer = context.schedule(in: timeouts.idle, self) { handler, _ in
            handler.conversation?.timedOut("nothing arrived within the idle timeout")
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        let lines = buffer.withUnsafeReadableBytes { framer.feed($0) }
        buffer.moveReaderIndex(to: 0)
        buffer.withUnsafeMutableReadableBytes { Secret.wipe($0) }
        for line in lines {
            guard let conversation, !conversation.isFinished else { return }
            switch line {
            case .tooLong: conversation.received(.failure(ProtocolError("line longer than 64 KiB")))
            case .line(let bytes): forward(bytes, to: conversation, context: context)
            }
        }
        armIdleTimer(context: context)
    }

    /// Decodes one line and hands the message to the gate; the read or round timer ends once the gate is no longer
    /// waiting for the client.
    private func forward(_ line: Secret, to conversation: ConversationGate, context: ChannelHandlerContext) {
        let message = line.withUnsafeBytes { bytes in Result { () throws(ProtocolError) in try ClientMessage.decode(bytes) } }
        if deadlineTimer == nil, conversation.awaitsLogin, case .success(.login(let request)) = message, let timeout = request.timeout {
            deadlineTimer = context.schedule(in: timeout, self) { handler, _ in
                handler.conversation?.timedOut("the client's deadline passed")
            }
        }
        conversation.received(message)
        if conversation.isFinished {
            cancelTimers()
        } else if !conversation.awaitsAnswers {
            timer?.cancel()
        }
    }

    /// Writes what the gate sends: questions start the round's timer, a result ends the connection.
    private func write(_ message: ServerMessage, context: ChannelHandlerContext) {
        switch message {
        case .info: break
        case .questions: arm(timeouts.round, "no answers within the round timeout", context: context)
        case .result: cancelTimers()
        }
        guard context.channel.isActive else { return }
        var line = message.encodedLine
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: line)), promise: nil)
        line.withUnsafeMutableBytes { Secret.wipe($0) }  // a result may carry credentials
        if case .result = message { context.close(promise: nil) }
    }

    private func arm(_ timeout: Duration, _ reason: String, context: ChannelHandlerContext) {
        timer?.cancel()
        timer = context.schedule(in: timeout, self) { handler, _ in
            handler.conversation?.timedOut(reason)
        }
    }

    private func cancelTimers() {
        timer?.cancel()
        idleTimer?.cancel()
        deadlineTimer?.cancel()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cancelTimers()
        conversation?.clientLeft()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
