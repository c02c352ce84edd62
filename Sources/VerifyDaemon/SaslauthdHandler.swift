import Kerberos
import LoginProtocol
import LoginService
import NIOCore

/// One saslauthd-protocol connection: read a request (five fields, or four and a pause), verify the
/// login, reply `OK` or `NO reason`, close.
final class SaslauthdHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let daemon: VerifyDaemon
    private var decoder: SaslauthdDecoder
    private var peer: PeerCredentials?
    private var answered = false
    private var readTimeout: Scheduled<Void>?
    private var idleTimeout: Scheduled<Void>?
    private var fourFieldTimer: Scheduled<Void>?

    init(daemon: VerifyDaemon) {
        self.daemon = daemon
        self.decoder = SaslauthdDecoder(maximumFieldLength: 256)
    }

    func channelActive(context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        let contextBox = NIOLoopBound(context, eventLoop: loop)
        let daemon = self.daemon
        PeerCredentials.of(context.channel).whenSuccess { peer in
            handler.value.peer = peer
            if !PeerCredentials.admits(peer, uids: daemon.configuration.allowedUIDs, gids: daemon.configuration.allowedGIDs) {
                daemon.logger.warning("saslauthd connection refused", metadata: ["peer": .string(peer?.description ?? "unknown (SO_PEERCRED unreadable)")])
                handler.value.reply(.no("not allowed"), context: contextBox.value)
            }
        }
        readTimeout = loop.scheduleTask(in: TimeAmount(daemon.configuration.readTimeout)) {
            handler.value.reply(.no("timeout"), context: contextBox.value)
        }
        armIdleTimeout(context: context)
        context.fireChannelActive()
    }

    /// Closes a connection on which nothing arrives for `idle_timeout` (the whole request has `read_timeout`).
    private func armIdleTimeout(context: ChannelHandlerContext) {
        idleTimeout?.cancel()
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBox = NIOLoopBound(context, eventLoop: context.eventLoop)
        idleTimeout = context.eventLoop.scheduleTask(in: TimeAmount(daemon.configuration.idleTimeout)) {
            handler.value.reply(.no("timeout"), context: contextBox.value)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        defer { wipe(&buffer) }
        guard !answered else { return }
        armIdleTimeout(context: context)
        do {
            // Straight from NIO's buffer into the decoder's wiped storage: no copy of the password lingers.
            try buffer.withUnsafeReadableBytes { bytes in try decoder.feed(bytes) }
            fourFieldTimer?.cancel()
            fourFieldTimer = nil
            switch try decoder.progress() {
            case .needMore:
                break
            case .request(let request):
                verify(request, context: context)
            case .fourFields:
                let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
                let contextBox = NIOLoopBound(context, eventLoop: context.eventLoop)
                fourFieldTimer = context.eventLoop.scheduleTask(in: TimeAmount(daemon.configuration.fourFieldGrace)) {
                    handler.value.acceptFourFields(context: contextBox.value)
                }
            }
        } catch {
            invalid(error, context: context)
        }
    }

    private func acceptFourFields(context: ChannelHandlerContext) {
        guard !answered else { return }
        do { verify(try decoder.fourFieldRequest(), context: context) } catch { invalid(error, context: context) }
    }

    private func invalid(_ error: any Error, context: ChannelHandlerContext) {
        daemon.logger.notice("invalid saslauthd request", metadata: ["reason": .string("\(error)"), "peer": .string(peer?.description ?? "-")])
        daemon.metrics.record(listener: "sasl", outcome: "invalid-request", latency: .zero)
        reply(.no("invalid request"), context: context)
    }

    private func verify(_ request: SaslauthdRequest, context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        readTimeout?.cancel()
        idleTimeout?.cancel()
        // The failure floor counts from the request's arrival: time spent connected before sending it
        // must not use the floor up and let the KDC's timing show.
        let started = NIODeadline.now()
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBox = NIOLoopBound(context, eventLoop: context.eventLoop)
        let daemon = self.daemon
        let peer = self.peer
        let finish: @Sendable (LoginResult, String, Duration?) -> Void = { result, principal, floor in
            daemon.log(listener: "sasl", principal: principal, peer: peer, result: result, started: started)
            daemon.afterFloor(result, started: started, floor: floor, on: contextBox.value.eventLoop) {
                handler.value.send(result.ok ? .ok : .no(VerifyDaemon.saslReason(result)), context: contextBox.value)
            }
        }
        let login: LoginGate.Login
        switch daemon.gate.admit(name: LoginService.principal(for: request), clientAddress: request.clientAddress) {
        case .success(let admitted): login = admitted
        case .failure(let refusal): return finish(refusal.result, LoginService.principal(for: request), refusal.delay)
        }
        let password = request.password
        if password.isEmpty {
            return finish(.failed(.badCredentials, "empty password", principal: login.principal), login.principal, nil)
        }
        let reservation: LoginGate.Reservation
        switch daemon.gate.reserve(login, password: password) {
        case .success(let granted): reservation = granted
        case .failure(let refusal): return finish(refusal.result, login.principal, refusal.delay)
        }
        daemon.loginStarted()
        let loop = context.eventLoop
        daemon.service.verifyPassword(principal: login.principal, password: password) { result in loop.execute {
            daemon.loginEnded()
            daemon.gate.release(login, reservation, result: result, password: password)
            finish(result, login.principal, nil)
        } }
    }

    /// Replies once and closes (also used for timeouts and refusals before any request).
    private func reply(_ reply: SaslauthdReply, context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        send(reply, context: context)
    }

    private func send(_ reply: SaslauthdReply, context: ChannelHandlerContext) {
        readTimeout?.cancel()
        idleTimeout?.cancel()
        fourFieldTimer?.cancel()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply.encoded))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        readTimeout?.cancel()
        idleTimeout?.cancel()
        fourFieldTimer?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func wipe(_ buffer: inout ByteBuffer) {
        buffer.moveReaderIndex(to: 0)
        buffer.withUnsafeMutableReadableBytes { Secret.wipe($0) }
    }
}
