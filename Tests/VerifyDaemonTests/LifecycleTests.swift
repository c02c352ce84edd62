import Foundation
import Kerberos
import Logging
import LoginProtocol
import LoginService
import ServiceLifecycle
import ServiceLifecycleTestKit
import TestRealm
import Testing
import VerifyDaemon

/// `VerifyDaemon` as a swift-service-lifecycle `Service`, in process.
@Suite("krb5-verifyd: service lifecycle", .onTestThreads)
struct LifecycleTests {
    static func daemon(_ realm: TestRealm, floor: Duration = .zero) throws -> VerifyDaemon {
        var configuration = DaemonConfiguration()
        configuration.saslSocket = SocketClient.temporaryPath("life")
        configuration.login = LoginConfiguration(krb5: .files(realm.configFile), keytab: realm["HOST_KEYTAB"],
                                                 serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: .none)
        configuration.login.loginTimeout = TestRealm.loginTimeout
        configuration.failureFloor = floor
        return try VerifyDaemon(configuration: configuration, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
    }

    /// Waits until the listener accepts connections (the socket file appears at bind, before listen).
    static func waitForSocket(_ path: String) async throws {
        try await expectEventually("\(path) accepts connections") {
            FileManager.default.fileExists(atPath: path) && (try? SocketClient(path: path)) != nil
        }
    }

    @Test("graceful shutdown: run() stops accepting, answers the failure waiting out the floor, removes the socket and returns")
    func graceful() async throws {
        let realm = try TestRealm.shared()
        let daemon = try Self.daemon(realm, floor: DaemonFixture.shutdownTestFloor)
        let path = try #require(daemon.configuration.saslSocket)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await daemon.run() }
                try await Self.waitForSocket(path)
                let client = try SocketClient(path: path)
                client.send(SaslauthdRequest(login: realm["USER"], password: Secret("Wrong-Passw0rd"), service: "imap", realm: "", clientAddress: "").encoded())
                try await expectEventually("the request is being answered") { daemon.counts.inFlight + daemon.counts.delayedReplies > 0 }
                trigger.triggerGracefulShutdown()
                #expect(try SaslauthdReply(decoding: client.readAll()) == .no("authentication failed"))
                try await group.waitForAll()
            }
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        await daemon.stopped()  // returns at once once stopped
    }

    @Test("cancellation ends run(): the socket is removed and the daemon stops")
    func cancellation() async throws {
        let realm = try TestRealm.shared()
        let daemon = try Self.daemon(realm)
        let path = try #require(daemon.configuration.saslSocket)
        let task = Task { try await daemon.run() }
        try await Self.waitForSocket(path)
        #expect(try SaslauthdReply(decoding: {
            let client = try SocketClient(path: path)
            client.send(SaslauthdRequest(login: realm["USER"], password: Secret(realm["USER_PASSWORD"]), service: "imap", realm: "", clientAddress: "").encoded())
            return client.readAll()
        }()) == .ok)
        task.cancel()
        // No time bound: beside the other suites, whose blocking clients occupy the cooperative pool, even a
        // prompt return can take seconds to be observed here.
        try await task.value
        #expect(!FileManager.default.fileExists(atPath: path))
        await daemon.stopped()
    }

    /// A started daemon with one wrong password's reply waiting out `floor`, and the client waiting for it.
    static func startedWithDelayedReply(_ realm: TestRealm, floor: Duration) async throws -> (VerifyDaemon, SocketClient) {
        let daemon = try Self.daemon(realm, floor: floor)
        let path = try #require(try await daemon.start().saslSocket)
        let client = try SocketClient(path: path)
        client.send(SaslauthdRequest(login: realm["USER"], password: Secret("Wrong-Passw0rd"), service: "imap", realm: "", clientAddress: "").encoded())
        try await expectEventually("the request is being answered") { daemon.counts.inFlight + daemon.counts.delayedReplies > 0 }
        return (daemon, client)
    }

    @Test("the drain ends when the last delayed reply is out, not at the grace deadline")
    func drainEndsWithLastReply() async throws {
        let realm = try TestRealm.shared()
        let (daemon, client) = try await Self.startedWithDelayedReply(realm, floor: DaemonFixture.shutdownTestFloor)
        let start = ContinuousClock.now
        await daemon.shutdown(grace: .seconds(90))
        #expect(ContinuousClock.now - start < .seconds(60), "resumed by the reply, long before the 90 s grace")
        #expect(try SaslauthdReply(decoding: client.readAll()) == .no("authentication failed"), "the delayed reply went out first")
    }

    @Test("a second shutdown without grace cuts the first one's drain short")
    func secondShutdownShortensTheDrain() async throws {
        let realm = try TestRealm.shared()
        let (daemon, client) = try await Self.startedWithDelayedReply(realm, floor: .seconds(60))
        let start = ContinuousClock.now
        let first = Task { await daemon.shutdown(grace: .seconds(120)) }
        try await Task.sleep(for: .milliseconds(200))
        await daemon.shutdown(grace: .zero)
        await first.value
        #expect(ContinuousClock.now - start < .seconds(45), "well before the 60 s floor and the 120 s grace")
        await daemon.stopped()
        _ = client
    }

    @Test("stopped() returns once shutdown has finished, also when run() never waited")
    func stoppedAfterShutdown() async throws {
        let realm = try TestRealm.shared()
        let daemon = try Self.daemon(realm)
        try await daemon.start()
        await daemon.shutdown()
        await daemon.stopped()
    }
}
