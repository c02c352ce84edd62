import Foundation
@testable import LoginService
import Kerberos
import LoginProtocol
import TestRealm
import Testing
import VerifyDaemon

@Suite("krb5-verifyd: the saslauthd-compatible listener", .onTestThreads)
struct SaslauthdListenerTests {
    @Test("Cyrus testsaslauthd gets OK for the right password and NO for a wrong one")
    func testsaslauthd() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            let ok = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", realm["USER"], "-p", realm["USER_PASSWORD"], "-s", "imap"])
            #expect(ok.output.contains(#"0: OK "Success.""#), "\(ok.output)")
            let no = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", realm["USER"], "-p", "wrong-password"])
            #expect(no.output.contains(#"0: NO "authentication failed""#), "\(no.output)")
            let withRealm = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", realm["USER"], "-r", realm.realm, "-p", realm["USER_PASSWORD"]])
            #expect(withRealm.output.contains("OK"))
        }
    }

    @Test("our client: five-field and four-field requests, realm mapping")
    func ownClient() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok)
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"], fields: 4) == .ok)
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"], realm: realm.realm) == .ok)
            #expect(try fixture.sasl("\(realm["USER"])@\(realm.realm)", realm["USER_PASSWORD"], realm: "IGNORED.REALM") == .ok)
            #expect(try fixture.sasl(realm["USER"], "nope", fields: 4) == .no("authentication failed"))
            #expect(try fixture.sasl(realm["DISABLED_USER"], realm["DISABLED_PASSWORD"]) == .no("account disabled"))
            #expect(try fixture.sasl("no-such-user", "x") == .no("authentication failed"))
        }
    }

    @Test("malformed frames get NO invalid request, and a good login still works afterwards")
    func badInput() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            func raw(_ bytes: [UInt8], close: Bool = false) throws -> [UInt8] {
                let client = try SocketClient(path: fixture.saslSocket)
                client.send(bytes)
                if close { shutdown(client.fd, Int32(SHUT_WR)) }
                return client.readAll()
            }
            let invalid = SaslauthdReply.no("invalid request").encoded
            #expect(try raw([0xFF, 0xFF, 0x41]) == invalid, "oversized length")
            #expect(try raw([0, 1, 0xFF] + [0, 1, 0x41, 0, 0, 0, 0, 0, 0]) == invalid, "non-UTF-8 login")
            #expect(try raw([0, 0, 0, 1, 0x41, 0, 0, 0, 0, 0, 0]) == invalid, "zero-length login")
            #expect(try raw([0, 1, 0x41, 0, 0, 0, 0, 0, 0, 0, 0]) == SaslauthdReply.no("authentication failed").encoded, "zero-length password")
            #expect(try raw([0, 5, 0x41], close: true).isEmpty, "truncated frame then close: the connection closes without a reply")
            #expect(try raw(Array(repeating: 0x41, count: 3000)) == invalid, "garbage")
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok)
            #expect(fixture.daemon.counts.inFlight == 0)
        }
    }

    @Test("1,000 idle connections do not stop a good login: it is answered while they stay open")
    func idleConnections() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.maxConnections = 1100 }) { fixture throws in
            let idle = try (0..<1000).map { _ in try SocketClient(path: fixture.saslSocket) }
            // Other suites load the machine at the same time: the event loop accepts them all when it gets to them.
            try await expectEventually("1,000 connections accepted") { fixture.daemon.counts.connections >= 1000 }
            let start = ContinuousClock.now
            #expect(try fixture.sasl(fixture.realm["USER"], fixture.realm["USER_PASSWORD"]) == .ok)
            let latency = ContinuousClock.now - start
            // A daemon that served its connections in turn, or whose reads blocked, would answer only once the idle
            // ones were cut at the 60 s idle_timeout. Alone a login takes a few milliseconds; how long it takes on a
            // loaded machine is for the benchmarks, not for this bound.
            #expect(latency < .seconds(30), "a login beside 1,000 idle connections took \(latency)")
            #expect(fixture.daemon.counts.connections >= 1000, "the idle connections were still open")
            _ = idle
        }
    }

    @Test("a silent client and a truncated frame are answered NO timeout by the listener's timers (their exact bounds: ListenerTimerTests)")
    func slowClients() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.idleTimeout = .milliseconds(300)
            configuration.readTimeout = .milliseconds(600)
        }) { fixture throws in
            let silent = try SocketClient(path: fixture.saslSocket)
            let start = ContinuousClock.now
            #expect(try SaslauthdReply(decoding: silent.readAll()) == .no("timeout"))
            // A timer never fires early, however loaded the machine; how late it fires is the machine's business.
            #expect(ContinuousClock.now - start >= .milliseconds(250))

            let truncated = try SocketClient(path: fixture.saslSocket)
            truncated.send([0, 5, 0x41])
            #expect(try SaslauthdReply(decoding: truncated.readAll()) == .no("timeout"), "a truncated frame times out")
            try await expectEventually("both connections were counted out") { fixture.daemon.counts.connections == 0 }
        }
    }

    /// The acceptor answers a request it finds whole; one not all there yet goes to the event loop with what was read.
    @Test("a request whole on arrival, one sent after a pause in two pieces, and a client that leaves without a word: answered, answered, counted out")
    func acceptedAndHandedOver() async throws {
        // Not a test of the timeouts: the pauses below may stretch on a loaded machine, and the fixture's timeouts are
        // as long as a login's.
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            let request = SaslauthdRequest(login: realm["USER"], password: Secret(realm["USER_PASSWORD"]), service: "imap", realm: "",
                                           clientAddress: "192.0.2.9").encoded()
            let whole = try SocketClient(path: fixture.saslSocket)
            whole.send(request)
            #expect(try SaslauthdReply(decoding: whole.readAll()) == .ok)

            let late = try SocketClient(path: fixture.saslSocket)
            try await Task.sleep(for: .milliseconds(300))
            late.send(Array(request.prefix(5)))
            try await Task.sleep(for: .milliseconds(100))
            late.send(Array(request.dropFirst(5)))
            #expect(try SaslauthdReply(decoding: late.readAll()) == .ok)

            _ = try SocketClient(path: fixture.saslSocket)  // closed at once, before sending anything
            try await expectEventually("the silent client was counted out") { fixture.daemon.counts.connections == 0 }
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok)
        }
    }

    @Test("a connection limit refuses the excess and serves the rest")
    func connectionLimit() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.maxConnections = 5 }) { fixture throws in
            let held = try (0..<5).map { _ in try SocketClient(path: fixture.saslSocket) }
            try await expectEventually("5 connections accepted") { fixture.daemon.counts.connections >= 5 }
            #expect(fixture.daemon.counts.connections == 5)
            let refused = try SocketClient(path: fixture.saslSocket)
            #expect(refused.readAll().isEmpty, "the sixth connection is closed at once")
            _ = held
        }
    }

    @Test("credentials from a rogue KDC of the same realm are refused")
    func rogueKDC() async throws {
        try await DaemonFixture.with(configure: { configuration, realm in
            configuration.login.krb5 = .files(realm["KRB5_ROGUE_CONFIG_FILE"])
            configuration.login.armor = .none
        }) { fixture throws in
            #expect(try fixture.sasl(fixture.realm["USER"], fixture.realm["ROGUE_PASSWORD"]) == .no("verification failed"))
            let conversation = try fixture.converse(fixture.realm["USER"], password: fixture.realm["ROGUE_PASSWORD"])
            #expect(try conversation.result().failure == .verificationFailed)
        }
    }

    @Test("repeated failures throttle the principal; others are still served; failures never answer faster than the floor")
    func throttleAndFloor() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.throttleFailures = 3
            configuration.throttleBackoff = .seconds(30)
            configuration.failureFloor = .milliseconds(300)
        }) { fixture throws in
            let realm = fixture.realm
            let victim = try realm.addPrincipal(prefix: "victim", password: "Right-Passw0rd")
            for _ in 0..<3 {
                let start = Date()
                #expect(try fixture.sasl(victim, "guess", address: "198.51.100.1") == .no("authentication failed"))
                #expect(Date().timeIntervalSince(start) >= 0.29)
            }
            #expect(try fixture.sasl(victim, "Right-Passw0rd", address: "198.51.100.2") == .no("authentication failed"), "throttled: even the right password is refused for now")
            #expect(fixture.logs.text.contains("throttling engaged"))
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"], address: "192.0.2.99") == .ok, "another principal from another address is served")
        }
    }

    @Test("shutdown lets a failure that is waiting out the floor reply before the connection closes")
    func shutdownAnswersDelayedFailure() async throws {
        let fixture = try await DaemonFixture.start { configuration, _ in configuration.failureFloor = DaemonFixture.shutdownTestFloor }
        let client = try SocketClient(path: fixture.saslSocket)
        let started = Date()
        client.send(SaslauthdRequest(login: fixture.realm["USER"], password: Secret("Wrong-Passw0rd"), service: "imap", realm: "", clientAddress: "").encoded())
        try await expectEventually("the request is being answered") { fixture.daemon.counts.inFlight + fixture.daemon.counts.delayedReplies > 0 }
        await fixture.stop()
        #expect(try SaslauthdReply(decoding: client.readAll()) == .no("authentication failed"))
        #expect(Date().timeIntervalSince(started) >= Double(DaemonFixture.shutdownTestFloor.components.seconds) - 0.05, "the floor held during shutdown")
        #expect(!FileManager.default.fileExists(atPath: fixture.saslSocket), "the socket file is gone")
        await fixture.daemon.stopped()
    }

    @Test("metrics count requests by outcome")
    func metrics() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.metricsListen = "127.0.0.1:0" }) { fixture throws in
            _ = try fixture.sasl(fixture.realm["USER"], fixture.realm["USER_PASSWORD"])
            _ = try fixture.sasl(fixture.realm["USER"], "bad")
            let address = try #require(fixture.endpoints.metrics)
            let output = try TestRealm.run(["curl", "-s", "http://\(address)/metrics"]).output
            #expect(output.contains(#"krb5_verifyd_requests_total{listener="sasl",outcome="ok"} 1"#), "\(output)")
            #expect(output.contains(#"krb5_verifyd_requests_total{listener="sasl",outcome="bad-credentials"} 1"#))
            #expect(output.contains("krb5_verifyd_request_duration_seconds_bucket"))
        }
    }
}

@Suite("krb5-verifyd: the opt-in result cache", .onTestThreads)
struct ResultCacheTests {
    @Test("a repeated right password is answered from the cache; any failure for the principal drops its entries")
    func cache() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.resultCacheTTL = .seconds(60) }) { fixture throws in
            let realm = fixture.realm
            let user = try realm.addPrincipal(prefix: "cached", password: "Cache-Passw0rd")
            #expect(try fixture.sasl(user, "Cache-Passw0rd") == .ok)
            #expect(fixture.daemon.service.resultCache?.count == 1)
            // The password changes behind the cache's back: the cached success still answers (the documented trade-off)…
            try realm.kadmin("cpw", "-pw", "Changed-Passw0rd", user)
            #expect(try fixture.sasl(user, "Cache-Passw0rd") == .ok)
            // …until a failure for the principal, which drops its entries.
            #expect(try fixture.sasl(user, "wrong") == .no("authentication failed"))
            #expect(fixture.daemon.service.resultCache?.count == 0)
            #expect(try fixture.sasl(user, "Cache-Passw0rd") == .no("authentication failed"))
            #expect(try fixture.sasl(user, "Changed-Passw0rd") == .ok)
        }
    }
}

@Suite("krb5-verifyd: fewer KDC exchanges per login", .onTestThreads)
struct LeanLoginTests {
    /// The KDC's requests for `principal` after the first `skip` log lines, once at least `atLeast` of them
    /// are there (the KDC writes its log line after answering).
    static func requests(_ realm: TestRealm, for principal: String, after skip: Int, atLeast: Int) async throws -> [Substring] {
        var lines: [Substring] = []
        // Up to the login timeout: on a loaded machine the KDC may write its line late.
        for _ in 0..<Int(TestRealm.loginTimeout.components.seconds * 10) {
            lines = try realm.kdcLog().dropFirst(skip).filter { $0.contains(" \(principal)@\(realm.realm) ") }
            if lines.count >= atLeast { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return lines
    }

    @Test("a password-only login of a preauth principal is one AS exchange once its etype info is learnt, with no TGS exchange; a wrong password counts one failure")
    func oneExchange() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            let user = try realm.addPrincipal(prefix: "lean", password: "Lean-Passw0rd", attributes: ["+requires_preauth"])
            let start = try realm.kdcLog().count
            #expect(try fixture.sasl(user, "Lean-Passw0rd") == .ok)
            var lines = try await Self.requests(realm, for: user, after: start, atLeast: 2)
            #expect(lines.count == 2, "PREAUTH_REQUIRED, then the login: \(lines)")
            #expect(lines.allSatisfy { $0.contains("AS_REQ") }, "\(lines)")
            #expect(lines.last?.contains("ISSUE") == true && lines.last?.contains("for host/") == true, "the verification ticket straight from the AS: \(lines)")

            let second = try realm.kdcLog().count
            #expect(try fixture.sasl(user, "Lean-Passw0rd", address: "192.0.2.60") == .ok)
            lines = try await Self.requests(realm, for: user, after: second, atLeast: 1)
            #expect(lines.count == 1 && lines[0].contains("AS_REQ") && lines[0].contains("ISSUE"), "one exchange: \(lines)")

            let third = try realm.kdcLog().count
            #expect(try fixture.sasl(user, "wrong-Passw0rd", address: "192.0.2.61") == .no("authentication failed"))
            lines = try await Self.requests(realm, for: user, after: third, atLeast: 2)
            #expect(lines.filter { $0.contains("PREAUTH_FAILED") }.count == 1, "one failure at the KDC: \(lines)")
            #expect(!lines.contains { $0.contains("TGS_REQ") })
        }
    }

    @Test("a password-only login of a principal as addprinc makes it (no preauth) is one AS exchange from the first")
    func oneExchangeWithoutPreauth() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            let user = try realm.addPrincipal(prefix: "plain", password: "Plain-Passw0rd")
            for (index, address) in ["", "192.0.2.62"].enumerated() {
                let start = try realm.kdcLog().count
                #expect(try fixture.sasl(user, "Plain-Passw0rd", address: address) == .ok)
                let lines = try await Self.requests(realm, for: user, after: start, atLeast: 1)
                #expect(lines.count == 1 && lines[0].contains("AS_REQ") && lines[0].contains("ISSUE") && lines[0].contains("for host/"),
                        "login \(index + 1): one exchange, the verification ticket straight from the AS: \(lines)")
            }
        }
    }

    @Test("a salt changed after it was learnt costs one more exchange, never a wrong answer; a non-default salt works from the start")
    func changedSalt() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            let user = try realm.addPrincipal(prefix: "resalt", password: "Resalt-Passw0rd")
            #expect(try fixture.sasl(user, "Resalt-Passw0rd") == .ok)
            try realm.kadmin("cpw", "-pw", "Resalt-Passw0rd", "-e", "aes256-cts:onlyrealm", user)
            #expect(try fixture.sasl(user, "Resalt-Passw0rd", address: "192.0.2.62") == .ok, "relearnt after the failure")
            #expect(try fixture.sasl(user, "Resalt-Passw0rd", address: "192.0.2.63") == .ok)
            #expect(try fixture.sasl(user, "wrong", address: "192.0.2.64") == .no("authentication failed"))

            let salty = try realm.addPrincipal(prefix: "salty", password: "Salty-Passw0rd", attributes: ["-e", "aes256-cts:onlyrealm"])
            #expect(try fixture.sasl(salty, "Salty-Passw0rd", address: "192.0.2.65") == .ok)
        }
    }

    @Test("with learnt preauth and the direct ticket off, logins still verify (the plain MIT path)")
    func plainPath() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.login.learnedPreauth = false
            configuration.login.directVerificationTicket = false
        }) { fixture throws in
            let realm = fixture.realm
            let start = try realm.kdcLog().count
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"], address: "192.0.2.66") == .ok)
            let lines = try await Self.requests(realm, for: realm["USER"], after: start, atLeast: 3)
            #expect(lines.contains { $0.contains("TGS_REQ") }, "verification through a TGS exchange: \(lines)")
            #expect(try fixture.sasl(realm["USER"], "wrong", address: "192.0.2.67") == .no("authentication failed"))
        }
    }

    @Test("optimistic preauth for conversations falls back to the normal exchange for a principal with a non-default salt")
    func optimisticFallback() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.login.optimisticPreauth = true }) { fixture throws in
            let realm = fixture.realm
            let salty = try realm.addPrincipal(prefix: "salty", password: "Salty-Passw0rd", attributes: ["-e", "aes256-cts:onlyrealm"])
            for attempt in 0..<2 {
                let conversation = try fixture.converse(salty, password: "Salty-Passw0rd")
                let result = try conversation.result()
                #expect(result.ok, "attempt \(attempt): \(result)")
            }
            let wrong = try fixture.converse(salty, password: "wrong")
            #expect(try wrong.result().failure == .badCredentials)
        }
    }
}
