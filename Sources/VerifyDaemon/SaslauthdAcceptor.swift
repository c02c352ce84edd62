import KerberosSecrets
import Logging
import LoginProtocol
import NIOCore
import NIOPosix
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// The saslauthd socket, answered without an event loop in the common case, as saslauthd's own processes answer it.
///
/// A few threads wait in `accept(2)`. Each takes a connection, reads its peer (`SO_PEERCRED`) and, without
/// waiting, its request: a client writes the request right after connecting, so it is nearly always all there.
/// A whole request goes to the ``LoginGate`` at once, and its answer is one `send` and one `close` on whichever
/// thread has it: this one for a cached result or a refusal, the engine's when the KDC answered, the event loop's
/// after a delay. A connection whose request is not all there yet (a slow client, four fields and a pause, one
/// that sends nothing) is handed to NIO with what was read, and ``SaslauthdHandler`` goes on with its timeouts.
///
/// An event loop costs a connection more than its answer does when the result is cached: epoll registrations,
/// address lookups, timers and a channel per connection held krb5-verifyd's cached logins to half of saslauthd -c
/// (docs/daemon.md, "The saslauthd socket").
final class SaslauthdAcceptor: Sendable {
    typealias State = Locked<DaemonStateMachine<CheckedContinuation<Void, Never>>>

    private let listener: SystemPackage.FileDescriptor
    private let gate: LoginGate
    private let timeouts: ListenerTimeouts
    private let group: any EventLoopGroup
    private let state: State
    private let metrics: DaemonMetrics
    private let logger: Logger
    private let maxConnections: Int
    /// The accept threads still running, and whether ``stop()`` was called; the last thread out closes the socket.
    private let threads = Locked((running: 0, stopping: false))

    /// Takes over `listener`, a bound and listening socket; nothing is accepted until ``start(threads:)``.
    init(listener: SystemPackage.FileDescriptor, gate: LoginGate, timeouts: ListenerTimeouts, group: any EventLoopGroup, state: State, metrics: DaemonMetrics,
         logger: Logger, maxConnections: Int) {
        self.listener = listener
        self.gate = gate
        self.timeouts = timeouts
        self.group = group
        self.state = state
        self.metrics = metrics
        self.logger = logger
        self.maxConnections = maxConnections
    }

    /// A UNIX stream socket bound at `path` and listening, close-on-exec. (swift-system has no sockets: the
    /// socket calls here and below are Glibc's, on the descriptor's raw value.)
    static func listen(at path: String) throws(ConfigurationError) -> SystemPackage.FileDescriptor {
        let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard raw >= 0 else { throw ConfigurationError("cannot make a socket for \(path): \(Errno(rawValue: errno))") }
        let descriptor = SystemPackage.FileDescriptor(rawValue: raw)
        guard let address = UnixSocketAddress(path: path) else {
            try? descriptor.close()
            throw ConfigurationError("socket path too long: \(path)")
        }
        let bound = address.withSockaddr { bind(raw, $0, $1) }
        guard bound == 0, Glibc.listen(raw, 1024) == 0 else {
            let error = Errno(rawValue: errno)
            try? descriptor.close()
            throw ConfigurationError("cannot listen on \(path): \(error)")
        }
        return descriptor
    }

    /// Starts `count` accept threads.
    func start(threads count: Int) {
        threads.withLock { $0.running += count }
        for index in 0..<count {
            WorkerThread.start(name: "sasl-accept-\(index)") { [self] in acceptLoop() }
        }
    }

    /// Stops accepting: the threads waiting in `accept(2)` return (`shutdown(2)` wakes them), and the last one
    /// closes the socket. Connections already taken are answered as usual.
    func stop() {
        threads.withLock { $0.stopping = true }
        shutdown(listener.rawValue, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while true {
            let raw = accept(listener.rawValue, nil, nil)
            if raw >= 0 {
                // accept4(2) with SOCK_CLOEXEC needs _GNU_SOURCE, which Glibc's module does not import.
                _ = fcntl(raw, F_SETFD, FD_CLOEXEC)
                serve(SystemPackage.FileDescriptor(rawValue: raw), peer: PeerCredentials.of(descriptor: raw))
                continue
            }
            let error = Errno(rawValue: errno)
            if threads.withLock({ $0.stopping }) { break }
            switch error {
            case .interrupted, .connectionAbort, .wouldBlock:
                continue
            default:
                // Out of descriptors or memory: wait a little rather than spin; connections queue in the backlog.
                logger.warning("accept failed on the saslauthd socket", metadata: ["error": .string("\(error)")])
                usleep(50_000)
            }
        }
        let last = threads.withLock { threads in
            threads.running -= 1
            return threads.running == 0
        }
        if last { try? listener.close() }
    }

    /// One accepted connection whose peer is `peer` (nil: `SO_PEERCRED` unreadable): counted in, its peer
    /// admitted, its request read without waiting and answered, or handed to NIO when it is not all there.
    func serve(_ descriptor: SystemPackage.FileDescriptor, peer: PeerCredentials?) {
        guard state.withLock({ $0.connectionAccepted() }) else {
            logger.warning("connection refused: limit of \(maxConnections) reached or shutting down")
            try? descriptor.close()
            return
        }
        metrics.connections.increment()
        let connection = AcceptedConnection(descriptor: descriptor, state: state, metrics: metrics)
        guard gate.admitPeer(peer, listener: .sasl) else { return connection.reply(.no("not allowed")) }

        // The largest request is five fields of the decoder's limit; one byte more shows a client sending too much.
        var buffer = [UInt8](repeating: 0, count: 5 * (2 + 256) + 1)
        defer { buffer.withUnsafeMutableBytes { Secret.wipe($0) } }
        // recv(2) with MSG_DONTWAIT: swift-system's read has no flags, and the socket stays blocking for NIO to set.
        let count = buffer.withUnsafeMutableBytes { recv(descriptor.rawValue, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if count == 0 || (count < 0 && Errno(rawValue: errno) != .wouldBlock) {
            return connection.close()  // the client left, or the connection failed, before sending anything
        }
        if count > 0 {
            var decoder = SaslauthdDecoder()
            do {
                try buffer.withUnsafeBytes { try decoder.feed(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
                if case .request(let request) = try decoder.progress() {
                    gate.verifyPassword(request, peer: peer, on: group.next(), anyThread: true) { result in
                        connection.reply(result.ok ? .ok : .no(SaslauthdHandler.reason(result)))
                    }
                    return
                }
            } catch {
                gate.invalidRequest(error, peer: peer)
                return connection.reply(.no("invalid request"))
            }
        }
        handOver(connection, peer: peer, prefetched: Secret(copying: buffer.prefix(max(count, 0))))
    }

    /// Gives the connection to NIO, with its admitted peer and the bytes read so far.
    private func handOver(_ connection: AcceptedConnection, peer: PeerCredentials?, prefetched: Secret) {
        let (gate, timeouts, state, metrics, logger) = (gate, timeouts, state, metrics, logger)
        ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(SaslauthdHandler(gate: gate, timeouts: timeouts, admitted: peer, prefetched: prefetched))
                }
            }
            .withConnectedSocket(connection.descriptor.rawValue)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    state.withLock { $0.acceptedConnectionHandedOver(channel) }
                    channel.closeFuture.whenComplete { _ in
                        state.withLock { $0.connectionClosed(channel) }
                        metrics.connections.decrement()
                    }
                case .failure(let error):
                    // NIO closes a channel it could not set up; if it could not make one at all (O_NONBLOCK refused),
                    // the descriptor stays open rather than risk closing one reused since.
                    logger.warning("a saslauthd connection could not be handed to the event loop", metadata: ["error": .string("\(error)")])
                    state.withLock { $0.acceptedConnectionClosed() }
                    metrics.connections.decrement()
                }
            }
    }
}

/// A connection taken by `accept(2)` and answered with plain system calls: one reply, then closed and counted out.
private struct AcceptedConnection: Sendable {
    let descriptor: SystemPackage.FileDescriptor
    let state: SaslauthdAcceptor.State
    let metrics: DaemonMetrics

    /// Sends `reply` and closes: send(2) without waiting (a few bytes to a client waiting for them) and with
    /// `MSG_NOSIGNAL` (the client may have left; a write would raise SIGPIPE).
    func reply(_ reply: SaslauthdReply) {
        let bytes = reply.encoded
        _ = bytes.withUnsafeBytes { send(descriptor.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        close()
    }

    func close() {
        try? descriptor.close()
        state.withLock { $0.acceptedConnectionClosed() }
        metrics.connections.decrement()
    }
}
