import KerberosSecrets
import LoginProtocol
import NIOCore
import NIOEmbedded
import Testing
@testable import VerifyDaemon

/// The listeners' timers on an embedded channel, whose clock moves only when the test moves it: each bound is exact,
/// and no load on the machine can move it. Nothing here reaches a KDC (``OfflineDaemon``).
@Suite("krb5-verifyd: the listeners' timers on a virtual clock (unit)")
struct ListenerTimerTests {
    /// A connected channel with `handler`, as the listener sets it up (the peer cannot be read: nil).
    static func channel(_ handler: some ChannelHandler) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel(handler: handler)
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/nonexistent")).wait()
        return channel
    }

    static func timeouts(idle: Duration, read: Duration) -> ListenerTimeouts {
        var configuration = DaemonConfiguration()
        configuration.idleTimeout = idle
        configuration.readTimeout = read
        return ListenerTimeouts(configuration)
    }

    /// Everything written to the client so far.
    static func written(_ channel: EmbeddedChannel) throws -> [UInt8] {
        var bytes: [UInt8] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readBytes(length: buffer.readableBytes) ?? [] }
        return bytes
    }

    /// Moves the clock to 1 ms before `remaining` has passed (nothing written yet), then to it: the saslauthd timeout
    /// reply, and the connection closed.
    static func expectSaslTimeout(_ channel: EmbeddedChannel, in remaining: TimeAmount) throws {
        channel.embeddedEventLoop.advanceTime(by: remaining - .milliseconds(1))
        #expect(try written(channel).isEmpty, "nothing before the timer ran out")
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(try written(channel) == SaslauthdReply.no("timeout").encoded)
        #expect(!channel.isActive)
    }

    static func saslHandler(_ offline: OfflineDaemon, idle: Duration, read: Duration) -> SaslauthdHandler {
        SaslauthdHandler(gate: offline.daemon.gate, timeouts: timeouts(idle: idle, read: read), admitted: nil, prefetched: Secret(""))
    }

    @Test("saslauthd: a silent client is answered NO timeout when idle_timeout has passed, not a moment before, then closed")
    func saslSilent() async throws {
        let offline = try OfflineDaemon()
        do {  // The embedded channel lives and ends on this thread, before the await below (EmbeddedEventLoop is not thread-safe).
            let channel = try Self.channel(Self.saslHandler(offline, idle: .milliseconds(300), read: .milliseconds(1200)))
            try Self.expectSaslTimeout(channel, in: .milliseconds(300))
        }
        await offline.stop()
    }

    @Test("saslauthd: a byte every 150 ms never trips idle_timeout (300 ms); read_timeout ends the request at 1.2 s exactly")
    func saslTrickle() async throws {
        let offline = try OfflineDaemon()
        do {  // The embedded channel lives and ends on this thread, before the await below.
            let channel = try Self.channel(Self.saslHandler(offline, idle: .milliseconds(300), read: .milliseconds(1200)))
            try channel.writeInbound(ByteBuffer(bytes: [0, 200]))
            for _ in 0..<7 {
                channel.embeddedEventLoop.advanceTime(by: .milliseconds(150))
                try channel.writeInbound(ByteBuffer(bytes: [0x61]))
            }
            try Self.expectSaslTimeout(channel, in: .milliseconds(150))  // 1,200 ms since the connection
        }
        await offline.stop()
    }

    @Test("conversation: a login line trickled in is cut by read_timeout; a silent client by idle_timeout; each answered timeout after the failure floor")
    func conversationTimers() async throws {
        let offline = try OfflineDaemon { $0.failureFloor = .milliseconds(10) }
        for (trickles, elapsed, reason) in [(true, TimeAmount.milliseconds(1200), "no login request within the read timeout"),
                                            (false, .milliseconds(300), "nothing arrived within the idle timeout")] {
            let handler = ConversationHandler(gate: offline.daemon.gate, timeouts: Self.timeouts(idle: .milliseconds(300), read: .milliseconds(1200)))
            let channel = try Self.channel(handler)
            var now = TimeAmount.zero
            while now < elapsed - .milliseconds(1) {
                let step = min(.milliseconds(150), elapsed - .milliseconds(1) - now)
                channel.embeddedEventLoop.advanceTime(by: step)
                now = now + step
                if trickles { try channel.writeInbound(ByteBuffer(bytes: Array(#"{"#.utf8))) }
            }
            #expect(try Self.written(channel).isEmpty, "\(reason): nothing before the timer ran out")
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
            // The failure floor's wait is on this loop's clock, at most the floor (it counts from the channel's start).
            channel.embeddedEventLoop.advanceTime(by: .milliseconds(10))
            let line = try Self.written(channel)
            guard case .result(let result) = try ServerMessage.decode(Array(line.dropLast())) else {
                Issue.record("\(reason): not a result: \(String(decoding: line, as: UTF8.self))")
                continue
            }
            #expect(result.failure == .timeout && result.message == reason, "\(result)")
            #expect(!channel.isActive)
        }
        await offline.stop()
    }
}
