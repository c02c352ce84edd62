import Foundation
import KerberosSecrets
import LoginProtocol
import LoginService
import NIOCore

/// One saslauthd-protocol connection that ``SaslauthdAcceptor`` handed over (its peer admitted, its request not
/// all there yet): read the rest of the request (five fields, or four and a pause), verify the login, reply `OK`
/// or `NO reason`, close.
final class SaslauthdHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let gate: LoginGate
    private let timeouts: ListenerTimeouts
    private var decoder: SaslauthdDecoder
    private let peer: PeerCredentials?
    /// What the acceptor read before the channel existed, processed when it becomes active.
    private var prefetched: Secret?
    private var answered = false
    private var readTimeout: Scheduled<Void>?
    private var idleTimeout: Scheduled<Void>?
    private var fourFieldTimer: Scheduled<Void>?

    /// `peer` was admitted by the acceptor, and `prefetched` is what it read of the request.
    init(gate: LoginGate, timeouts: ListenerTimeouts, admitted peer: PeerCredentials?, prefetched: Secret) {
        self.gate = gate
        self.timeouts = timeouts
        self.decoder = SaslauthdDecoder()
        self.peer = peer
        self.prefetched = prefetched
    }

    func channelActive(context: ChannelHandlerContext) {
        readTimeout = context.schedule(in: timeouts.read, self) { handler, context in
            handler.reply(.no("timeout"), context: context)
        }
        armIdleTimeout(context: context)
        context.fireChannelActive()
        if let bytes = prefetched {
            prefetched = nil
            bytes.withUnsafeBytes { receive($0, context: context) }
        }
    }

    /// Closes a connection on which nothing arrives for `idle_timeout` (the whole request has `read_timeout`).
    private func armIdleTimeout(context: ChannelHandlerContext) {
        idleTimeout?.cancel()
        idleTimeout = context.schedule(in: timeouts.idle, self) { handler, context in
            handler.reply(.no("timeout"), context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        defer { wipe(&buffer) }
        // Straight from NIO's buffer into the decoder's wiped storage: no copy of the password lingers.
        buffer.withUnsafeReadableBytes { receive($0, context: context) }
    }

    /// Feeds the request's bytes to the decoder; verifies the request once it is whole.
    private func receive(_ bytes: UnsafeRawBufferPointer, context: ChannelHandlerContext) {
        guard !answered else { return }
        armIdleTimeout(context: context)
        do {
            try decoder.feed(bytes)
            fourFieldTimer?.cancel()
            fourFieldTimer = nil
            switch try decoder.progress() {
            case .needMore:
                break
            case .request(let request):
                verify(request, context: context)
            case .fourFields:
                fourFieldTimer = context.schedule(in: timeouts.fourFieldGrace, self) { handler, context in
                    handler.acceptFourFields(context: context)
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
        gate.invalidRequest(error, peer: peer)
        reply(.no("invalid request"), context: context)
    }

    private func verify(_ request: SaslauthdRequest, context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        readTimeout?.cancel()
        idleTimeout?.cancel()
        gate.verifyPassword(request, peer: peer, on: context.eventLoop, context.onLoop(self) { handler, context, result in
            handler.send(result.ok ? .ok : .no(Self.reason(result)), context: context)
        })
    }

    /// The saslauthd-style reply text for a failed login.
    static func reason(_ result: LoginResult) -> String {
        switch result.failure {
        case .badCredentials?, .unknownPrincipal?: "authentication failed"
        case let failure?: failure.rawValue.replacingOccurrences(of: "-", with: " ")
        case nil: ""
        }
    }

    /// Replies once and closes (also used for timeouts).
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
