public import Logging
public import LoginService
import Foundation
import KerberosSecrets
import LoginProtocol
import NIOCore
import NIOHTTP1
import NIOPosix
import SystemPackage
public import ServiceLifecycle

/// `krb5-verifyd`: verified Kerberos logins over a saslauthd-compatible socket and a JSON-lines
/// conversation socket.
///
/// The event loop only moves bytes; every krb5 call runs on ``LoginService``'s worker threads. A
/// conversation waiting for a person holds no thread, only its stored answers.
public final class VerifyDaemon: Service, Sendable {
    /// The configuration the daemon was created with.
    public let configuration: DaemonConfiguration
    let logger: Logger
    /// The login engine (its worker threads and the optional result cache).
    public let service: LoginService
    /// The policy in front of both listeners: peer and name checks, throttles, the exchanges, outcome
    /// accounting, the failure floor, logging.
    let gate: LoginGate
    let metrics = DaemonMetrics()
    /// `max_connections`, or fewer when the descriptor limit cannot serve that many (``DescriptorBudget``).
    public let maxConnections: Int
    private let group: MultiThreadedEventLoopGroup
    /// Listeners, connections, logins in flight, parked conversations and the shutdown, under one lock (shared
    /// with the gate).
    private let state: Locked<DaemonStateMachine<CheckedContinuation<Void, Never>>>
    /// The saslauthd socket's accept threads, once listening.
    private let acceptor = Locked<SaslauthdAcceptor?>(nil)

    /// Where the daemon listens once started.
    public struct Endpoints: Sendable {
        /// The saslauthd-compatible socket's path, if it listens on one.
        public var saslSocket: String?
        /// The conversation socket's path, if it listens on one.
        public var socket: String?
        /// The bound metrics address as `host:port` (the port is the real one when 0 was asked for).
        public var metrics: String?
        /// The HTTP auth endpoint's socket path, if it listens on one.
        public var httpSocket: String?
        /// The HTTP auth endpoint's bound loopback address as `host:port` (`[::1]:port` for IPv6), if it listens on TCP.
        public var http: String?
    }

    /// Validates `configuration` and starts the krb5 worker threads; nothing listens until ``start()`` or ``run()``.
    ///
    /// Throws ``ConfigurationError`` for a configuration that makes no sense, or the `KerberosError`
    /// of a krb5 configuration that cannot make a context.
    public convenience init(configuration: DaemonConfiguration, logger: Logger = Logger(label: "krb5-verifyd")) throws {
        try self.init(configuration: configuration, logger: logger, clock: { .now() })
    }

    /// A daemon whose throttles and password verifiers read `clock` (tests hold time still with it).
    init(configuration: DaemonConfiguration, logger: Logger, clock: @escaping @Sendable () -> NIODeadline) throws {
        try configuration.validate()
        self.configuration = configuration
        // Every field the daemon logs may carry what a client sent: control characters are escaped.
        let base = logger.handler
        var logger = Logger(label: logger.label) { _ in EscapingLogHandler(wrapping: base) }
        logger.logLevel = configuration.logLevel
        self.logger = logger
        self.service = try LoginService(configuration: configuration.login, threads: configuration.workers, resultCacheTTL: configuration.resultCacheTTL)
        let descriptors = ProcessResources.descriptorLimit
        self.maxConnections = DescriptorBudget.maxConnections(configured: configuration.maxConnections, limit: descriptors)
        if maxConnections < configuration.maxConnections {
            logger.warning("max_connections lowered to fit the descriptor limit", metadata: [
                "max_connections": .stringConvertible(maxConnections), "configured": .stringConvertible(configuration.maxConnections),
                "nofile": .stringConvertible(descriptors), "sockets_per_login": .stringConvertible(DescriptorBudget.socketsPerLogin),
            ])
        }
        self.state = Locked(DaemonStateMachine(maxConnections: maxConnections, maxParked: configuration.maxParkedConversations))
        self.gate = LoginGate(configuration: configuration, service: service, logger: logger, metrics: metrics, state: state, clock: clock)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Binds the sockets and the metrics endpoint.
    @discardableResult
    public func start() async throws -> Endpoints {
        var endpoints = Endpoints()
        if let path = configuration.saslSocket {
            try await listenSaslauthd(path)
            endpoints.saslSocket = path
        }
        if let path = configuration.socket {
            try await listen(path) { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(makeConversationHandler()) }
            }
            endpoints.socket = path
        }
        try await listenHTTP(&endpoints)
        if let address = configuration.metricsListen {
            let parts = address.split(separator: ":")
            guard parts.count == 2, let port = Int(parts[1]) else { throw ConfigurationError("metrics_listen must be host:port") }
            let metrics = self.metrics
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.pipeline.configureHTTPServerPipeline().flatMap { channel.pipeline.addHandler(MetricsHTTPHandler(metrics: metrics)) }
                }
                .bind(host: String(parts[0]), port: port).get()
            state.withLock { $0.listening(channel, path: nil) }
            endpoints.metrics = "\(parts[0]):\(channel.localAddress?.port ?? port)"
        }
        logger.info("krb5-verifyd listening", metadata: [
            "sasl_socket": .string(endpoints.saslSocket ?? "-"), "socket": .string(endpoints.socket ?? "-"),
            "metrics": .string(endpoints.metrics ?? "-"), "http_socket": .string(endpoints.httpSocket ?? "-"), "http": .string(endpoints.http ?? "-"),
            "workers": .stringConvertible(configuration.workers),
            "armor": .string(configuration.login.armor.rawValue), "verify": .stringConvertible(configuration.login.verify),
        ])
        if !configuration.login.verify {
            logger.warning("verification is OFF (insecure_skip_verification): a forged KDC reply would be accepted")
        }
        return endpoints
    }

    /// A conversation connection's handler: the gate and the timeouts are all it sees of the daemon.
    func makeConversationHandler() -> ConversationHandler {
        ConversationHandler(gate: gate, timeouts: ListenerTimeouts(configuration))
    }

    /// The HTTP auth endpoint (docs/web.md) on its UNIX socket, whose peers pass `allowed_uids` / `allowed_gids`, and on
    /// loopback TCP.
    private func listenHTTP(_ endpoints: inout Endpoints) async throws {
        guard configuration.httpSocket != nil || configuration.httpListen != nil else { return }
        let settings = HTTPAuthHandler.Settings(gate: gate, localNames: try LocalAccounts(configuration: configuration.login),
                                                trust: HTTPAuth.ProxyTrust(configuration), challenge: "Basic realm=\"\(configuration.httpRealm)\", charset=\"UTF-8\"",
                                                timeouts: ListenerTimeouts(configuration))
        if let path = configuration.httpSocket {
            try await listen(path) { [gate] channel in
                PeerCredentials.of(channel).flatMap { peer in
                    guard gate.admitPeer(peer, listener: .http) else { return channel.close() }
                    return HTTPAuthHandler.configure(channel, settings: settings, peer: .local(peer))
                }
            }
            endpoints.httpSocket = path
        }
        if let address = configuration.httpListen, let (host, port) = DaemonConfiguration.loopbackPort(address) {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { [self] channel in
                    guard admit(channel) else { return channel.close() }
                    return HTTPAuthHandler.configure(channel, settings: settings, peer: .tcp(channel.remoteAddress?.ipAddress ?? ""))
                }
                .bind(host: host, port: port).get()
            state.withLock { $0.listening(channel, path: nil) }
            let bound = channel.localAddress?.port ?? port
            endpoints.http = host.contains(":") ? "[\(host)]:\(bound)" : "\(host):\(bound)"
        }
    }

    /// The saslauthd socket, bound as ``listen(_:_:)`` binds, answered by a ``SaslauthdAcceptor``.
    private func listenSaslauthd(_ path: String) async throws {
        let listener = try await SocketFile.bind(path: path, mode: configuration.socketMode, group: configuration.socketGroup) { temporary in
            try SaslauthdAcceptor.listen(at: temporary)
        } close: { descriptor in
            try? descriptor.close()
        }
        let acceptor = makeSaslauthdAcceptor(listener: listener)
        state.withLock { $0.listening(path: path) }
        self.acceptor.withLock { $0 = acceptor }
        acceptor.start(threads: Self.acceptThreads)
    }

    /// An acceptor for the saslauthd socket `listener`: the gate, the timeouts and the connection accounting are
    /// what it sees of the daemon.
    func makeSaslauthdAcceptor(listener: SystemPackage.FileDescriptor) -> SaslauthdAcceptor {
        SaslauthdAcceptor(listener: listener, gate: gate, timeouts: ListenerTimeouts(configuration), group: group, state: state,
                          metrics: metrics, logger: logger, maxConnections: maxConnections)
    }

    /// The saslauthd socket's accept threads: one per two cores, at most four. Each connection is a few system
    /// calls and the KDC exchanges run elsewhere; the clients need the other cores (on two cores, two threads
    /// answered cached logins 15–30 % slower than one: docs/daemon.md, "The saslauthd socket").
    static var acceptThreads: Int { min(4, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) / 2)) }

    private func listen(_ path: String, _ initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>) async throws {
        let mode = configuration.socketMode
        let group = configuration.socketGroup
        let bootstrap = ServerBootstrap(group: self.group)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelInitializer { [self] channel in
                guard admit(channel) else { return channel.close() }
                return initializer(channel)
            }
        // Bound in a private directory and renamed into place with its mode and group already set.
        let channel = try await SocketFile.bind(path: path, mode: mode, group: group) { temporary in
            try await bootstrap.bind(unixDomainSocketPath: temporary).get()
        } close: { channel in
            try? await channel.close()
        }
        state.withLock { $0.listening(channel, path: path) }
    }

    /// Counts the connection in, or refuses it when the daemon is full or shutting down.
    private func admit(_ channel: any Channel) -> Bool {
        let admitted = state.withLock { $0.connectionOpened(channel) }
        if admitted {
            metrics.connections.increment()
            channel.closeFuture.whenComplete { [self] _ in
                state.withLock { $0.connectionClosed(channel) }
                metrics.connections.decrement()
            }
        } else {
            logger.warning("connection refused: limit of \(maxConnections) reached or shutting down")
        }
        return admitted
    }

    /// Runs until graceful shutdown (SIGTERM through a `ServiceGroup`), then drains; cancellation stops
    /// at once, without waiting for logins in flight.
    public func run() async throws {
        try await start()
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await stopped()
            } onGracefulShutdown: { [self] in
                Task { await shutdown() }
            }
        } onCancel: { [self] in
            Task { await shutdown(grace: .zero) }
        }
    }

    /// Returns once ``shutdown(grace:)`` has finished (at once if it already has).
    public func stopped() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            state.withLock { $0.waitForStop(continuation) }?.resume()
        }
    }

    /// Stops accepting, lets logins in flight finish (up to `grace`), closes the rest and stops the workers.
    ///
    /// A second call (cancellation during a graceful shutdown) only moves the first call's deadline earlier.
    public func shutdown(grace: Duration = .seconds(30)) async {
        let now = ContinuousClock.now
        let deadline = now + grace
        switch state.withLock({ $0.shutdown(deadline: deadline, now: now) }) {
        case .none:
            return
        case .resume(let waiter):
            waiter.resume()
            return
        case .wakeAt(let deadline):
            Task { [state] in
                try await Task.sleep(until: deadline)
                state.withLock { $0.deadlineReached(now: .now) }?.resume()
            }
            return
        case .drain(let listeners, let paths):
            logger.info("shutting down: finishing logins in flight")
            for channel in listeners { try? await channel.close() }
            acceptor.withLock { $0 }?.stop()
            for path in paths { unlink(path) }
        }
        // Logins in flight and delayed replies resume the drain as the last one ends; the deadline's timer if
        // they take too long.
        await withTaskGroup(of: Void.self) { timers in
            timers.addTask { [state] in
                guard (try? await Task.sleep(until: deadline)) != nil else { return }
                state.withLock { $0.deadlineReached(now: .now) }?.resume()
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                state.withLock { $0.waitForDrain(continuation, now: .now) }?.resume()
            }
            timers.cancelAll()
        }
        for channel in state.withLock({ $0.closing() }) { try? await channel.close() }
        await service.shutdown()
        try? await group.shutdownGracefully()
        for waiter in state.withLock({ $0.stopped() }) { waiter.resume() }
        logger.info("krb5-verifyd stopped")
    }

    /// Numbers for tests and logs: open connections, logins running, conversations waiting for answers, and
    /// failures waiting out the failure floor before their reply.
    public var counts: (connections: Int, inFlight: Int, parked: Int, delayedReplies: Int) {
        state.withLock { ($0.connectionCount, $0.inFlight, $0.parked, $0.delayedReplies) }
    }
}
