import ArgumentParser
import Kerberos
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
        discussion: "Every option can also be set in the TOML file given with --config (see docs/daemon.md); flags win.",
        version: KerberosVersion.current)

    @Option(help: "TOML configuration file.") var config: String?
    @Option(name: .customLong("sasl-socket"), help: "saslauthd-compatible socket path (Cyrus SASL's mux).") var saslSocket: String?
    @Option(help: "JSON-lines conversation socket path.") var socket: String?
    @Option(name: .customLong("socket-mode"), help: "Socket file mode, octal (default 0660).") var socketMode: String?
    @Option(name: .customLong("socket-group"), help: "Group for the socket files.") var socketGroup: String?
    @Option(name: .customLong("krb5-config"), help: "krb5.conf to use (repeatable).") var krb5Config: [String] = []
    @Option(help: "Keytab that verifies logins (default: krb5's default keytab).") var keytab: String?
    @Option(name: .customLong("server-principal"), help: "Service principal to verify against (default host/<this host>).") var serverPrincipal: String?
    @Option(help: "Realm for names without one.") var realm: String?
    @Option(help: "FAST armor: anonymous, keytab or none.") var armor: String?
    @Flag(name: .customLong("fast-required"), help: "Fail closed unless the exchange is armored.") var fastRequired = false
    @Option(help: "krb5 worker threads.") var workers: Int?
    @Option(name: .customLong("max-connections"), help: "Connections open at once.") var maxConnections: Int?
    @Option(name: .customLong("round-timeout"), help: "Seconds a person may take per round of questions.") var roundTimeout: String?
    @Option(name: .customLong("failure-floor"), help: "Minimum time before a failure is answered, such as 100ms.") var failureFloor: String?
    @Option(name: .customLong("metrics-listen"), help: "host:port for Prometheus /metrics.") var metricsListen: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.") var logLevel: String?
    @Option(name: .customLong("result-cache-ttl"), help: "Cache successful password logins this long, such as 30s (like saslauthd -c; off by default).") var resultCacheTTL: String?
    @Flag(name: .customLong("optimistic-preauth"), help: "Send the encrypted timestamp in the first request.") var optimisticPreauth = false
    @Flag(name: .customLong("insecure-skip-verification"), help: "INSECURE: accept credentials without verifying them against the keytab.")
    var insecureSkipVerification = false

    func run() async throws {
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
        let daemon = try VerifyDaemon(configuration: configuration, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: daemon)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    private func apply(to configuration: inout DaemonConfiguration) throws {
        if let saslSocket { configuration.saslSocket = saslSocket }
        if let socket { configuration.socket = socket }
        if let socketMode {
            guard let mode = UInt32(socketMode, radix: 8) else { throw ValidationError("--socket-mode \(socketMode) is not octal") }
            configuration.socketMode = mode
        }
        if let socketGroup { configuration.socketGroup = socketGroup }
        if !krb5Config.isEmpty { configuration.login.krb5 = Context.Configuration(files: krb5Config) }
        if let keytab { configuration.login.keytab = keytab }
        if let serverPrincipal { configuration.login.serverPrincipal = serverPrincipal }
        if let realm { configuration.login.realm = realm }
        if let armor {
            guard let source = LoginConfiguration.ArmorSource(rawValue: armor) else { throw ValidationError("--armor must be anonymous, keytab or none") }
            configuration.login.armor = source
        }
        if fastRequired { configuration.login.fastRequired = true }
        if optimisticPreauth { configuration.login.optimisticPreauth = true }
        if insecureSkipVerification { configuration.login.verify = false }
        if let workers { configuration.workers = workers }
        if let maxConnections { configuration.maxConnections = maxConnections }
        if let roundTimeout {
            guard let value = DaemonConfiguration.parseDuration(roundTimeout) else { throw ValidationError("--round-timeout \(roundTimeout) is not a duration") }
            configuration.roundTimeout = value
        }
        if let failureFloor {
            guard let value = DaemonConfiguration.parseDuration(failureFloor) else { throw ValidationError("--failure-floor \(failureFloor) is not a duration") }
            configuration.failureFloor = value
        }
        if let metricsListen { configuration.metricsListen = metricsListen }
        if let resultCacheTTL {
            guard let value = DaemonConfiguration.parseDuration(resultCacheTTL) else { throw ValidationError("--result-cache-ttl \(resultCacheTTL) is not a duration") }
            configuration.resultCacheTTL = value
        }
        if let logLevel {
            guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level \(logLevel) is not a log level") }
            configuration.logLevel = level
        }
    }
}
