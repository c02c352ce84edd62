import KerberosSecrets
internal import CKrb5
package import NIOCore
internal import NIOPosix

/// A KDC's reply and which KDC sent it.
struct KDCReply: Sendable {
    var bytes: [UInt8]
    var kdc: KDCAddress
}

/// How the engine reaches KDCs: non-blocking UDP and TCP on SwiftNIO event loops, with failover, hedging and
/// a memory of KDCs that stopped answering.
///
/// The rules of one message are ``KDCSendStateMachine``'s, a value with no sockets and no clock; a send operation on
/// one event loop carries out its actions (sockets, `Scheduled` timers) and feeds it the events with the time. The
/// memory of unresponsive KDCs is ``KDCHealth``, under this transport's lock, shared by every send of the client.
///
/// No thread waits: sockets live on the event loop, timers are event-loop tasks.
final class KDCTransport: Sendable {
    /// The delays of failover; see `docs/engine.md` for how they were chosen.
    struct Configuration: Sendable {
        /// How long to wait for a KDC's reply before also asking the next KDC.
        var hedgeDelay: TimeAmount = .milliseconds(250)
        /// How long a KDC that left a request unanswered is tried last.
        var unresponsiveMemory: TimeAmount = .seconds(30)
        /// How long a KDC may leave a message with pre-authentication unanswered before the next KDC gets it: long
        /// enough that a KDC which is only slow (a PDC, an LDAP back end) has answered, so no wrong password is
        /// counted twice where KDCs share their lockout counters; short enough to leave a hung KDC within the login
        /// (``KerberosClient`` makes it at most half the login timeout). Its silence is remembered after `hedgeDelay`.
        var countedFailover: TimeAmount = .seconds(3)
        /// The first interval between UDP retransmissions once every KDC was tried; doubles each time.
        var retransmitInterval: TimeAmount = .seconds(1)
        /// The largest reply accepted over TCP.
        var maxReplySize = 1 << 20

        /// The delays of one send's state machine.
        var timing: KDCSendStateMachine.Timing {
            .init(hedgeDelay: hedgeDelay, countedFailover: countedFailover, retransmitInterval: retransmitInterval)
        }
    }

    let group: any EventLoopGroup
    let configuration: Configuration
    private let health: Locked<KDCHealth>
    /// Connected UDP sockets kept for the next message (``DatagramPool``).
    let datagrams = DatagramPool()

    init(group: any EventLoopGroup, configuration: Configuration) {
        self.group = group
        self.configuration = configuration
        health = Locked(KDCHealth(memory: configuration.unresponsiveMemory))
    }

    /// Closes the UDP sockets kept for later messages (``KerberosClient/shutdown()``; a group the client owns
    /// closes them anyway).
    func closeIdleSockets() {
        for channel in datagrams.drain() { channel.close(promise: nil) }
    }

    /// The realm's KDCs in the order to try them now (``KDCHealth/order(_:primaryOnly:now:)``).
    func order(_ targets: [KDCTarget], primaryOnly: Bool) -> [KDCTarget] {
        let now = NIODeadline.now()
        return health.withLock { $0.order(targets, primaryOnly: primaryOnly, now: now) }
    }

    /// Whether the KDC with health-memory key `key` is currently tried last.
    func isMarkedUnresponsive(_ key: String) -> Bool {
        let now = NIODeadline.now()
        return health.withLock { $0.isUnresponsive(key, now: now) }
    }

    func markUnresponsive(_ key: String) {
        let now = NIODeadline.now()
        health.withLock { $0.markUnresponsive(key, now: now) }
    }

    func markResponsive(_ key: String) {
        health.withLock { $0.markResponsive(key) }
    }

    /// The errno of `error` when it is this process's or this host's shortage, not the KDC's: out of descriptors
    /// (`EMFILE`, `ENFILE`), buffers (`ENOBUFS`) or memory (`ENOMEM`). Such a failure never marks a KDC unresponsive.
    static func localShortage(_ error: any Error) -> Int32? {
        guard let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode) else { return nil }
        return error.errnoCode
    }

    /// Sends `messages[i]` to `targets[i]` (a kpasswd request differs per server: it carries this host's address on
    /// the route to that server) and resumes `resumer` with the first reply of `kind`, or with `KRB5_KDC_UNREACH`
    /// once every target refused. The caller's deadline and cancellation finish `resumer` too, which closes every
    /// socket of the send.
    func send(_ messages: [[UInt8]], to targets: [KDCTarget], kind: ReplyKind, udpPreferenceLimit: Int, tcpOnly: Bool, delivery: Delivery,
              realm: String, resumer: Resumer<KDCReply>) {
        let machine = KDCSendStateMachine(targets: targets, messageLengths: messages.map(\.count), kind: kind, udpPreferenceLimit: udpPreferenceLimit,
                                          tcpOnly: tcpOnly, delivery: delivery, realm: realm, timing: configuration.timing)
        let operation = SendOperation(transport: self, loop: group.next(), machine: machine, messages: messages, resumer: resumer)
        resumer.onFinish { operation.loop.execute { operation.close() } }
        if operation.loop.inEventLoop { operation.start() } else { operation.loop.execute { operation.start() } }
    }
}

/// What a reply must look like to be taken, and how its protocol frames it over TCP. Each protocol makes its own:
/// ``kdc`` (KDCMessage.swift), ``passwordChange`` (PasswordChange.swift), ``dns(_:)`` (DNSReplyKind.swift); the
/// transport knows none of them.
struct ReplyKind: Sendable {
    /// What a datagram or frame is to the send.
    enum Verdict: Equatable, Sendable {
        /// The answer: the send ends with it.
        case reply
        /// Not a reply to this message (another protocol's, another question's): dropped.
        case ignored
        /// Over UDP, the answer does not fit a datagram (Kerberos RESPONSE_TOO_BIG, DNS's TC bit): the same server is
        /// asked again over TCP.
        case tooBigForDatagram
        /// The server has no answer (DNS SERVFAIL, REFUSED): the next server is asked.
        case noAnswer
    }

    /// The bytes of the big-endian length before each message over TCP: 4 or 2.
    let lengthPrefix: Int
    /// The verdict on bytes received over UDP (true) or TCP (false).
    let classify: @Sendable (_ bytes: [UInt8], _ overUDP: Bool) -> Verdict

    init(lengthPrefix: Int, classify: @escaping @Sendable (_ bytes: [UInt8], _ overUDP: Bool) -> Verdict) {
        precondition(lengthPrefix == 4 || lengthPrefix == 2, "a 4- or 2-byte length")
        self.lengthPrefix = lengthPrefix
        self.classify = classify
    }
}

/// One resolved KDC address.
struct KDCTarget: Sendable {
    var kdc: KDCAddress
    var address: SocketAddress
    /// The health-memory key: the configured `host:port`, plus the address when a name has several.
    var key: String
}

/// Connected UDP sockets to KDCs, per event loop and address, kept for the next message once one request and its one
/// reply have passed through them: such a socket has nothing in flight, so the next reply it reads is the next
/// request's. A socket that sent a message more than once (a retransmission), read anything but the one answer, or
/// was closed before its answer is closed instead. A datagram or error on a kept socket closes it.
///
/// A kept socket saves a message the socket, connect, registration and close (and NIO a channel and its receive
/// buffer): about a tenth of the daemon's CPU per login (docs/engine.md, "Sockets").
final class DatagramPool: @unchecked Sendable {
    /// The most sockets kept per event loop and address; one more is closed.
    static let maxIdlePerAddress = 32

    struct Key: Hashable {
        let loop: ObjectIdentifier
        let address: SocketAddress
    }

    /// A kept socket and its handler (touched only on the socket's loop, hence `@unchecked Sendable`).
    fileprivate struct Kept: @unchecked Sendable {
        let channel: any Channel
        let handler: DatagramReplyHandler
    }

    private let idle = Locked<[Key: [Kept]]>([:])

    /// How many sockets are kept now.
    var count: Int { idle.withLock { $0.values.reduce(0) { $0 + $1.count } } }

    /// How many sockets to `address` are kept now, on every loop.
    func kept(to address: SocketAddress) -> Int {
        idle.withLock { $0.filter { $0.key.address == address }.values.reduce(0) { $0 + $1.count } }
    }

    fileprivate func lease(_ key: Key) -> Kept? {
        idle.withLock { $0[key]?.popLast() }
    }

    /// Keeps `kept` for `key`; false when the address has its most already (the caller closes the socket).
    fileprivate func keep(_ kept: Kept, for key: Key) -> Bool {
        idle.withLock { idle in
            guard idle[key, default: []].count < Self.maxIdlePerAddress else { return false }
            idle[key, default: []].append(kept)
            return true
        }
    }

    /// Forgets a kept socket that read a stray datagram or an error (its handler closes it).
    fileprivate func forget(_ channel: any Channel, for key: Key) {
        idle.withLock { $0[key]?.removeAll { $0.channel === channel } }
    }

    /// Empties the pool; the caller closes what it returns.
    func drain() -> [any Channel] {
        idle.withLock { idle in
            defer { idle.removeAll() }
            return idle.values.flatMap { $0.map(\.channel) }
        }
    }
}

/// Carries out one send's ``KDCSendStateMachine``: opens the sockets, writes, arms its timers as `Scheduled` tasks,
/// and feeds the machine what happens, with the time. Everything runs on `loop`, hence `@unchecked Sendable`.
private final class SendOperation: @unchecked Sendable {
    let transport: KDCTransport
    let loop: any EventLoop
    /// The message for each target.
    let messages: [[UInt8]]
    let resumer: Resumer<KDCReply>

    private var machine: KDCSendStateMachine
    private var channels: [Int: [(KDCSendStateMachine.Transport, any Channel)]] = [:]
    private var timers: [KDCSendStateMachine.Timer: Scheduled<Void>] = [:]
    /// Each UDP socket's use in this send, by channel: what decides whether ``DatagramPool`` keeps it.
    private var datagramUses: [ObjectIdentifier: DatagramUse] = [:]

    private struct DatagramUse {
        let handler: DatagramReplyHandler
        var writes = 0
        var datagrams = 0
        var answered = false
        /// One message, its one reply, and that reply the answer: nothing is left in flight.
        var isClean: Bool { writes == 1 && datagrams == 1 && answered }
    }

    init(transport: KDCTransport, loop: any EventLoop, machine: KDCSendStateMachine, messages: [[UInt8]], resumer: Resumer<KDCReply>) {
        self.transport = transport
        self.loop = loop
        self.machine = machine
        self.messages = messages
        self.resumer = resumer
    }

    func start() {
        run(machine.start(now: .now()))
    }

    /// Called on the loop once the send is finished for any reason (reply, deadline, cancellation).
    func close() {
        run(machine.close(now: .now()))
    }

    func received(_ bytes: [UInt8], from index: Int, over transport: KDCSendStateMachine.Transport, channel: any Channel) {
        let actions = machine.received(bytes, from: index, over: transport, now: .now())
        if transport == .udp, var use = datagramUses[ObjectIdentifier(channel)] {
            use.datagrams += 1
            use.answered = use.answered || actions.contains { if case .answer(index, _) = $0 { true } else { false } }
            datagramUses[ObjectIdentifier(channel)] = use
        }
        run(actions)
    }

    func failed(_ index: Int, over transport: KDCSendStateMachine.Transport, error: (any Error)?) {
        run(machine.failed(index, over: transport, localShortage: error.flatMap(KDCTransport.localShortage), now: .now()))
    }

    private func run(_ actions: [KDCSendStateMachine.Action]) {
        for action in actions {
            switch action {
            case .open(let index, let over):
                open(index, over: over)
            case .write(let index, let over):
                for (kind, channel) in channels[index] ?? [] where kind == over { write(channel, index: index, over: over) }
            case .close(let index, let over):
                let closing = (channels[index] ?? []).filter { over == nil || $0.0 == over }
                channels[index] = (channels[index] ?? []).filter { over != nil && $0.0 != over }
                for (_, channel) in closing { release(channel) }
            case .arm(let timer, let deadline):
                timers[timer]?.cancel()
                timers[timer] = loop.scheduleTask(deadline: deadline) { [self] in
                    timers[timer] = nil
                    run(machine.timerFired(timer, now: .now()))
                }
            case .cancel(let timer):
                timers.removeValue(forKey: timer)?.cancel()
            case .markUnresponsive(let key):
                transport.markUnresponsive(key)
            case .markResponsive(let key):
                transport.markResponsive(key)
            case .answer(let index, let bytes):
                resumer.resume(.success(KDCReply(bytes: bytes, kdc: machine.targets[index].kdc)))
            case .fail(let error):
                resumer.resume(.failure(error))
            }
        }
    }

    private func open(_ index: Int, over: KDCSendStateMachine.Transport) {
        let address = machine.targets[index].address
        switch over {
        case .tcp:
            let maxReply = transport.configuration.maxReplySize
            let lengthPrefix = machine.kind.lengthPrefix
            ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KDCFrameDecoder(maxLength: maxReply, lengthPrefix: lengthPrefix)))
                        try channel.pipeline.syncOperations.addHandler(StreamReplyHandler(operation: self, index: index))
                    }
                }
                .connect(to: address)
                .whenComplete { [self] result in connected(result, index: index, over: .tcp) }
        case .udp:
            let key = DatagramPool.Key(loop: ObjectIdentifier(loop), address: address)
            if let kept = transport.datagrams.lease(key) {
                kept.handler.operation = self
                kept.handler.index = index
                datagramUses[ObjectIdentifier(kept.channel)] = DatagramUse(handler: kept.handler)
                // Reported as a fresh socket would be: after the actions now being carried out.
                loop.execute { [self] in connected(.success(kept.channel), index: index, over: .udp) }
                return
            }
            let handler = DatagramReplyHandler(operation: self, index: index, pool: transport.datagrams, key: key)
            DatagramBootstrap(group: loop)
                // NIO reads 2,048 bytes a datagram by default; a PKINIT reply is larger, and a UDP reply is never over 64 KiB.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
                }
                .connect(to: address)
                .whenComplete { [self] result in
                    if case .success(let channel) = result { datagramUses[ObjectIdentifier(channel)] = DatagramUse(handler: handler) }
                    connected(result, index: index, over: .udp)
                }
        }
    }

    /// Ends this send's use of a socket: a UDP socket whose use was clean goes back to the pool, any other is closed.
    private func release(_ channel: any Channel) {
        guard let use = datagramUses.removeValue(forKey: ObjectIdentifier(channel)), use.isClean else { return channel.close(promise: nil) }
        use.handler.operation = nil
        if !transport.datagrams.keep(.init(channel: channel, handler: use.handler), for: use.handler.key) { channel.close(promise: nil) }
    }

    /// A connection (or a connected datagram socket) to target `index` is ready, or could not be made.
    private func connected(_ result: Result<any Channel, any Error>, index: Int, over: KDCSendStateMachine.Transport) {
        switch result {
        case .success(let channel):
            channels[index, default: []].append((over, channel))
            run(machine.connected(index, over: over))
        case .failure(let error):
            failed(index, over: over, error: error)
        }
    }

    private func write(_ channel: any Channel, index: Int, over: KDCSendStateMachine.Transport) {
        let message = messages[index]
        var buffer = channel.allocator.buffer(capacity: message.count + 4)
        let written: EventLoopFuture<Void>
        switch over {
        case .udp:
            datagramUses[ObjectIdentifier(channel)]?.writes += 1
            buffer.writeBytes(message)
            written = channel.writeAndFlush(AddressedEnvelope(remoteAddress: machine.targets[index].address, data: buffer))
        case .tcp:
            if machine.kind.lengthPrefix == 2 { buffer.writeInteger(UInt16(message.count)) } else { buffer.writeInteger(UInt32(message.count)) }
            buffer.writeBytes(message)
            written = channel.writeAndFlush(buffer)
        }
        written.whenFailure { [self] in failed(index, over: over, error: $0) }
    }
}

/// Delivers a target's datagrams, and its errors (ICMP port unreachable), to the operation that has the socket; on a
/// socket kept in the pool (no operation), either closes it. Touched only on the socket's loop, hence `@unchecked Sendable`.
private final class DatagramReplyHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    var operation: SendOperation?
    var index: Int
    let pool: DatagramPool
    let key: DatagramPool.Key

    init(operation: SendOperation, index: Int, pool: DatagramPool, key: DatagramPool.Key) {
        self.operation = operation
        self.index = index
        self.pool = pool
        self.key = key
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        guard let operation else { return discard(context) }
        operation.received(envelope.data.readBytes(length: envelope.data.readableBytes) ?? [], from: index, over: .udp, channel: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let operation else { return discard(context) }
        operation.failed(index, over: .udp, error: error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A kept socket closed from outside (its event loop shutting down) leaves the pool.
        if operation == nil { pool.forget(context.channel, for: key) }
        context.fireChannelInactive()
    }

    /// A kept socket heard something: it is not clean any more.
    private func discard(_ context: ChannelHandlerContext) {
        pool.forget(context.channel, for: key)
        context.close(promise: nil)
    }
}

/// Delivers a target's TCP frames to the operation; a connection that ends or fails before a reply fails the target.
private final class StreamReplyHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let operation: SendOperation
    let index: Int
    private var answered = false

    init(operation: SendOperation, index: Int) {
        self.operation = operation
        self.index = index
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        answered = true
        operation.received(buffer.readBytes(length: buffer.readableBytes) ?? [], from: index, over: .tcp, channel: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        operation.failed(index, over: .tcp, error: error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !answered { operation.failed(index, over: .tcp, error: nil) }
        context.fireChannelInactive()
    }
}

/// RFC 4120 section 7.2.2 TCP framing: a 4-byte big-endian length, then the message; or DNS's over TCP (RFC 1035
/// section 4.2.2), with a 2-byte length.
package struct KDCFrameDecoder: ByteToMessageDecoder {
    package typealias InboundOut = ByteBuffer
    let maxLength: Int
    /// 4 (Kerberos) or 2 (DNS).
    let lengthPrefix: Int

    package init(maxLength: Int, lengthPrefix: Int = 4) {
        precondition(lengthPrefix == 4 || lengthPrefix == 2, "a 4- or 2-byte length")
        self.maxLength = maxLength
        self.lengthPrefix = lengthPrefix
    }

    package struct FrameTooLong: Error {}

    package mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let length: Int
        if lengthPrefix == 2 {
            guard let value = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return .needMoreData }
            length = Int(value)
        } else {
            guard let value = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
            // The high bit is reserved (RFC 5021); a KDC never sets it in a reply.
            guard value & 0x8000_0000 == 0 else { throw FrameTooLong() }
            length = Int(value)
        }
        guard length <= maxLength else { throw FrameTooLong() }
        guard buffer.readableBytes >= lengthPrefix + length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: lengthPrefix)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: length)!))
        return .continue
    }
}
