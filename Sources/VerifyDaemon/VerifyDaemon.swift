public import Logging
public import LoginService
import Foundation
import Kerberos
import LoginProtocol
import NIOCore
import NIOHTTP1
import NIOPosix
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
    /// The policy in front of both listeners: name checks, throttles, outcome accounting.
    let gate: LoginGate
    let metrics = DaemonMetrics()
    private let group: MultiThreadedEventLoopGroup
    private let state = Locked(State())

    private struct State {
        var listeners: [any Channel] = []
        var connections: [ObjectIdentifier: any Channel] = [:]
        var inFlight = 0
        /// Failure replies waiting out the failure floor; shutdown lets them go out too.
        var delayedReplies = 0
        var boundPaths: [String] = []
        var parked = 0
        var shuttingDown = false
        var stopped = false
        var drainDeadline = ContinuousClock.Instant.now
        var drained: [CheckedContinuation<Void, Never>] = []
    }

    /// Where the daemon listens once started.
    public struct Endpoints: Sendable {
        /// The saslauthd-compatible socket's path, if it listens on one.
        public var saslSocket: String?
        /// The conversation socket's path, if it listens on one.
        public var socket: String?
        /// The bound metrics address as `host:port` (the port is the real one when 0 was asked for).
        public var metrics: String?
    }

    /// Validates `configuration` and starts the krb5 worker threads; nothing listens until ``start()`` or ``run()``.
    ///
    /// Throws ``ConfigurationError`` for a configuration that makes no sense, or the `KerberosError`
    /// of a krb5 configuration that cannot make a context.
    public init(configuration: DaemonConfiguration, logger: Logger = Logger(label: "krb5-verifyd")) throws {
        try configuration.validate()
        self.configuration = configuration
        // Every field the daemon logs may carry what a client sent: control characters are escaped.
        let base = logger.handler
        var logger = Logger(label: logger.label) { _ in EscapingLogHandler(wrapping: base) }
        logger.logLevel = configuration.logLevel
        self.logger = logger
        self.service = try LoginService(configuration: configuration.login, threads: configuration.workers, resultCacheTTL: configuration.resultCacheTTL)
        self.gate = LoginGate(configuration: configuration, service: service, logger: logger)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Binds the sockets and the metrics endpoint.
    @discardableResult
    public func start() async throws -> Endpoints {
        var endpoints = Endpoints()
        if let path = configuration.saslSocket {
            try await listen(path) { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(SaslauthdHandler(daemon: self)) }
            }
            endpoints.saslSocket = path
        }
        if let path = configuration.socket {
            try await listen(path) { [self] channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ConversationHandler(daemon: self)) }
            }
            endpoints.socket = path
        }
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
            state.withLock { $0.listeners.append(channel) }
            endpoints.metrics = "\(parts[0]):\(channel.localAddress?.port ?? port)"
        }
        logger.info("krb5-verifyd listening", metadata: [
            "sasl_socket": .string(endpoints.saslSocket ?? "-"), "socket": .string(endpoints.socket ?? "-"),
            "metrics": .string(endpoints.metrics ?? "-"), "workers": .stringConvertible(configuration.workers),
            "armor": .string(configuration.login.armor.rawValue), "verify": .stringConvertible(configuration.login.verify),
        ])
        if !configuration.login.verify {
            logger.warning("verification is OFF (insecure_skip_verification): a forged KDC reply would be accepted")
        }
        return endpoints
    }

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
        state.withLock {
            $0.listeners.append(channel)
            $0.boundPaths.append(path)
        }
    }

    /// Counts the connection in, or refuses it when the daemon is full or shutting down.
    private func admit(_ channel: any Channel) -> Bool {
        let admitted = state.withLock { state -> Bool in
            guard !state.shuttingDown, state.connections.count < configuration.maxConnections else { return false }
            state.connections[ObjectIdentifier(channel)] = channel
            return true
        }
        if admitted {
            metrics.connections.increment()
            channel.closeFuture.whenComplete { [self] _ in
                state.withLock { _ = $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
                metrics.connections.decrement()
            }
        } else {
            logger.warning("connection refused: limit of \(configuration.maxConnections) reached or shutting down")
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
            let done = state.withLock { state -> Bool in
                if state.stopped { return true }
                state.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Stops accepting, lets logins in flight finish (up to `grace`), closes the rest and stops the workers.
    public func shutdown(grace: Duration = .seconds(30)) async {
        // A second call (cancellation during a graceful shutdown) only shortens the wait.
        let listeners = state.withLock { state -> [any Channel]? in
            let deadline = ContinuousClock.now + grace
            guard !state.shuttingDown else {
                state.drainDeadline = min(state.drainDeadline, deadline)
                return nil
            }
            state.shuttingDown = true
            state.drainDeadline = deadline
            return state.listeners
        }
        guard let listeners else { return }
        logger.info("shutting down: finishing logins in flight")
        for channel in listeners { try? await channel.close() }
        for path in state.withLock({ $0.boundPaths }) { unlink(path) }
        while true {
            let (busy, deadline) = state.withLock { ($0.inFlight + $0.delayedReplies, $0.drainDeadline) }
            guard busy > 0, ContinuousClock.now < deadline else { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let open = state.withLock { Array($0.connections.values) }
        for channel in open { try? await channel.close() }
        await service.shutdown()
        try? await group.shutdownGracefully()
        let waiting = state.withLock { state in
            defer { state.drained = []; state.stopped = true }
            return state.drained
        }
        for continuation in waiting { continuation.resume() }
        logger.info("krb5-verifyd stopped")
    }

    // MARK: Bookkeeping shared by the handlers

    func loginStarted() { state.withLock { $0.inFlight += 1 }; metrics.inFlight.increment() }
    func loginEnded() { state.withLock { $0.inFlight -= 1 }; metrics.inFlight.decrement() }

    /// Reserves a parking place for a conversation at a question; false when the daemon is full.
    func park() -> Bool {
        let parked = state.withLock { state -> Bool in
            guard state.parked < configuration.maxParkedConversations else { return false }
            state.parked += 1
            return true
        }
        if parked { metrics.parked.increment() }
        return parked
    }

    func unpark() { state.withLock { $0.parked -= 1 }; metrics.parked.decrement() }

    /// Numbers for tests and logs.
    public var counts: (connections: Int, inFlight: Int, parked: Int) {
        state.withLock { ($0.connections.count, $0.inFlight, $0.parked) }
    }

    /// The saslauthd-style reply text for a failed login.
    static func saslReason(_ result: LoginResult) -> String {
        switch result.failure {
        case .badCredentials?, .unknownPrincipal?: "authentication failed"
        case let failure?: failure.rawValue.replacingOccurrences(of: "-", with: " ")
        case nil: ""
        }
    }

    /// Logs one finished request; never with a secret.
    func log(listener: String, principal: String, peer: PeerCredentials?, result: LoginResult, started: NIODeadline) {
        let latency = NIODeadline.now() - started
        let outcome = result.failure?.rawValue ?? "ok"
        metrics.record(listener: listener, outcome: outcome, latency: .nanoseconds(latency.nanoseconds))
        let level: Logger.Level = result.ok ? .info : .notice
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = [
            "listener": .string(listener), "outcome": .string(outcome), "principal": .string(principal),
            "latency_ms": .stringConvertible(Double(latency.nanoseconds) / 1e6),
        ]
        // The name the KDC gave the ticket, when it differs from the one asked for (canonicalization, UPNs).
        if result.ok, let canonical = result.principal, canonical != principal { metadata["canonical_principal"] = .string(canonical) }
        if let peer { metadata["peer_uid"] = .stringConvertible(peer.uid); metadata["peer_pid"] = .stringConvertible(peer.pid) }
        if let message = result.message { metadata["reason"] = .string(message) }
        logger.log(level: level, "login", metadata: metadata)
    }

    /// Applies the failure floor: `reply` runs no sooner than `floor` (the failure floor, or a throttle's
    /// penalty) after `started`, the request's arrival. While half of `max_connections` already wait out a
    /// delay, a further one waits out only the failure floor, so penalties cannot fill the daemon.
    func afterFloor(_ result: LoginResult, started: NIODeadline, floor: Duration? = nil, on loop: any EventLoop, _ reply: @escaping @Sendable () -> Void) {
        let crowded = state.withLock { $0.delayedReplies >= configuration.maxConnections / 2 }
        let floor = crowded ? configuration.failureFloor : max(floor ?? .zero, configuration.failureFloor)
        let remaining = started + TimeAmount(floor) - .now()
        if result.ok || remaining <= .zero {
            reply()
        } else {
            state.withLock { $0.delayedReplies += 1 }
            loop.scheduleTask(in: remaining) { [self] in
                reply()
                state.withLock { $0.delayedReplies -= 1 }
            }
        }
    }
}
