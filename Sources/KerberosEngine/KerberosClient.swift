public import KerberosSecrets
internal import CKrb5
internal import NIOCore
internal import NIOPosix
public import struct FoundationEssentials.Date

/// A non-blocking Kerberos client: initial credentials and their verification as `async` calls, each bounded
/// by a deadline, over KDCs that may be slow, hung or gone.
///
/// The client drives MIT krb5's step APIs (`krb5_init_creds_step`, `krb5_tkt_creds_step`) itself and sends
/// their messages on SwiftNIO: UDP first, TCP when needed, the next KDC when one is slow, and a memory of KDCs
/// that stopped answering. The krb5 work between messages (string-to-key, decryption, PKINIT, the responder)
/// runs on a few worker threads, each owning one `krb5_context`; no thread waits on the network, so a
/// thousand logins waiting on a hung KDC hold no thread.
///
/// ```swift
/// let client = try KerberosClient()
/// let ticket = try await client.initialCredentials(for: "alice", password: Secret("…"),
///                                                   verification: VerificationRequest())
/// await client.shutdown()
/// ```
///
/// Cancelling the calling task abandons the exchange at once; so does the deadline
/// (``Configuration/loginTimeout``), with ``KerberosError/Reason/kdcUnreachable``.
public final class KerberosClient: Sendable {
    /// How the client runs.
    public struct Configuration: Sendable {
        /// The krb5 configuration of the workers' contexts (and so the realms and KDCs).
        public var krb5: Context.Configuration
        /// Worker threads for krb5's CPU work; each owns one context.
        public var threads: Int
        /// The bound on one call, from its start to its answer; when it passes the call throws
        /// ``KerberosError/Reason/kdcUnreachable``.
        public var loginTimeout: Duration
        /// How long a KDC may take before the next one is asked too (hedging).
        public var hedgeDelay: Duration
        /// How long a KDC that left a request unanswered is tried after the others.
        public var unresponsiveMemory: Duration
        /// The realms a KDC's referral (`KDC_ERR_WRONG_REALM`, answered to canonicalized or enterprise names) may send
        /// initial credentials to, besides the realm of the name asked for; a referral elsewhere fails with
        /// ``KerberosError/Reason/unknownPrincipal`` before any message goes there. nil follows referrals to any
        /// realm, as MIT does. Compared as bytes.
        public var referralRealms: Set<String>?
        /// The name servers asked for SRV records and host addresses instead of resolv.conf's (an empty list asks
        /// none); nil asks resolv.conf's.
        public var nameservers: [NameServer]? = nil

        /// The defaults: krb5's configuration, 2 workers, a 6 s login timeout (SSSD's `krb5_auth_timeout`),
        /// 250 ms hedge delay, 30 s memory of unresponsive KDCs (SSSD's `retry_timeout`), referrals to any realm.
        /// See `docs/engine.md`.
        public init(krb5: Context.Configuration = .default, threads: Int = 2, loginTimeout: Duration = .seconds(6),
                    hedgeDelay: Duration = .milliseconds(250), unresponsiveMemory: Duration = .seconds(30), referralRealms: Set<String>? = nil) {
            self.krb5 = krb5
            self.threads = threads
            self.loginTimeout = loginTimeout
            self.hedgeDelay = hedgeDelay
            self.unresponsiveMemory = unresponsiveMemory
            self.referralRealms = referralRealms
        }
    }

    /// The configuration the client was made with.
    public let configuration: Configuration
    let workers: [ContextWorker]
    /// The event-loop thread the client started, or the one-shot client's loop (the caller's thread).
    let group: any EventLoopGroup
    /// Whether ``shutdown()`` stops `group` (false for a loop the caller runs).
    private let ownsGroup: Bool
    let transport: KDCTransport
    /// Runs the async code of logins on the event-loop thread, so a login never needs a thread of Swift's
    /// cooperative pool (which a caller may have filled with blocking work).
    let executor: EventLoopTaskExecutor
    private let locations = Locked<[String: (location: ResolvedLocation, expires: NIODeadline)]>([:])
    /// The most locations kept (two per realm: KDCs and kpasswd servers); when full, expired ones go, then all.
    static let maximumLocations = 256
    /// How many locations are kept now.
    var locationCount: Int { locations.withLock { $0.count } }
    private let nextWorker = Locked(0)

    /// Starts the worker threads and one event-loop thread.
    ///
    /// Throws when `configuration.krb5` cannot make a context.
    public init(configuration: Configuration = Configuration()) throws(KerberosError) {
        precondition(configuration.threads > 0, "KerberosClient needs at least one worker thread")
        _ = try Context(configuration.krb5)
        self.configuration = configuration
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        ownsGroup = true
        transport = KDCTransport(group: group, configuration: Self.transportConfiguration(configuration))
        executor = EventLoopTaskExecutor(loop: group.next())
        workers = (0..<configuration.threads).map { ContextWorker(name: "krb5-step-\($0)", configuration: configuration.krb5) }
    }

    /// A client for a process's one login that starts no thread: the caller's thread runs `loop`
    /// (`MultiThreadedEventLoopGroup.withCurrentThreadAsEventLoop`), the login's tasks, its KDC messages and, with
    /// `context`, its krb5 work, one after the other, as kinit does. `configuration.threads` is ignored.
    ///
    /// Only for a thread that has nothing else to serve: the krb5 work (string-to-key, PKINIT) runs on the loop.
    init(oneShotOn loop: any EventLoop, context: Context, configuration: Configuration) {
        self.configuration = configuration
        group = loop
        ownsGroup = false
        transport = KDCTransport(group: loop, configuration: Self.transportConfiguration(configuration))
        executor = EventLoopTaskExecutor(loop: loop)
        workers = [ContextWorker(inlineOn: context)]
    }

    /// Runs `body` with a one-shot client (``init(oneShotOn:context:configuration:)``) on the calling thread, which
    /// is the client's event loop until `body` has returned; returns what `body` returned.
    ///
    /// > Warning: Blocks the calling thread for the whole login; never call from Swift's cooperative pool or an
    /// > event loop.
    @available(*, noasync, message: "blocks the calling thread for the whole login")
    package static func withOneShotClient<T: Sendable>(context: Context, configuration: Configuration,
                                                       _ body: @escaping @Sendable (KerberosClient) async -> T) -> T {
        let result = Locked<T?>(nil)
        MultiThreadedEventLoopGroup.withCurrentThreadAsEventLoop { loop in
            let client = KerberosClient(oneShotOn: loop, context: context, configuration: configuration)
            client.start {
                let value = await body(client)
                result.withLock { $0 = value }
                await client.shutdown()
                loop.shutdownGracefully { _ in }
            }
        }
        return result.withLock { $0! }
    }

    private static func transportConfiguration(_ configuration: Configuration) -> KDCTransport.Configuration {
        var transport = KDCTransport.Configuration(hedgeDelay: .nanoseconds(configuration.hedgeDelay.nanoseconds),
                                                   unresponsiveMemory: .nanoseconds(configuration.unresponsiveMemory.nanoseconds))
        // A counted message fails over within the first half of the login, so a hung KDC leaves time for the next.
        transport.countedFailover = min(transport.countedFailover, .nanoseconds(configuration.loginTimeout.nanoseconds / 2))
        return transport
    }

    /// Lets running work finish its current step, then stops the worker and event-loop threads.
    /// Calls made afterwards throw.
    public func shutdown() async {
        for worker in workers { await worker.shutdown() }
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    /// Starts `body` in a task of its own that runs on the client's event loop rather than Swift's cooperative
    /// pool: for callers that complete through a callback (an event loop, a thread that must not wait on the pool).
    package func start(_ body: @escaping @Sendable () async -> Void) {
        Task(executorPreference: executor) { await body() }
    }

    /// ``shutdown()`` for synchronous callers: blocks the calling thread (not the cooperative pool's work: it
    /// needs no task to run) until the threads have stopped.
    ///
    /// > Warning: Blocks; never call from an event loop of this client.
    @available(*, noasync, message: "blocks the calling thread; use 'await shutdown()'")
    package func shutdownBlocking() {
        for worker in workers { worker.shutdownBlocking() }
        if ownsGroup { try? group.syncShutdownGracefully() }
    }

    // MARK: Public calls

    /// Gets initial credentials (a TGT) with a password and, with `verification`, verifies them against a keytab.
    ///
    /// The corresponding C functions are `krb5_init_creds_init`, `krb5_init_creds_set_password`,
    /// `krb5_init_creds_step` and `krb5_init_creds_get_creds`; verification is a TGS exchange
    /// (`krb5_tkt_creds_step`) and `krb5_rd_req`, as `krb5_verify_init_creds` does.
    /// Suspends; never blocks a thread on the network.
    public func initialCredentials(for principal: String, password: Secret, options: LoginOptions = LoginOptions(),
                                   verification: VerificationRequest? = nil, timeout: Duration? = nil) async throws(KerberosError) -> TicketInfo {
        try await initialCredentials(verification: verification, timeout: timeout) { context in
            InitialCredentialsSetup(client: try Principal(parsing: principal, in: context), password: password, options: try options.make(in: context))
        }
    }

    /// Gets initial credentials with a key from a keytab (a service logging in as itself).
    ///
    /// The corresponding C function is `krb5_init_creds_set_keytab`, then as for a password.
    public func initialCredentials(for principal: String, keytab: String, options: LoginOptions = LoginOptions(),
                                   verification: VerificationRequest? = nil, timeout: Duration? = nil) async throws(KerberosError) -> TicketInfo {
        try await initialCredentials(verification: verification, timeout: timeout) { context in
            InitialCredentialsSetup(client: try Principal(parsing: principal, in: context),
                                    keytab: try Keytab(resolving: keytab, in: context), options: try options.make(in: context))
        }
    }

    /// Gets initial credentials set up by `setup`, which runs on a worker thread with its context: the way to use
    /// every ``InitialCredentialsOptions`` member, a ``Responder`` or ``Prompter`` (they run on the worker during
    /// a step; a prompter that waits on a person holds that worker, so prefer the responder's replay), an output
    /// cache, a service other than `krbtgt`.
    public func initialCredentials(verification: VerificationRequest? = nil, timeout: Duration? = nil,
                                   _ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> TicketInfo {
        try await withTaskExecutorPreference(executor) { () async throws(KerberosError) -> TicketInfo in
            try await self.login(verification: verification, timeout: timeout, setup)
        }
    }

    private func login(verification: VerificationRequest?, timeout: Duration?, _ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> TicketInfo {
        let session = self.session(timeout: timeout)
        let credentials = try await session.initialCredentials(setup)
        var verified = false
        if let verification {
            verified = try await session.verify(credentials) { context in try verification.make(in: context) }
        }
        let checked = verified
        return try await session.run(credentials) { _, credentials in TicketInfo(credentials, verified: checked) }
    }

    // MARK: Sessions (for LoginService)

    /// A series of calls pinned to one worker under one deadline.
    package func session(timeout: Duration? = nil) -> KerberosSession {
        let index = nextWorker.withLock { next in
            defer { next = (next + 1) % workers.count }
            return next
        }
        let timeout = timeout ?? configuration.loginTimeout
        return KerberosSession(client: self, worker: workers[index], deadline: .now() + .nanoseconds(timeout.nanoseconds), timeout: timeout)
    }

    /// The realm's KDCs (or kpasswd servers) with their addresses, cached for five minutes, or for less when DNS
    /// gave them with a shorter TTL (not under ``DNSServiceRecords/minimumTTL``): krb5.conf read on the session's
    /// worker, SRV records and host names asked of DNS on the event loop (``DNSServiceRecords``), host names resolved
    /// concurrently. A location with no address is not cached.
    func location(of realm: String, role: ServerRole = .kdc, session: KerberosSession) async throws(KerberosError) -> ResolvedLocation {
        let now = NIODeadline.now()
        let key = "\(role.dnsService) \(realm)"
        if let cached = locations.withLock({ $0[key] }), cached.expires > now { return cached.location }
        var location = try await session.run { context in try KDCLocator.locate(role, realm: realm, context: context) }
        var ttl = DNSServiceRecords.maximumTTL
        if location.inDNS {
            let servers = try await session.serversFromDNS(role.dnsService, realm: realm)
            location.kdcs = servers.values
            ttl = servers.ttl
            if location.kdcs.isEmpty { throw KDCLocator.cannotFind(role, realm: realm) }
        }
        let kdcs = location.kdcs
        let resolved = await withTaskGroup(of: (Int, DNSServiceRecords.Answer<SocketAddress>?).self) { group in
            for (index, kdc) in kdcs.enumerated() {
                group.addTask { (index, try? await session.addresses(of: kdc, realm: realm)) }
            }
            return await group.reduce(into: [Int: DNSServiceRecords.Answer<SocketAddress>]()) { $0[$1.0] = $1.1 }
        }
        var targets: [KDCTarget] = []
        for (index, kdc) in kdcs.enumerated() {
            let addresses = resolved[index]?.values ?? []
            ttl = min(ttl, resolved[index]?.ttl ?? ttl)
            for address in addresses {
                targets.append(KDCTarget(kdc: kdc, address: address, key: addresses.count == 1 ? kdc.description : "\(kdc.description)@\(address)"))
            }
        }
        let result = ResolvedLocation(location: location, targets: targets)
        if targets.isEmpty {
            if session.deadline <= .now() { throw KerberosError.loginTimedOut(realm: realm, timeout: session.timeout) }
        } else {
            locations.withLock { locations in
                if locations.count >= Self.maximumLocations {
                    locations = locations.filter { $0.value.expires > now }
                    if locations.count >= Self.maximumLocations { locations.removeAll(keepingCapacity: true) }
                }
                locations[key] = (result, now + .seconds(Int64(ttl)))
            }
        }
        return result
    }
}

/// A realm's location with its KDCs' addresses.
struct ResolvedLocation: Sendable {
    var location: RealmLocation
    var targets: [KDCTarget]
}

/// A non-`Sendable` value made on a worker and usable only there; async code carries it between steps.
///
/// `@unchecked Sendable`: `value` is read only in jobs of `worker` (``KerberosSession/run(_:_:)``), and released
/// there too (the deinit hands the last reference to the worker).
package final class Pinned<Value>: @unchecked Sendable {
    let worker: ContextWorker
    fileprivate var value: Value?

    init(_ value: Value, worker: ContextWorker) {
        self.worker = worker
        self.value = value
    }

    /// The value; only inside a job of the session that made it (``KerberosSession/run(_:)`` and friends).
    package var onWorker: Value { value! }

    deinit {
        guard let value else { return }
        let last = Unchecked(value)
        worker.submit { _ in _ = last }
    }
}

/// Carries a value into a job of its own worker.
private final class Unchecked<Value>: @unchecked Sendable {
    var value: Value?
    init(_ value: Value) { self.value = value }
}

/// Calls of one login: pinned to one worker (its context owns every krb5 object of the login) and bounded by one
/// deadline.
package struct KerberosSession: Sendable {
    let client: KerberosClient
    let worker: ContextWorker
    /// When the login's answer is due.
    let deadline: NIODeadline
    let timeout: Duration

    /// A realm named in the timeout message, once known.
    private func timedOut(_ realm: String?) -> @Sendable () -> KerberosError {
        let timeout = self.timeout
        return { KerberosError.loginTimedOut(realm: realm, timeout: timeout) }
    }

    /// Runs `body` on the session's worker with its context.
    package func run<T: Sendable>(_ body: @escaping @Sendable (Context) throws -> T) async throws(KerberosError) -> T {
        try await awaitStep(deadline: deadline, loop: client.group.next(), onTimeout: timedOut(nil)) { resumer in
            worker.run(resumer) { context throws(KerberosError) in
                do { return try body(context) } catch { throw KerberosError(wrapping: error) }
            }
        }
    }

    /// Runs `body` on the session's worker with a pinned value.
    package func run<V, T: Sendable>(_ pinned: Pinned<V>, _ body: @escaping @Sendable (Context, V) throws -> T) async throws(KerberosError) -> T {
        precondition(pinned.worker === worker, "A pinned value is used on the worker that made it")
        return try await run { context in try body(context, pinned.value!) }
    }

    /// Makes a value on the worker and pins it there.
    package func make<V>(_ body: @escaping @Sendable (Context) throws -> V) async throws(KerberosError) -> Pinned<V> {
        let worker = self.worker
        return try await run { context in Pinned(try body(context), worker: worker) }
    }

    /// Sends one message to `realm`'s KDCs and awaits the first reply.
    func send(_ message: [UInt8], realm: String, tcpOnly: Bool, delivery: Delivery = .hedged, primaryOnly: Bool) async throws(KerberosError) -> KDCReply {
        let resolved = try await client.location(of: realm, session: self)
        let transport = client.transport
        let targets = transport.order(resolved.targets, primaryOnly: primaryOnly)
        guard !targets.isEmpty else {
            throw KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "No \(primaryOnly ? "primary " : "")KDC is configured for realm '\(realm)'", reason: .kdcUnreachable)
        }
        return try await transmit(Array(repeating: message, count: targets.count), to: targets, kind: .kdc,
                                  udpPreferenceLimit: resolved.location.udpPreferenceLimit, tcpOnly: tcpOnly, delivery: delivery, realm: realm)
    }

    /// Sends `messages[i]` to `targets[i]` on the transport (``KDCTransport``) and awaits the first reply of `kind`,
    /// under the session's deadline: the one way KDC, kpasswd and DNS messages leave.
    func transmit(_ messages: [[UInt8]], to targets: [KDCTarget], kind: ReplyKind, udpPreferenceLimit: Int, tcpOnly: Bool,
                  delivery: Delivery = .hedged, realm: String) async throws(KerberosError) -> KDCReply {
        let transport = client.transport
        return try await awaitStep(deadline: deadline, loop: client.group.next(), onTimeout: timedOut(realm)) { resumer in
            transport.send(messages, to: targets, kind: kind, udpPreferenceLimit: udpPreferenceLimit, tcpOnly: tcpOnly, delivery: delivery,
                           realm: realm, resumer: resumer)
        }
    }

    /// Which KDCs answered an exchange.
    final class Trace {
        var realm: String?
        var answeredByReplica = false
    }

    /// Drives a stepwise exchange whose first step gave `first` to completion: each later step on the worker, each
    /// message on the event loop; the credentials are taken in the job of the step that completes the exchange, so a
    /// KDC message costs one hop there and one back. With `realms`, a message for any other realm (a referral's)
    /// fails the exchange before it is sent.
    func drive<E: StepwiseExchange>(_ exchange: Pinned<E>, first: StepOutcome, primaryOnly: Bool, trace: Trace,
                                    realms: Set<[UInt8]>? = nil) async throws(KerberosError) -> Pinned<Credentials> {
        var outcome = first
        let worker = self.worker
        while true {
            guard case .send(let request, let realm, let tcpOnly, let delivery) = outcome else {
                return try await make { _ in try exchange.onWorker.credentials() }
            }
            if let realms, !realms.contains(Array(realm.utf8)) {
                throw KerberosError(code: Int32(KRB5KDC_ERR_WRONG_REALM), message: "The KDC referred the login to realm \"\(realm)\", which is not allowed",
                                    reason: .unknownPrincipal)
            }
            trace.realm = realm
            let answer = try await send(request, realm: realm, tcpOnly: tcpOnly, delivery: delivery, primaryOnly: primaryOnly)
            if !answer.kdc.isPrimary { trace.answeredByReplica = true }
            let reply = answer.bytes
            let (next, credentials) = try await run(exchange) { _, exchange -> (StepOutcome, Pinned<Credentials>?) in
                let next = try exchange.step(reply)
                guard case .complete = next else { return (next, nil) }
                return (next, Pinned(try exchange.credentials(), worker: worker))
            }
            if let credentials { return credentials }
            outcome = next
        }
    }

    /// A login's setup, made on the worker with either the armor ticket to fetch first or the exchange started.
    private struct Begun: Sendable {
        var spec: Pinned<InitialCredentialsSetup>
        var armorRequest: ArmorRequest?
        var started: StartedExchange?
    }

    /// A started exchange: made and stepped once on the worker, in the job that made its setup when it can be.
    private struct StartedExchange: Sendable {
        var exchange: Pinned<InitialCredentialsExchange>
        var first: StepOutcome
        /// The client's realm.
        var realm: String
    }

    /// Makes the exchange of `setup`, armored with `armor` when one was fetched, and takes its first step. On the worker.
    private func start(_ setup: InitialCredentialsSetup, armor: CredentialCache?, context: Context) throws -> StartedExchange {
        var setup = setup
        setup.options.armor = Self.armor(fetched: armor, configured: setup.options.armor)
        let exchange = try InitialCredentialsExchange(context: context, client: setup.client, key: setup.key, options: setup.options,
                                                      onPasswordKey: setup.onPasswordKey)
        return StartedExchange(exchange: Pinned(exchange, worker: worker), first: try exchange.step([]), realm: setup.client.realm)
    }

    /// Gets initial credentials set up by `setup` (run on the worker), first fetching FAST armor when the
    /// options ask for anonymous-PKINIT or keytab armor, and retrying on a primary KDC after a failure answered
    /// by a replica (MIT's `use_primary`). Without armor to fetch, the setup, the exchange and its first step are
    /// one job on the worker.
    package func initialCredentials(_ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> Pinned<Credentials> {
        let begun = try await run { (context: Context) throws -> Begun in
            let made = try setup(context)
            let spec = Pinned(made, worker: self.worker)
            if let request = try self.armorRequest(made, context: context) { return Begun(spec: spec, armorRequest: request, started: nil) }
            return Begun(spec: spec, armorRequest: nil, started: try self.start(made, armor: nil, context: context))
        }
        let spec = begun.spec, started = begun.started
        var armor: Pinned<CredentialCache>?
        if let request = begun.armorRequest { armor = try await armorCache(for: spec, request: request) }
        let trace = Trace()
        do {
            return try await exchange(spec, armor: armor, started: started, primaryOnly: false, trace: trace)
        } catch {
            guard Self.retriesOnPrimary(error), trace.answeredByReplica, let realm = trace.realm,
                  (try? await client.location(of: realm, session: self))?.location.hasPrimary == true else { throw error }
            do {
                return try await exchange(spec, armor: armor, started: nil, primaryOnly: true, trace: Trace())
            } catch let primaryError {
                // The primary unreachable (but time left): the replica's answer stands, as in MIT's gic_pwd.c.
                if primaryError.code == Int32(KRB5_KDC_UNREACH) && deadline > .now() { throw error }
                throw primaryError
            }
        }
    }

    /// Asks the KDC which enctype, salt and string-to-key parameters it uses for the setup's client, without
    /// sending anything that carries a key, so the KDC counts no failure: MIT's own exchange with the setup's options
    /// and armor, stopped where it would make the password key (``InitialCredentialsExchange/encryptionInfo(fromReply:)``).
    /// Armored when the setup is, so the answer comes inside FAST, where no one on the path can change it.
    ///
    /// Returns ``EncryptionType/null`` info when the KDC's answer needs no password key (it offered only other
    /// mechanisms); throws the KDC's error for an unknown principal or a disabled account. Nothing blocks.
    package func encryptionInfo(_ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> EncryptionInfo {
        let begun = try await run { (context: Context) throws -> Begun in
            let made = try setup(context)
            return Begun(spec: Pinned(made, worker: self.worker), armorRequest: try self.armorRequest(made, context: context), started: nil)
        }
        let spec = begun.spec
        var fetched: Pinned<CredentialCache>?
        if let request = begun.armorRequest { fetched = try await armorCache(for: spec, request: request) }
        let armor = fetched, worker = self.worker
        let (exchange, first, defaultSalt) = try await run { context in
            let setup = spec.onWorker
            var options = setup.options
            options.responder = nil
            options.prompter = nil
            options.preauthTypes = nil
            options.armor = Self.armor(fetched: armor?.onWorker, configured: options.armor)
            // A password krb5 never turns into a key: the step stops where it would.
            let exchange = try InitialCredentialsExchange(context: context, client: setup.client, key: .password(Secret("")), options: options)
            return (Pinned(exchange, worker: worker), try exchange.step([]), Array((setup.client.realm + setup.client.components.joined()).utf8))
        }
        var outcome = first
        // At most one resend over TCP (RESPONSE_TOO_BIG), as MIT's loop makes it.
        for _ in 0..<2 {
            guard case .send(let request, let realm, let tcpOnly, _) = outcome else { break }
            let reply = try await send(request, realm: realm, tcpOnly: tcpOnly, primaryOnly: false).bytes
            let (info, next) = try await run(exchange) { _, exchange in try exchange.encryptionInfo(fromReply: reply) }
            if let info { return info }
            guard let next, case .send(_, _, true, _) = next else { break }
            outcome = next
        }
        return EncryptionInfo(encryptionType: .null, salt: defaultSalt, parameters: [])
    }

    /// A ticket for `kadmin/changepw` with the old password that `setup` carries, as MIT's
    /// `krb5_get_init_creds_password` asks for one on an expired password: 5 minutes, neither renewable,
    /// forwardable nor proxiable, not canonicalized, with the login's armor. Getting it proves the old password.
    package func passwordChangeTicket(_ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> Pinned<Credentials> {
        try await initialCredentials { context in
            var setup = try setup(context)
            setup.options.service = "kadmin/changepw@\(setup.client.realm)"
            setup.options.ticketLifetime = .seconds(300)
            setup.options.renewLifetime = .zero
            setup.options.forwardable = false
            setup.options.proxiable = false
            setup.options.canonicalize = nil
            setup.options.prompter = nil
            setup.options.responder = nil
            setup.options.expireCallback = nil
            return setup
        }
    }

    /// Changes the password of `ticket`'s client to `newPassword` through kpasswd (``PasswordChangeExchange``):
    /// the requests are built and the reply read on the worker; the messages go on the event loop, under the
    /// session's deadline, to the realm's kpasswd servers with the failover of KDC messages.
    ///
    /// Returns what the server answered: a refusal (a password the policy rejects) is a result, not a throw.
    package func changePassword(with ticket: Pinned<Credentials>, newPassword: Secret) async throws(KerberosError) -> PasswordChangeResult {
        let realm = try await run(ticket) { _, ticket in try ticket.client.realm }
        let resolved = try await client.location(of: realm, role: .passwordChange, session: self)
        let transport = client.transport
        let exchange: Pinned<PasswordChangeExchange> = try await make { context in try PasswordChangeExchange(context: context, ticket: ticket.onWorker) }
        // One request per server: each carries this host's address on the route to that server.
        let requests = try await run(exchange) { _, exchange in
            try transport.order(resolved.targets, primaryOnly: false).compactMap { target -> (KDCTarget, [UInt8])? in
                guard let local = target.localAddress else { return nil }
                return (target, try exchange.request(newPassword: newPassword, localAddress: local))
            }
        }
        guard !requests.isEmpty else {
            throw KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "No kpasswd server of realm '\(realm)' can be reached", reason: .kdcUnreachable)
        }
        let bytes = try await transmit(requests.map(\.1), to: requests.map(\.0), kind: .passwordChange,
                                       udpPreferenceLimit: resolved.location.udpPreferenceLimit, tcpOnly: false, realm: realm).bytes
        return try await run(exchange) { _, exchange in try exchange.readReply(bytes) }
    }

    /// MIT retries on the primary for anything but unreachable KDCs and an interrupted prompter.
    static func retriesOnPrimary(_ error: KerberosError) -> Bool {
        switch Int(error.code) {
        case KRB5_KDC_UNREACH, KRB5_REALM_CANT_RESOLVE, KRB5_REALM_UNKNOWN, KRB5_LIBOS_PWDINTR, KRB5_LIBOS_CANTREADPWD: false
        default: error.reason != .cancelled && error.reason != .invalidRequest
        }
    }

    /// The exchange of `spec`, from `started` when its first step was taken already.
    private func exchange(_ spec: Pinned<InitialCredentialsSetup>, armor: Pinned<CredentialCache>?, started: StartedExchange?, primaryOnly: Bool,
                          trace: Trace) async throws(KerberosError) -> Pinned<Credentials> {
        let begun: StartedExchange
        if let started {
            begun = started
        } else {
            begun = try await run { context in try self.start(spec.onWorker, armor: armor?.onWorker, context: context) }
        }
        // The name's own realm, and those a referral may lead to (Configuration.referralRealms).
        let realms = client.configuration.referralRealms.map { Set($0.map { Array($0.utf8) }).union([Array(begun.realm.utf8)]) }
        return try await drive(begun.exchange, first: begun.first, primaryOnly: primaryOnly, trace: trace, realms: realms)
    }

    /// The armor an exchange uses: the cache ``armorCache(for:request:)`` fetched, else a cache the options name, else none
    /// (anonymous PKINIT or keytab armor that could not be had).
    private static func armor(fetched: CredentialCache?, configured: Armor?) -> Armor? {
        switch (fetched, configured) {
        case (let fetched?, _): .cache(fetched)
        case (nil, .anonymousPKINIT?), (nil, .keytab?): nil
        default: configured
        }
    }

    /// The exchange that fetches the armor ticket `setup`'s options ask for, and the MEMORY cache it fills
    /// (``Armor/ticketRequest(for:login:in:)``); nil when the options name a cache or no armor. On the worker.
    private func armorRequest(_ setup: InitialCredentialsSetup, context: Context) throws -> ArmorRequest? {
        guard let request = try setup.options.armor?.ticketRequest(for: setup.client, login: setup.options, in: context) else { return nil }
        return ArmorRequest(setup: Pinned(request.setup, worker: worker), cache: Pinned(request.cache, worker: worker))
    }

    /// An armor ticket to fetch before the login: its exchange's setup and the cache it fills.
    private struct ArmorRequest: Sendable {
        var setup: Pinned<InitialCredentialsSetup>
        var cache: Pinned<CredentialCache>
    }

    /// Fetches the armor ticket of `request` into its MEMORY cache, or nil when none could be had and the login may
    /// go on without.
    private func armorCache(for spec: Pinned<InitialCredentialsSetup>, request: ArmorRequest) async throws(KerberosError) -> Pinned<CredentialCache>? {
        do {
            _ = try await exchange(request.setup, armor: nil, started: nil, primaryOnly: false, trace: Trace())
            return request.cache
        } catch {
            guard Armor.proceedsUnarmored(after: error, fastRequired: try await run(spec, { _, setup in setup.options.fastRequired })) else { throw error }
            return nil
        }
    }

    /// Verifies `credentials` as `krb5_verify_init_creds` does, without blocking: a service ticket for the
    /// server (a TGS exchange through the engine; none when the credentials already are a ticket for it), then
    /// `krb5_rd_req` with the keytab. Returns whether the check ran: false only when `nofail` is off and the
    /// keytab has no usable key.
    package func verify(_ credentials: Pinned<Credentials>, _ options: @escaping @Sendable (Context) throws -> VerificationOptions) async throws(KerberosError) -> Bool {
        // Which servers to try, on the worker, and whether the credentials are a ticket for one of them.
        let worker = self.worker
        let (plan, count, nofail) = try await run(credentials) { context, credentials in
            let plan = try VerificationPlan(context: context, credentials: credentials, options: options(context))
            return (Pinned(plan, worker: worker), plan.servers.count, plan.options.nofail)
        }
        if count == 0 {
            if nofail {
                throw KerberosError(code: Int32(KRB5_KT_NOTFOUND), message: "No key in the keytab to verify the credentials with", reason: .verificationFailed)
            }
            return false
        }
        var lastError: KerberosError?
        for index in 0..<count {
            do {
                // A ticket for the server itself (the direct verification ticket) is checked in the same job.
                let checkedDirectly = try await run(plan) { context, plan in
                    guard plan.isDirect(index) else { return false }
                    try context.checkServiceTicket(credentials.onWorker, server: plan.servers[index], keytab: plan.keytab)
                    return true
                }
                if !checkedDirectly {
                    let (exchange, first) = try await run(plan) { context, plan in
                        let exchange = try ServiceTicketExchange(context: context, ticketGrantingTicket: credentials.onWorker, server: plan.servers[index])
                        return (Pinned(exchange, worker: worker), try exchange.step([]))
                    }
                    let ticket = try await drive(exchange, first: first, primaryOnly: false, trace: Trace())
                    try await run(plan) { context, plan in
                        try context.checkServiceTicket(ticket.onWorker, server: plan.servers[index], keytab: plan.keytab)
                    }
                }
                return true
            } catch {
                if error.reason == .kdcUnreachable || error.reason == .cancelled { throw error }
                lastError = error
            }
        }
        let failure = lastError!
        throw failure.reason == .verificationFailed ? failure : KerberosError(code: failure.code, message: failure.message, reason: .verificationFailed)
    }
}

/// The servers a verification tries and the keytab it checks with; made on the worker.
final class VerificationPlan {
    let options: VerificationOptions
    let keytab: Keytab
    let servers: [Principal]
    private let ticketServer: String

    init(context: Context, credentials: Credentials, options: VerificationOptions) throws {
        self.options = options
        keytab = try options.keytab ?? Keytab.default(in: context)
        ticketServer = credentials.server
        if let server = options.server {
            servers = context.keytabHasKey(keytab, for: server) ? [server] : []
        } else {
            // MIT: every host principal with a key in the keytab.
            var seen: Set<String> = []
            var found: [Principal] = []
            for entry in (try? keytab.entries()) ?? [] where !seen.contains(entry.principal) {
                seen.insert(entry.principal)
                guard let principal = try? Principal(parsing: entry.principal, in: context), principal.components.first == "host" else { continue }
                found.append(principal)
            }
            servers = found
        }
    }

    /// Whether the credentials already are a ticket for server `index` (`directVerificationTicket`).
    func isDirect(_ index: Int) -> Bool { servers[index].name() == ticketServer }
}

/// The `Sendable` subset of ``InitialCredentialsOptions`` for ``KerberosClient``'s simple calls.
public struct LoginOptions: Sendable {
    /// Where FAST armor comes from.
    public enum ArmorSource: Sendable {
        /// Anonymous PKINIT for the client's realm.
        case anonymousPKINIT
        /// A keytab's key (nil principal: its first entry).
        case keytab(String, principal: String?)
        /// A cache holding an armor TGT, by name.
        case cacheName(String)
    }

    /// Requested ticket lifetime.
    public var ticketLifetime: Duration?
    /// Requested renewable lifetime.
    public var renewLifetime: Duration?
    /// Request a forwardable ticket.
    public var forwardable: Bool?
    /// Ask the KDC to canonicalize the client name.
    public var canonicalize: Bool?
    /// Session-key encryption types to offer.
    public var encryptionTypes: [EncryptionType]?
    /// Pre-authentication types to try (`[.encryptedTimestamp]`: optimistic preauth).
    public var preauthTypes: [PreauthType]?
    /// Pre-authentication options such as `X509_anchors`.
    public var preauthOptions: [PreauthOption] = []
    /// FAST armor.
    public var armor: ArmorSource?
    /// Fail unless the exchange is armored.
    public var fastRequired = false
    /// The service to ask for instead of `krbtgt/REALM`.
    public var service: String?

    /// A named pre-authentication option (`krb5_get_init_creds_opt_set_pa`).
    public struct PreauthOption: Sendable {
        /// The option's name, such as `X509_anchors`.
        public var name: String
        /// Its value.
        public var value: String
        /// An option.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// krb5's defaults.
    public init() {}

    func make(in context: Context) throws -> InitialCredentialsOptions {
        var options = InitialCredentialsOptions()
        options.ticketLifetime = ticketLifetime
        options.renewLifetime = renewLifetime
        options.forwardable = forwardable
        options.canonicalize = canonicalize
        options.encryptionTypes = encryptionTypes
        options.preauthTypes = preauthTypes
        options.preauthOptions = preauthOptions.map { ($0.name, $0.value) }
        options.fastRequired = fastRequired
        options.service = service
        switch armor {
        case .anonymousPKINIT?: options.armor = .anonymousPKINIT
        case .keytab(let name, let principal)?:
            options.armor = .keytab(try Keytab(resolving: name, in: context), principal: try principal.map { try Principal(parsing: $0, in: context) })
        case .cacheName(let name)?: options.armor = .cacheName(name)
        case nil: break
        }
        return options
    }
}

/// How ``KerberosClient`` verifies credentials: the `Sendable` form of ``VerificationOptions``.
public struct VerificationRequest: Sendable {
    /// The service principal whose key is in the keytab; nil tries every host principal in the keytab.
    public var server: String?
    /// The keytab; nil means the default keytab.
    public var keytab: String?
    /// Fail when verification cannot be performed (no keytab, no key for the server). On by default.
    public var nofail: Bool

    /// Verification against `server`'s key in `keytab` (defaults: every host key in the default keytab), failing
    /// when none can be used.
    public init(server: String? = nil, keytab: String? = nil, nofail: Bool = true) {
        self.server = server
        self.keytab = keytab
        self.nofail = nofail
    }

    func make(in context: Context) throws -> VerificationOptions {
        VerificationOptions(server: try server.map { try Principal(parsing: $0, in: context) },
                            keytab: try keytab.map { try Keytab(resolving: $0, in: context) }, nofail: nofail)
    }
}

/// What a ticket says, as a `Sendable` value (the ticket itself stays in krb5's memory and is freed).
public struct TicketInfo: Sendable, Hashable {
    /// The client principal, such as `alice@EXAMPLE.ORG`.
    public var client: String
    /// The service principal, such as `krbtgt/EXAMPLE.ORG@EXAMPLE.ORG`.
    public var server: String
    /// When the initial authentication happened.
    public var authTime: Date
    /// When the ticket becomes valid.
    public var startTime: Date
    /// When it expires.
    public var endTime: Date
    /// Until when it can be renewed, if renewable.
    public var renewTill: Date?
    /// The ticket flags.
    public var flags: TicketFlags
    /// The session key's encryption type.
    public var sessionKeyType: EncryptionType
    /// Whether the credentials were verified against a keytab.
    public var verified: Bool

    init(_ credentials: Credentials, verified: Bool) {
        client = credentials.clientName
        server = credentials.server
        authTime = credentials.authTime
        startTime = credentials.startTime
        endTime = credentials.endTime
        renewTill = credentials.renewTill
        flags = credentials.flags
        sessionKeyType = credentials.sessionKeyType
        self.verified = verified
    }
}

extension Duration {
    /// The duration in nanoseconds, saturating.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        return product.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}

/// A `TaskExecutor` over one NIO event loop: jobs run on the loop's thread.
final class EventLoopTaskExecutor: TaskExecutor {
    let loop: any EventLoop

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        loop.execute { job.runSynchronously(on: executor) }
    }
}
