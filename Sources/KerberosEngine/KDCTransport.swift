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
/// For each message:
/// - the realm's KDCs are tried in the configured order, except that a KDC which recently left a request
///   unanswered is moved to the end (it is still tried, so it is probed again, and after
///   ``Configuration/unresponsiveMemory`` it regains its place);
/// - a message goes over UDP, or TCP when it is longer than `udp_preference_limit` or the KDC is TCP-only;
///   a UDP reply of `KRB_ERR_RESPONSE_TOO_BIG` makes the same request go again over TCP to that KDC;
/// - when no reply has come ``Configuration/hedgeDelay`` after the last send, the message also goes to the next
///   KDC, and the first reply from any of them wins; a KDC that refuses (ICMP port unreachable, TCP RST) is
///   passed over at once. Only messages a KDC does not count are hedged (``Delivery``): one carrying
///   pre-authentication goes to the next KDC only after ``Configuration/countedFailover`` of silence, and one
///   carrying a one-time value only when a KDC refuses it;
/// - after every KDC was tried, UDP requests are sent again at growing intervals, until the caller's deadline.
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
    }

    let group: any EventLoopGroup
    let configuration: Configuration
    /// Until when each KDC (by `host:port`) is tried last.
    private let unresponsive = Locked<[String: NIODeadline]>([:])

    init(group: any EventLoopGroup, configuration: Configuration) {
        self.group = group
        self.configuration = configuration
    }

    /// The realm's KDCs in the order to try them now: the responsive ones in configured order, then those
    /// marked unresponsive (oldest mark first). With `primaryOnly`, only primaries.
    func order(_ targets: [KDCTarget], primaryOnly: Bool) -> [KDCTarget] {
        let now = NIODeadline.now()
        let marks = unresponsive.withLock { $0 }
        let candidates = primaryOnly ? targets.filter(\.kdc.isPrimary) : targets
        let healthy = candidates.filter { (marks[$0.key] ?? .distantPast) <= now }
        let suspect = candidates.filter { (marks[$0.key] ?? .distantPast) > now }.sorted { marks[$0.key]! < marks[$1.key]! }
        return healthy + suspect
    }

    /// Whether `kdc` is currently tried last.
    func isMarkedUnresponsive(_ key: String) -> Bool {
        unresponsive.withLock { ($0[key] ?? .distantPast) > .now() }
    }

    func markUnresponsive(_ key: String) {
        let until = NIODeadline.now() + configuration.unresponsiveMemory
        unresponsive.withLock { $0[key] = until }
    }

    func markResponsive(_ key: String) {
        unresponsive.withLock { $0[key] = nil }
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
        precondition(messages.count == targets.count, "one message per target")
        let loop = group.next()
        let operation = SendOperation(transport: self, loop: loop, messages: messages, kind: kind, targets: targets,
                                      udpPreferenceLimit: udpPreferenceLimit, tcpOnly: tcpOnly, delivery: delivery, realm: realm, resumer: resumer)
        resumer.onFinish { loop.execute { operation.close() } }
        loop.execute { operation.attempt() }
    }
}

/// What a reply must look like to be taken; anything else a server sends is ignored.
enum ReplyKind: Sendable {
    /// An AS-REP, a TGS-REP or a KRB-ERROR.
    case kdc
    /// A kpasswd reply (RFC 3244 section 2): framed with its length and a version of 1 or 0xff80, or an unframed KRB-ERROR.
    case passwordChange
    /// A name server's response to the question (``DNSServiceRecords/isResponse(_:to:)``).
    case dns(DNSServiceRecords.Question)

    func accepts(_ bytes: [UInt8]) -> Bool {
        switch self {
        case .kdc:
            return KDCMessage.looksLikeReply(bytes)
        case .passwordChange:
            if bytes.first == 0x7E { return true }
            guard bytes.count >= 6, Int(bytes[0]) << 8 | Int(bytes[1]) == bytes.count else { return false }
            let version = Int(bytes[2]) << 8 | Int(bytes[3])
            return version == 1 || version == 0xFF80
        case .dns(let question):
            return DNSServiceRecords.isResponse(bytes, to: question)
        }
    }

    /// The bytes of the length before each message over TCP: 4 for Kerberos (RFC 4120 section 7.2.2), 2 for DNS
    /// (RFC 1035 section 4.2.2).
    var lengthPrefix: Int {
        if case .dns = self { 2 } else { 4 }
    }

    /// Whether a UDP reply may be `KRB_ERR_RESPONSE_TOO_BIG` (a Kerberos server's, not a name server's).
    var speaksKerberos: Bool {
        if case .dns = self { false } else { true }
    }
}

/// One resolved KDC address.
struct KDCTarget: Sendable {
    var kdc: KDCAddress
    var address: SocketAddress
    /// The health-memory key: the configured `host:port`, plus the address when a name has several.
    var key: String
}

/// One message being sent to a realm's KDCs. All state is touched on `loop` only, hence `@unchecked Sendable`.
private final class SendOperation: @unchecked Sendable {
    let transport: KDCTransport
    let loop: any EventLoop
    /// The message for each target.
    let messages: [[UInt8]]
    let kind: ReplyKind
    let targets: [KDCTarget]
    let udpPreferenceLimit: Int
    let tcpOnly: Bool
    let delivery: Delivery
    let realm: String
    let resumer: Resumer<KDCReply>

    private var next = 0
    private var channels: [Int: [any Channel]] = [:]
    private var sentAt: [Int: NIODeadline] = [:]
    private var failed: Set<Int> = []
    /// The errno of the last failure that was this process's own (out of descriptors, buffers or memory), not
    /// the KDC's: such a KDC is not marked unresponsive, and the send ends as a local failure.
    private var localFailure: Int32?
    private var udpTargets: Set<Int> = []
    private var triedTCP: Set<Int> = []
    /// UDP-only targets (`udp/` in krb5.conf) that answered RESPONSE_TOO_BIG.
    private var tooBigForUDP: Set<Int> = []
    private var hedgeTimer: Scheduled<Void>?
    /// Timers that remember a KDC's silence before the message fails over (counted messages).
    private var silenceTimers: [Scheduled<Void>] = []
    private var retransmitTimer: Scheduled<Void>?
    private var retransmitInterval: TimeAmount
    private var closed = false

    init(transport: KDCTransport, loop: any EventLoop, messages: [[UInt8]], kind: ReplyKind, targets: [KDCTarget], udpPreferenceLimit: Int,
         tcpOnly: Bool, delivery: Delivery, realm: String, resumer: Resumer<KDCReply>) {
        self.transport = transport
        self.loop = loop
        self.messages = messages
        self.kind = kind
        self.targets = targets
        self.udpPreferenceLimit = udpPreferenceLimit
        self.tcpOnly = tcpOnly
        self.delivery = delivery
        self.realm = realm
        self.resumer = resumer
        self.retransmitInterval = transport.configuration.retransmitInterval
    }

    /// How long a KDC may stay silent before the next one gets the message; nil for a one-time value, which goes to
    /// the next KDC only on a refusal.
    private var failoverDelay: TimeAmount? {
        switch delivery {
        case .hedged: transport.configuration.hedgeDelay
        case .counted: transport.configuration.countedFailover
        case .oneTime: nil
        }
    }

    /// How long a KDC may stay silent before its silence is remembered (it is tried last by later messages, which
    /// then go to a KDC that answers, while this one still waits for it); nil for a one-time value, whose wait may be a
    /// person approving a push and is never held against a KDC.
    private var silenceRemembered: TimeAmount? {
        delivery == .oneTime ? nil : transport.configuration.hedgeDelay
    }

    /// Sends to the next KDC and arms the hedge timer; after the last one, arms retransmission.
    func attempt() {
        guard !closed else { return }
        hedgeTimer?.cancel()
        hedgeTimer = nil
        guard next < targets.count else {
            if failed.count == targets.count { finishUnreachable() } else { scheduleRetransmit() }
            return
        }
        let index = next
        next += 1
        send(to: index, forceTCP: false)
        if let delay = failoverDelay {
            hedgeTimer = loop.scheduleTask(in: delay) { [self] in attempt() }
        }
        if let remembered = silenceRemembered, remembered < (failoverDelay ?? .nanoseconds(.max)) {
            // A counted message waits longer for its KDC than later messages should: they avoid it meanwhile.
            silenceTimers.append(loop.scheduleTask(in: remembered) { [self] in
                guard !closed, !failed.contains(index) else { return }
                transport.markUnresponsive(targets[index].key)
            })
        }
    }

    private func scheduleRetransmit() {
        guard retransmitTimer == nil, !udpTargets.isEmpty else { return }
        retransmitTimer = loop.scheduleTask(in: retransmitInterval) { [self] in
            retransmitTimer = nil
            guard !closed else { return }
            for index in udpTargets.sorted() where !failed.contains(index) {
                for channel in channels[index] ?? [] { write(channel, index: index, udp: true) }
            }
            retransmitInterval = retransmitInterval * 2
            scheduleRetransmit()
        }
    }

    private func useTCP(_ index: Int, forceTCP: Bool) -> Bool {
        switch targets[index].kdc.transport {
        case .tcp: return true
        case .udp: return false
        case .any: return forceTCP || tcpOnly || messages[index].count > udpPreferenceLimit
        }
    }

    private func send(to index: Int, forceTCP: Bool) {
        let target = targets[index]
        sentAt[index] = sentAt[index] ?? .now()
        if useTCP(index, forceTCP: forceTCP) {
            udpTargets.remove(index)
            triedTCP.insert(index)
            let maxReply = transport.configuration.maxReplySize
            ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KDCFrameDecoder(maxLength: maxReply, lengthPrefix: kind.lengthPrefix)))
                        try channel.pipeline.syncOperations.addHandler(StreamReplyHandler(operation: self, index: index))
                    }
                }
                .connect(to: target.address)
                .whenComplete { [self] result in connected(result, index: index, udp: false) }
        } else {
            udpTargets.insert(index)
            DatagramBootstrap(group: loop)
                // NIO reads 2,048 bytes a datagram by default; a PKINIT reply is larger, and a UDP reply is never over 64 KiB.
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 65_536))
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DatagramReplyHandler(operation: self, index: index))
                    }
                }
                .connect(to: target.address)
                .whenComplete { [self] result in connected(result, index: index, udp: true) }
        }
    }

    /// A connection (or a connected datagram socket) to target `index` is ready, or could not be made.
    private func connected(_ result: Result<any Channel, any Error>, index: Int, udp: Bool) {
        switch result {
        case .success(let channel):
            guard !closed else { channel.close(promise: nil); return }
            channels[index, default: []].append(channel)
            write(channel, index: index, udp: udp)
        case .failure(let error):
            failedTarget(index, error: error)
        }
    }

    private func write(_ channel: any Channel, index: Int, udp: Bool) {
        let message = messages[index]
        var buffer = channel.allocator.buffer(capacity: message.count + 4)
        if udp {
            buffer.writeBytes(message)
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: targets[index].address, data: buffer)).whenFailure { [self] in failedTarget(index, error: $0) }
        } else {
            if kind.lengthPrefix == 2 { buffer.writeInteger(UInt16(message.count)) } else { buffer.writeInteger(UInt32(message.count)) }
            buffer.writeBytes(message)
            channel.writeAndFlush(buffer).whenFailure { [self] in failedTarget(index, error: $0) }
        }
    }

    /// A datagram or a TCP frame from target `index`.
    func received(_ bytes: [UInt8], index: Int, udp: Bool) {
        guard !closed, kind.accepts(bytes) else { return }
        if udp, kind.speaksKerberos, KDCMessage.errorCode(bytes) == KDCMessage.responseTooBig {
            for channel in channels[index] ?? [] { channel.close(promise: nil) }
            channels[index] = nil
            guard targets[index].kdc.transport != .udp else {
                // Asking again over UDP would get the same answer until the deadline: this KDC cannot serve it.
                tooBigForUDP.insert(index)
                failedTarget(index)
                return
            }
            // MIT's rule: the reply does not fit a datagram, so ask the same KDC again over TCP.
            send(to: index, forceTCP: true)
            return
        }
        if case .dns = kind {
            if udp, DNSServiceRecords.isTruncated(bytes), targets[index].kdc.transport == .any {
                // The answer did not fit the datagram: ask the same name server over TCP (RFC 7766), as glibc does.
                for channel in channels[index] ?? [] { channel.close(promise: nil) }
                channels[index] = nil
                triedTCP.insert(index)
                send(to: index, forceTCP: true)
                return
            }
            if !DNSServiceRecords.isAnswer(bytes) {
                // SERVFAIL, REFUSED and the like: this server has no answer; the next one is asked.
                failedTarget(index, retryOverTCP: false)
                return
            }
        }
        transport.markResponsive(targets[index].key)
        resumer.resume(.success(KDCReply(bytes: bytes, kdc: targets[index].kdc)))
    }

    /// Target `index` refused, reset, or closed without a reply: pass over it at once (after trying TCP when UDP
    /// was refused and the KDC may speak either, as MIT's second pass does; not when `retryOverTCP` is false, for a
    /// name server that answered with an error). `error`, when it is this process's own shortage
    /// (``KDCTransport/localShortage(_:)``), says nothing about the KDC: it is not marked unresponsive.
    func failedTarget(_ index: Int, error: (any Error)? = nil, retryOverTCP: Bool = true) {
        guard !closed, !failed.contains(index) else { return }
        if let error, let code = KDCTransport.localShortage(error) { localFailure = code }
        if retryOverTCP, udpTargets.contains(index), targets[index].kdc.transport == .any, !triedTCP.contains(index) {
            triedTCP.insert(index)
            udpTargets.remove(index)
            for channel in channels[index] ?? [] { channel.close(promise: nil) }
            channels[index] = nil
            send(to: index, forceTCP: true)
            return
        }
        failed.insert(index)
        udpTargets.remove(index)
        for channel in channels[index] ?? [] { channel.close(promise: nil) }
        channels[index] = nil
        if !tooBigForUDP.contains(index) && error.flatMap(KDCTransport.localShortage) == nil { transport.markUnresponsive(targets[index].key) }
        if index == next - 1 {
            attempt()
        } else if next >= targets.count && failed.count == targets.count {
            finishUnreachable()
        }
    }

    private func finishUnreachable() {
        if let code = localFailure {
            // Not the KDCs' doing: the answer must not read kdc-unreachable, which counts against the client's address.
            let message = "No socket for a KDC of realm '\(realm)': this process is short of \(code == EMFILE || code == ENFILE ? "file descriptors" : "memory") (errno \(code))"
            resumer.resume(.failure(KerberosError(code: code, message: message, reason: .other)))
            return
        }
        if !tooBigForUDP.isEmpty {
            let kdcs = tooBigForUDP.sorted().map { targets[$0].kdc.description }.joined(separator: ", ")
            resumer.resume(.failure(KerberosError(code: Int32(KRB5KRB_ERR_RESPONSE_TOO_BIG),
                                                  message: "The reply of \(kdcs) (realm '\(realm)') does not fit a datagram, and krb5.conf allows it only UDP (udp/): allow TCP",
                                                  reason: .kdcUnreachable)))
            return
        }
        resumer.resume(.failure(KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "Cannot contact any KDC for realm '\(realm)'", reason: .kdcUnreachable)))
    }


    /// Called on the loop once the send is finished for any reason (reply, deadline, cancellation): closes the
    /// sockets and remembers the KDCs that left the message unanswered for longer than the hedge delay.
    func close() {
        guard !closed else { return }
        closed = true
        hedgeTimer?.cancel()
        retransmitTimer?.cancel()
        for timer in silenceTimers { timer.cancel() }
        let now = NIODeadline.now()
        for (index, sent) in sentAt where !failed.contains(index) && silenceRemembered.map({ now - sent >= $0 }) == true {
            if case .success(let reply)? = resumer.result, reply.kdc == targets[index].kdc { continue }
            transport.markUnresponsive(targets[index].key)
        }
        for channel in channels.values.joined() { channel.close(promise: nil) }
        channels.removeAll()
    }
}

/// Delivers a target's datagrams, and its errors (ICMP port unreachable), to the operation.
private final class DatagramReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let operation: SendOperation
    let index: Int

    init(operation: SendOperation, index: Int) {
        self.operation = operation
        self.index = index
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        operation.received(envelope.data.readBytes(length: envelope.data.readableBytes) ?? [], index: index, udp: true)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        operation.failedTarget(index, error: error)
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
        operation.received(buffer.readBytes(length: buffer.readableBytes) ?? [], index: index, udp: false)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        operation.failedTarget(index, error: error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !answered { operation.failedTarget(index) }
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
