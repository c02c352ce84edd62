import ArgumentParser
import enum Kerberos.KerberosVersion
import Logging
import LoginService
import ServiceLifecycle
import VerifyDaemon

/// `krb5-verifyd`: flags and the configuration file in, a running daemon out.
@main
struct VerifyDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "krb5-verifyd",
        abstract: "Verified Kerberos logins for local services: a drop-in for saslauthd -a kerberos5, plus a JSON-lines conversation for OTP, smart cards and expired passwords.",
        discussion: "Every option can also be set in the TOML file given with --config (see docs/daemon.md); flags win. Durations are seconds or values such as 250ms, 30s, 2m, 1h.",
        version: KerberosVersion.current)

    @Option(help: "TOML configuration file.") var config: String?

    // Listeners
    @Option(name: .customLong("sasl-socket"), help: "saslauthd-compatible socket path (Cyrus SASL's mux).") var saslSocket: String?
    @Option(help: "JSON-lines conversation socket path.") var socket: String?
    @Option(name: .customLong("http-socket"), help: "HTTP auth endpoint socket path (nginx auth_request, Caddy forward_auth; docs/web.md).") var httpSocket: String?
    @Option(name: .customLong("http-listen"), help: "HTTP auth endpoint on loopback TCP, host:port.") var httpListen: String?
    @Option(name: .customLong("http-realm"), help: "Realm named in the endpoint's Basic challenge (default Kerberos).") var httpRealm: String?
    @Option(name: .customLong("http-client-address-header"), help: "Header carrying the client's address from a trusted proxy (default X-Forwarded-For).")
    var httpClientAddressHeader: String?
    @Option(name: .customLong("http-trusted-uids"), parsing: .singleValue, help: "Peer uid on the HTTP socket whose client-address header is believed (repeatable).")
    var httpTrustedUIDs: [UInt32] = []
    @Option(name: .customLong("http-trusted-addresses"), parsing: .singleValue, help: "Peer address on the HTTP TCP listener whose client-address header is believed (repeatable).")
    var httpTrustedAddresses: [String] = []
    @Option(name: .customLong("socket-mode"), help: "Socket file mode, octal (default 0660).") var socketMode: String?
    @Option(name: .customLong("socket-group"), help: "Group (name or number) for the socket files.") var socketGroup: String?

    // Kerberos
    @Option(name: .customLong("krb5-config"), help: "krb5.conf to use (repeatable).") var krb5Config: [String] = []
    @Option(help: "Keytab that verifies logins (default: krb5's default keytab).") var keytab: String?
    @Option(name: .customLong("server-principal"), help: "Service principal to verify against (default host/<this host>).") var serverPrincipal: String?
    @Option(help: "Realm for names without one.") var realm: String?
    @Option(name: .customLong("allow-realm"), parsing: .singleValue, help: "A realm whose users may log in (repeatable; default: the default realm and the realms in krb5.conf).")
    var allowRealms: [String] = []
    @Option(name: .customLong("armor-principal"), help: "Keytab principal for keytab armor (default: the keytab's computer account NAME$, else its first entry).")
    var armorPrincipal: String?
    @Option(help: "FAST armor: anonymous, keytab or none.") var armor: String?
    @Flag(name: .customLong("fast-required"), inversion: .prefixedNo, help: "Fail closed unless the exchange is armored.") var fastRequired: Bool?
    @Option(name: .customLong("ticket-lifetime"), help: "Requested TGT lifetime.") var ticketLifetime: String?
    @Option(name: .customLong("login-timeout"), help: "Answer a login within this long, such as 6s; when no KDC has answered by then, the answer is kdc-unreachable (default 6s).") var loginTimeout: String?
    @Flag(name: .customLong("optimistic-preauth"), inversion: .prefixedNo, help: "Send the encrypted timestamp in the first request.") var optimisticPreauth: Bool?
    @Flag(name: .customLong("learned-preauth"), inversion: .prefixedNo, help: "Password-only logins reuse each principal's learnt enctype and salt for a one-exchange login (default on).")
    var learnedPreauth: Bool?
    @Flag(name: .customLong("direct-verification-ticket"), inversion: .prefixedNo, help: "Ask the AS directly for the verification ticket, skipping the TGS exchange (default on).")
    var directVerificationTicket: Bool?
    @Flag(name: .customLong("enterprise-names"), inversion: .prefixedNo, help: "Send user@suffix names (Active Directory UPNs) as enterprise names, canonicalized (kinit -E).")
    var enterpriseNames: Bool?
    @Flag(inversion: .prefixedNo, help: "Ask the KDC to canonicalize the client name (kinit -C).") var canonicalize: Bool?
    @Option(name: .customLong("result-cache-ttl"), help: "Cache successful password logins this long, such as 30s (like saslauthd -c; off by default).") var resultCacheTTL: String?
    @Flag(name: .customLong("insecure-skip-verification"), help: "INSECURE: accept credentials without verifying them against the keytab.")
    var insecureSkipVerification = false

    // Capacity and limits
    @Option(help: "krb5 worker threads, one krb5 context each.") var workers: Int?
    @Option(name: .customLong("max-connections"), help: "Connections open at once.") var maxConnections: Int?
    @Option(name: .customLong("read-timeout"), help: "Time for a whole request to arrive.") var readTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: "Longest silence while a request is awaited.") var idleTimeout: String?
    @Option(name: .customLong("round-timeout"), help: "Time a person may take per round of questions.") var roundTimeout: String?
    @Option(name: .customLong("max-parked-conversations"), help: "Conversations waiting for answers at once.") var maxParkedConversations: Int?

    // Abuse
    @Option(name: .customLong("failure-floor"), help: "Minimum time before a failure is answered, such as 100ms.") var failureFloor: String?
    @Option(name: .customLong("throttle-failures"), help: "Failures within the window before a principal or peer is refused.") var throttleFailures: Int?
    @Option(name: .customLong("throttle-window"), help: "Window in which failures are counted.") var throttleWindow: String?
    @Option(name: .customLong("throttle-backoff"), help: "First refusal period; it doubles.") var throttleBackoff: String?
    @Option(name: .customLong("throttle-max-backoff"), help: "Longest refusal period.") var throttleMaxBackoff: String?
    @Option(name: .customLong("throttle-penalty"), help: "Delay of the first refused guess's answer; it doubles per refusal (default 1s).") var throttlePenalty: String?
    @Option(name: .customLong("allowed-uids"), parsing: .singleValue, help: "Peer uid allowed to connect (repeatable; default anyone).") var allowedUIDs: [UInt32] = []
    @Option(name: .customLong("allowed-gids"), parsing: .singleValue, help: "Peer gid allowed to connect (repeatable; default anyone).") var allowedGIDs: [UInt32] = []

    // Observability
    @Option(name: .customLong("metrics-listen"), help: "host:port for Prometheus /metrics (off by default).") var metricsListen: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.") var logLevel: String?

    func run() async throws {
        // Before anything holds a secret: no core dumps, and the descriptors' soft limit raised.
        let process = ProcessResources.harden()
        var configuration = DaemonConfiguration()
        do {
            if let config { try configuration.load(tomlFile: config) }
            try apply(to: &configuration)
            try configuration.validate()
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "krb5-verifyd")
        logger.info("process limits", metadata: [
            "dumpable": .stringConvertible(process.dumpable), "core": .stringConvertible(process.coreLimit.soft),
            "nofile": .stringConvertible(process.descriptorLimit.soft), "nofile_hard": .stringConvertible(process.descriptorLimit.hard),
        ])
        if process.dumpable != 0 || process.coreLimit.soft != 0 {
            logger.warning("core dumps could not be turned off: a dump would hold password verifiers", metadata: ["process": .string(process.description)])
        }
        let daemon = try VerifyDaemon(configuration: configuration, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: daemon)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    private func duration(_ text: String?, _ flag: String) throws -> Duration? {
        guard let text else { return nil }
        guard let value = DaemonConfiguration.parseDuration(text) else { throw ValidationError("--\(flag) \(text) is not a duration") }
        return value
    }

    private func apply(to configuration: inout DaemonConfiguration) throws {
        if let saslSocket { configuration.saslSocket = saslSocket }
        if let socket { configuration.socket = socket }
        if let httpSocket { configuration.httpSocket = httpSocket }
        if let httpListen { configuration.httpListen = httpListen }
        if let httpRealm { configuration.httpRealm = httpRealm }
        if let httpClientAddressHeader { configuration.httpClientAddressHeader = httpClientAddressHeader }
        if !httpTrustedUIDs.isEmpty { configuration.httpTrustedUIDs = httpTrustedUIDs }
        if !httpTrustedAddresses.isEmpty { configuration.httpTrustedAddresses = httpTrustedAddresses }
        if let socketMode {
            guard let mode = UInt32(socketMode, radix: 8), mode <= 0o777 else { throw ValidationError("--socket-mode \(socketMode) is not octal") }
            configuration.socketMode = mode
        }
        if let socketGroup { configuration.socketGroup = socketGroup }
        if !krb5Config.isEmpty { configuration.login.krb5 = .init(files: krb5Config) }
        if let keytab { configuration.login.keytab = keytab }
        if let serverPrincipal { configuration.login.serverPrincipal = serverPrincipal }
        if let realm { configuration.login.realm = realm }
        if !allowRealms.isEmpty { configuration.login.realms = allowRealms }
        if let armorPrincipal { configuration.login.armorPrincipal = armorPrincipal }
        if let armor {
            guard let source = LoginConfiguration.ArmorSource(rawValue: armor) else { throw ValidationError("--armor must be anonymous, keytab or none") }
            configuration.login.armor = source
        }
        if let fastRequired { configuration.login.fastRequired = fastRequired }
        if let optimisticPreauth { configuration.login.optimisticPreauth = optimisticPreauth }
        if let learnedPreauth { configuration.login.learnedPreauth = learnedPreauth }
        if let directVerificationTicket { configuration.login.directVerificationTicket = directVerificationTicket }
        if let enterpriseNames { configuration.login.enterpriseNames = enterpriseNames }
        if let canonicalize { configuration.login.canonicalize = canonicalize }
        if let value = try duration(ticketLifetime, "ticket-lifetime") { configuration.login.ticketLifetime = value }
        if let value = try duration(loginTimeout, "login-timeout") { configuration.login.loginTimeout = value }
        if let value = try duration(resultCacheTTL, "result-cache-ttl") { configuration.resultCacheTTL = value }
        if insecureSkipVerification { configuration.login.verify = false }
        if let workers { configuration.workers = workers }
        if let maxConnections { configuration.maxConnections = maxConnections }
        if let value = try duration(readTimeout, "read-timeout") { configuration.readTimeout = value }
        if let value = try duration(idleTimeout, "idle-timeout") { configuration.idleTimeout = value }
        if let value = try duration(roundTimeout, "round-timeout") { configuration.roundTimeout = value }
        if let maxParkedConversations { configuration.maxParkedConversations = maxParkedConversations }
        if let value = try duration(failureFloor, "failure-floor") { configuration.failureFloor = value }
        if let throttleFailures { configuration.throttleFailures = throttleFailures }
        if let value = try duration(throttleWindow, "throttle-window") { configuration.throttleWindow = value }
        if let value = try duration(throttleBackoff, "throttle-backoff") { configuration.throttleBackoff = value }
        if let value = try duration(throttleMaxBackoff, "throttle-max-backoff") { configuration.throttleMaxBackoff = value }
        if let value = try duration(throttlePenalty, "throttle-penalty") { configuration.throttlePenalty = value }
        if !allowedUIDs.isEmpty { configuration.allowedUIDs = allowedUIDs }
        if !allowedGIDs.isEmpty { configuration.allowedGIDs = allowedGIDs }
        if let metricsListen { configuration.metricsListen = metricsListen }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level \(logLevel) is not a log level") }
            configuration.logLevel = level
        }
    }
}
