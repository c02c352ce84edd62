import Foundation
import Kerberos
import Logging
import LoginProtocol
import LoginService
import TestRealm
import NIOCore
import Testing
@testable import VerifyDaemon

/// A daemon started in process on sockets of its own, against the live test realm.
struct DaemonFixture {
    let realm: TestRealm
    let daemon: VerifyDaemon
    let endpoints: VerifyDaemon.Endpoints
    let logs: LogCapture

    /// The failure floor of the shutdown tests: the reply is pending at least this long after the request arrives,
    /// the window in which a test must see it in flight or delayed and start the shutdown. Under a loaded CI run
    /// a 700 ms window passed between two of a test's polls, and a 3 s one before the loaded exchange had even ended
    /// (fifty suites starting at once on two cores): the floor counts from the request's arrival.
    static let shutdownTestFloor = Duration.seconds(20)

    var saslSocket: String { endpoints.saslSocket! }
    var socket: String { endpoints.socket! }

    /// The settings every test daemon starts from: sockets of its own, the realm's krb5.conf, keytab and service
    /// principal, logins bounded by ``TestRealm/loginTimeout``, timers no client meets on a loaded machine, no throttle
    /// a test meets unless it sets one, every log line.
    static func configuration(krb5: String, keytab: String, serverPrincipal: String, armor: LoginConfiguration.ArmorSource) -> DaemonConfiguration {
        var configuration = DaemonConfiguration()
        configuration.saslSocket = SocketClient.temporaryPath("sasl")
        configuration.socket = SocketClient.temporaryPath("conv")
        configuration.login = LoginConfiguration(krb5: .files(krb5), keytab: keytab, serverPrincipal: serverPrincipal, armor: armor)
        configuration.login.loginTimeout = TestRealm.loginTimeout
        configuration.workers = 2
        // A client's request is never cut by a timer on a loaded machine: the tests of the timers set their own
        // (SaslauthdListenerTests.slowClients, ConversationListenerTests.idleTimeout) or run on a virtual clock (ListenerTimerTests).
        configuration.readTimeout = TestRealm.loginTimeout
        configuration.idleTimeout = TestRealm.loginTimeout
        configuration.failureFloor = .milliseconds(20)
        configuration.throttleFailures = 1000
        configuration.logLevel = .trace
        return configuration
    }

    /// Starts a daemon with `configuration`, its logs captured, for `realm`.
    static func start(_ configuration: DaemonConfiguration, realm: TestRealm,
                      clock: @escaping @Sendable () -> NIODeadline = { .now() }) async throws -> DaemonFixture {
        let logs = LogCapture()
        let daemon = try VerifyDaemon(configuration: configuration, logger: Logger(label: "test") { _ in logs.handler() }, clock: clock)
        let endpoints = try await daemon.start()
        return DaemonFixture(realm: realm, daemon: daemon, endpoints: endpoints, logs: logs)
    }

    /// `clock`: the time the throttles and the password verifiers read (a test holds it still); replies are still
    /// delayed in real time.
    static func start(configure: (inout DaemonConfiguration, TestRealm) -> Void = { _, _ in },
                      clock: @escaping @Sendable () -> NIODeadline = { .now() }) async throws -> DaemonFixture {
        // Up to a thousand parked conversations plus their clients live in this one process.
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, 8192))
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let realm = try TestRealm.shared()
        var configuration = configuration(krb5: realm.configFile, keytab: realm["HOST_KEYTAB"], serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: .anonymous)
        configure(&configuration, realm)
        return try await start(configuration, realm: realm, clock: clock)
    }

    func stop() async { await daemon.shutdown() }

    /// Runs `body` with this daemon, then stops it however `body` ends.
    func run(_ body: (DaemonFixture) async throws -> Void) async throws {
        do {
            try await body(self)
        } catch {
            await stop()
            throw error
        }
        await stop()
    }

    /// Runs `body` with a daemon that is stopped however `body` ends.
    static func with(configure: (inout DaemonConfiguration, TestRealm) -> Void = { _, _ in }, clock: @escaping @Sendable () -> NIODeadline = { .now() },
                     _ body: (DaemonFixture) async throws -> Void) async throws {
        try await start(configure: configure, clock: clock).run(body)
    }

    /// The first refusal's penalty of the throttle suites (1 s in production), so that they stay short.
    static let throttleTestPenalty = Duration.milliseconds(250)

    /// Runs `body` with a daemon that has the production throttle limits (the fixture's default is lenient for the
    /// other suites), a penalty of ``throttleTestPenalty``, and no armor; `configure` may change any of it.
    static func withThrottle(clock: (@Sendable () -> NIODeadline)? = nil,
                             _ configure: (inout DaemonConfiguration, TestRealm) -> Void = { _, _ in },
                             _ body: (DaemonFixture) async throws -> Void) async throws {
        // By default the throttles' time stands still: on a loaded machine a test may outlast the 60 s window, which
        // would let a guess through that the test expects refused. (Replies are still delayed in real time.)
        let frozen = NIODeadline.now()
        let clock = clock ?? { frozen }
        try await with(configure: { configuration, realm in
            configuration.throttleFailures = DaemonConfiguration().throttleFailures
            configuration.throttlePenalty = throttleTestPenalty
            configuration.login.armor = .none
            configure(&configuration, realm)
        }, clock: clock, body)
    }

    /// One saslauthd-protocol request with our own client.
    func sasl(_ login: String, _ password: String, realm: String = "", fields: Int = 5, address: String = "192.0.2.7") throws -> SaslauthdReply {
        let client = try SocketClient(path: saslSocket)
        client.send(SaslauthdRequest(login: login, password: Secret(password), service: "imap", realm: realm, clientAddress: address).encoded(fieldCount: fields))
        return try SaslauthdReply(decoding: client.readAll())
    }

    /// Opens a conversation with a login request.
    func converse(_ principal: String, password: String? = nil, address: String? = nil) throws -> Conversation {
        let client = try SocketClient(path: socket)
        client.send(ClientMessage.login(LoginRequest(principal: principal, password: password.map(Secret.init), clientAddress: address)).encodedLine)
        return Conversation(client: client)
    }
}

/// The client end of one JSON-lines conversation.
struct Conversation {
    let client: SocketClient

    /// The next message that is not `info`.
    func next() throws -> ServerMessage {
        while let line = client.readLine() {
            let message = try ServerMessage.decode(Array(line.utf8))
            if case .info = message { continue }
            return message
        }
        throw TestRealmError("the daemon closed the conversation")
    }

    func answer(_ id: Int, _ answers: LoginAnswers) {
        client.send(ClientMessage.answers(id: id, answers).encodedLine)
    }

    func result() throws -> LoginResult {
        guard case .result(let result) = try next() else { throw TestRealmError("expected a result") }
        return result
    }
}

/// Collects every log line at every level, to prove secrets never appear.
final class LogCapture: Sendable {
    private let lines = Locked<[String]>([])
    var text: String { lines.withLock { $0.joined(separator: "\n") } }
    /// Every entry so far, one string each.
    var entries: [String] { lines.withLock { $0 } }
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    func handler() -> some LogHandler { CapturingHandler(capture: self) }

    struct CapturingHandler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.append("\(event.level) \(event.message) \(event.metadata ?? [:]) \(metadata)")
        }
    }
}
