public import KerberosSecrets
internal import CKrb5
internal import NIOCore
internal import NIOPosix

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
/// (``Configuration/loginTimeout``), with `KerberosError.Reason.kdcUnreachable`.
public final class KerberosClient: Sendable {
    /// How the client runs.
    public struct Configuration: Sendable {
        /// The krb5 configuration of the workers' contexts (and so the realms and KDCs).
        public var krb5: Context.Configuration
        /// Worker threads for krb5's CPU work; each owns one context.
        public var threads: Int
        /// The bound on one call, from its start to its answer; when it passes the call throws
        /// `KerberosError.Reason.kdcUnreachable`.
        public var loginTimeout: Duration
        /// How long a KDC may take before the next one is asked too (hedging).
        public var hedgeDelay: Duration
        /// How long a KDC that left a request unanswered is tried after the others.
        public var unresponsiveMemory: Duration
        /// The realms a KDC's referral (`KDC_ERR_WRONG_REALM`, answered to canonicalized or enterprise names) may send
        /// initial credentials to, besides the realm of the name asked for; a referral elsewhere fails with
        /// `KerberosError.Reason.unknownPrincipal` before any message goes there. nil follows referrals to any
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
    /// Keyed by the service and the realm's bytes: `String` equality would give `\u{212A}RB5.TEST` (KELVIN SIGN) the
    /// KDCs of `KRB5.TEST`.
    private let locations = Locked<[[UInt8]: (location: ResolvedLocation, expires: NIODeadline)]>([:])
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

    /// Runs `body` with a session of a one-shot client (``init(oneShotOn:context:configuration:)``) on the calling
    /// thread, which is the client's event loop and worker until `body` has returned; returns what `body` returned.
    ///
    /// > Warning: Blocks the calling thread for the whole login; never call from Swift's cooperative pool or an
    /// > event loop.
    @available(*, noasync, message: "blocks the calling thread for the whole login")
    package static func withOneShotSession<T: Sendable>(context: Context, configuration: Configuration,
                                                        _ body: @escaping @Sendable (KerberosSession) async -> T) -> T {
        let result = Locked<T?>(nil)
        MultiThreadedEventLoopGroup.withCurrentThreadAsEventLoop { loop in
            let client = KerberosClient(oneShotOn: loop, context: context, configuration: configuration)
            client.startSession { session in
                let value = await body(session)
                result.withLock { $0 = value }
                await client.shutdown()
                loop.shutdownGracefully { _ in }
            }
        }
        // The loop ends only once the task above has stored its value and shut the loop down.
        guard let value = result.withLock({ $0 }) else { preconditionFailure("the one-shot loop ended before its login") }
        return value
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
        transport.closeIdleSockets()
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    /// ``shutdown()`` for synchronous callers: blocks the calling thread (not the cooperative pool's work: it
    /// needs no task to run) until the threads have stopped.
    ///
    /// > Warning: Blocks; never call from an event loop of this client.
    @available(*, noasync, message: "blocks the calling thread; use 'await shutdown()'")
    package func shutdownBlocking() {
        for worker in workers { worker.shutdownBlocking() }
        transport.closeIdleSockets()
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
    /// every `InitialCredentialsOptions` member, a `Responder` or `Prompter` (they run on the worker during
    /// a step; a prompter that waits on a person holds that worker, so prefer the responder's replay), an output
    /// cache, a service other than `krbtgt`.
    public func initialCredentials(verification: VerificationRequest? = nil, timeout: Duration? = nil,
                                   _ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> TicketInfo {
        try await login(verification: verification, timeout: timeout, setup)
    }

    private func login(verification: VerificationRequest?, timeout: Duration?, _ setup: @escaping @Sendable (Context) throws -> InitialCredentialsSetup) async throws(KerberosError) -> TicketInfo {
        try await withSession(timeout: timeout) { session throws(KerberosError) -> TicketInfo in
            let credentials = try await session.initialCredentials(try session.onWorker(setup))
            var verified = false
            if let verification {
                verified = try await session.verify(credentials, options: try session.onWorker { context in try verification.make(in: context) })
            }
            return TicketInfo(credentials, verified: verified)
        }
    }

    // MARK: Sessions (for LoginService)

    /// A login on the next worker (round robin) under one deadline.
    private func session(timeout: Duration?) -> KerberosSession {
        let index = nextWorker.withLock { next in
            defer { next = (next + 1) % workers.count }
            return next
        }
        let worker = workers[index]
        let timeout = timeout ?? configuration.loginTimeout
        // An inline worker runs on the loop's thread, which takes the login's jobs through the loop's queue.
        let executor: any TaskExecutor = worker.threadCount == 0 ? self.executor : worker
        return KerberosSession(client: self, worker: worker, executor: executor, deadline: .now() + .nanoseconds(timeout.nanoseconds), timeout: timeout)
    }

    /// Runs `body` with a new session, on its worker: the login's krb5 work runs in `body` directly, and only its KDC
    /// messages leave the worker (``KerberosSession``).
    package func withSession<T: Sendable, Failure: Error>(timeout: Duration? = nil, _ body: (KerberosSession) async throws(Failure) -> T) async throws(Failure) -> T {
        let session = self.session(timeout: timeout)
        return try await withTaskExecutorPreference(session.executor) { () async throws(Failure) -> T in try await body(session) }
    }

    /// Starts `body` with a new session in a task of its own on the session's worker: for callers that complete
    /// through a callback (an event loop, a thread that must not wait on Swift's cooperative pool).
    package func startSession(timeout: Duration? = nil, _ body: @escaping @Sendable (KerberosSession) async -> Void) {
        let session = self.session(timeout: timeout)
        Task(executorPreference: session.executor) { await body(session) }
    }

    /// The realm's KDCs (or kpasswd servers) with their addresses, cached for five minutes, or for less when DNS
    /// gave them with a shorter TTL (not under ``DNSServiceRecords/minimumTTL``): krb5.conf read on the session's
    /// worker, SRV records and host names asked of DNS on the event loop (``DNSServiceRecords``), host names resolved
    /// concurrently. A location with no address is not cached.
    func location(of realm: String, role: ServerRole = .kdc, session: KerberosSession) async throws(KerberosError) -> ResolvedLocation {
        let now = NIODeadline.now()
        let key = Array("\(role.dnsService) \(realm)".utf8)
        if let cached = locations.withLock({ $0[key] }), cached.expires > now { return cached.location }
        var location = try session.onWorker { context in try KDCLocator.locate(role, realm: realm, context: context) }
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

/// The `Sendable` subset of `InitialCredentialsOptions` for ``KerberosClient``'s simple calls.
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

/// How ``KerberosClient`` verifies credentials: the `Sendable` form of `VerificationOptions`.
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
    public var authTime: KerberosTime
    /// When the ticket becomes valid.
    public var startTime: KerberosTime
    /// When it expires.
    public var endTime: KerberosTime
    /// Until when it can be renewed, if renewable.
    public var renewTill: KerberosTime?
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
