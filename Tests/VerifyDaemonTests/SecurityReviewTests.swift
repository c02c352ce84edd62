import Foundation
import Kerberos
import LoginProtocol
import LoginService
import TestRealm
import Testing
@testable import VerifyDaemon

/// The security review's findings (issue 11), each against the live realm with MIT's default KDC settings
/// and the daemon's default throttle: 5 failures in 60 s.
@Suite("Security review: throttle, names, realms, anonymous, logs", .onTestThreads)
struct SecurityReviewTests {
    static let penalty = DaemonFixture.throttleTestPenalty

    /// The KDC's preauth failures for `principal` since `skip` lines.
    private static func kdcFailures(_ realm: TestRealm, _ principal: String, after skip: Int) throws -> Int {
        try realm.kdcLog().dropFirst(skip).filter { $0.contains("PREAUTH_FAILED") && $0.contains(" \(principal)@\(realm.realm) ") }.count
    }

    @Test("a mail server behind one uid, sending no client address: other users' failures never refuse a login")
    func oneUidManyUsers() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            let users = try (0..<3).map { _ in try realm.addPrincipal(prefix: "mail", password: "Mail-Passw0rd") }
            // 18 requests per round, 14 with the right password, from one uid and no fifth field: the soak's mix.
            for round in 0..<3 {
                for index in 0..<18 {
                    let user = users[index % users.count]
                    let right = index % 18 < 14
                    let reply = try fixture.sasl(right ? user : "nobody-\(round)-\(index)", right ? "Mail-Passw0rd" : "typo", address: "")
                    #expect(reply == (right ? .ok : .no("authentication failed")), "round \(round), request \(index)")
                }
            }
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"], address: "") == .ok)
        }
    }

    @Test("a principal under attack still logs in with its last good password; guesses past the limit never reach the KDC and are delayed")
    func attackedPrincipalKeepsWorking() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            let victim = try realm.addPrincipal(prefix: "victim", password: "Victim-Passw0rd")
            #expect(try fixture.sasl(victim, "Victim-Passw0rd") == .ok)
            let skip = try realm.kdcLog().count
            for attempt in 0..<7 {
                let started = ContinuousClock.now
                #expect(try fixture.sasl(victim, "guess-\(attempt)", address: "203.0.113.\(attempt)") == .no("authentication failed"))
                if attempt >= 5 {
                    #expect(ContinuousClock.now - started >= Self.penalty, "refused guess \(attempt) waits out the penalty")
                }
            }
            #expect(try Self.kdcFailures(realm, victim, after: skip) == 5, "only throttle_failures guesses reached the KDC")
            #expect(try fixture.sasl(victim, "Victim-Passw0rd", address: "198.51.100.9") == .ok, "the owner is not locked out")
            #expect(try fixture.sasl(victim, "another-guess") == .no("authentication failed"))
            #expect(try Self.kdcFailures(realm, victim, after: skip) == 5)
        }
    }

    @Test("parallel guesses in several spellings of one name cause at most throttle_failures KDC failures")
    func parallelSpellings() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            let name = try realm.addPrincipal(prefix: "spelled", password: "Spelled-Passw0rd")
            let first = name.prefix(1), rest = name.dropFirst()
            let spellings = [name, "\(name)@\(realm.realm)", "\\\(first)\(rest)", "\(first)\\\(rest)", "\\\(first)\(rest)@\(realm.realm)"]
            let skip = try realm.kdcLog().count
            // 24 clients at once, each on a thread of its own (the replies are delayed by penalties).
            let replies = Locked<[SaslauthdReply?]>([])
            let done = DispatchGroup()
            for index in 0..<24 {
                done.enter()
                Thread {
                    let reply = try? fixture.sasl(spellings[index % spellings.count], "guess-\(index)", address: "")
                    replies.withLock { $0.append(reply) }
                    done.leave()
                }.start()
            }
            await withCheckedContinuation { continuation in done.notify(queue: .global()) { continuation.resume() } }
            #expect(replies.withLock { $0 }.allSatisfy { $0 == .no("authentication failed") })
            #expect(try Self.kdcFailures(realm, name, after: skip) <= DaemonConfiguration().throttleFailures)
        }
    }

    @Test("a realm outside the allow-list is refused without contacting its KDC")
    func realmAllowList() async throws {
        // A realm whose KDC is a UDP socket and a TCP listener of this test: any contact shows.
        let hung = try BlackHoleKDC()
        defer { hung.stop() }
        let extra = FileManager.default.temporaryDirectory.appendingPathComponent("hung-\(UUID().uuidString).conf").path
        try "[realms]\n HUNG.TEST = {\n  kdc = 127.0.0.1:\(hung.port)\n }\n".write(toFile: extra, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: extra) }
        try await DaemonFixture.withThrottle({ configuration, realm in
            configuration.login.krb5 = Context.Configuration(files: [realm.configFile, extra])
            configuration.login.realms = [realm.realm]
        }) { fixture in
            #expect(try fixture.sasl("someone@HUNG.TEST", "password") == .no("authentication failed"))
            let conversation = try fixture.converse("someone@HUNG.TEST", password: "password")
            let result = try conversation.result()
            #expect(result.failure == .unknownPrincipal)
            #expect(result.message?.contains("HUNG.TEST is not one this service logs in to") == true, "\(result.message ?? "")")
            #expect(hung.contacts == 0, "the KDC of a realm outside the list was never contacted")
            #expect(try fixture.sasl(fixture.realm["USER"], fixture.realm["USER_PASSWORD"]) == .ok)
        }
    }

    @Test("by default the allow-list is the default realm and krb5.conf's realms: an unknown realm is refused at once")
    func defaultRealmList() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            #expect(fixture.daemon.service.allowedRealms == [realm.realm, realm["OTHER_REALM"]])
            let conversation = try fixture.converse("x@ANY.REALM", password: "password")
            #expect(try conversation.result().failure == .unknownPrincipal)
        }
    }

    @Test("WELLKNOWN/ANONYMOUS with any password is refused on both listeners as bad-credentials, before any exchange")
    func anonymousRefused() async throws {
        try await DaemonFixture.withThrottle({ configuration, _ in configuration.login.armor = .anonymous }) { fixture in
            let realm = fixture.realm
            for name in ["WELLKNOWN/ANONYMOUS", "WELLKNOWN/ANONYMOUS@\(realm.realm)", "WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS"] {
                #expect(try fixture.sasl(name, "anything") == .no("authentication failed"), "\(name)")
                let result = try fixture.converse(name, password: "anything").result()
                #expect(result.failure == .badCredentials, "\(name)")
                #expect(result.message == "Anonymous logins are refused", "\(name): \(result.message ?? "")")
            }
        }
    }

    @Test("the helper's in-process path refuses WELLKNOWN/ANONYMOUS and unlisted realms before any exchange")
    func helperPathRefuses() throws {
        let realm = try TestRealm.shared()
        let configuration = LoginConfiguration(krb5: .files(realm.configFile), keytab: realm["HOST_KEYTAB"],
                                               serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: .anonymous)
        let context = try realm.context()
        for (name, failure) in [("WELLKNOWN/ANONYMOUS", LoginResult.Failure.badCredentials), ("WELLKNOWN/ANONYMOUS@\(realm.realm)", .badCredentials),
                                ("someone@NOT.LISTED", .unknownPrincipal), ("", .invalidRequest)] {
            let step = LoginService.stepBlocking(LoginConversation(principal: name, password: Secret("anything")), configuration: configuration, context: context)
            guard case .finished(let result, _) = step else { Issue.record("\(name): questions"); continue }
            #expect(result.failure == failure, "\(name): \(result)")
        }
    }

    @Test("a principal with control characters cannot forge a log line")
    func logInjection() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let forged = "x\ninfo login [outcome: ok, principal: alice@KRB5.TEST]\r\u{1b}[2J"
            _ = try fixture.converse(forged, password: "wrong").result()
            _ = try fixture.sasl(forged, "wrong")
            let lines = fixture.logs.entries
            #expect(lines.contains { $0.contains("x\\ninfo login") }, "the principal is logged, escaped")
            #expect(!lines.contains { $0.contains("\n") || $0.contains("\r") || $0.contains("\u{1b}") }, "no raw control character in any entry")
        }
    }

    @Test("the failure floor counts from the request's arrival, not the connection's")
    func floorFromRequest() async throws {
        try await DaemonFixture.withThrottle({ configuration, _ in
            configuration.failureFloor = .milliseconds(600)
            // The wait before sending must not run into the request timeouts, however busy the machine is.
            configuration.readTimeout = .seconds(60)
            configuration.idleTimeout = .seconds(60)
        }) { fixture in
            let client = try SocketClient(path: fixture.saslSocket)
            try await Task.sleep(for: .milliseconds(700))
            let sent = ContinuousClock.now
            client.send(SaslauthdRequest(login: fixture.realm["USER"], password: Secret("Wrong-Passw0rd"), service: "imap", realm: "", clientAddress: "").encoded())
            let reply = try SaslauthdReply(decoding: client.readAll())
            #expect(reply == .no("authentication failed"))
            #expect(ContinuousClock.now - sent >= .milliseconds(590))
        }
    }

    @Test("a conversation's outcome counts even when the client leaves or breaks the protocol during the login")
    func abandonedConversationsCount() async throws {
        try await DaemonFixture.withThrottle({ configuration, _ in configuration.throttleFailures = 2 }) { fixture in
            let realm = fixture.realm
            // (Requiring preauth: without it a wrong password fails at the client, and the KDC counts nothing.)
            let name = try realm.addPrincipal(prefix: "leaver", password: "Leaver-Passw0rd", attributes: ["+requires_preauth"])
            let skip = try realm.kdcLog().count
            do {
                // Gone at once: the login runs on without anyone waiting.
                let conversation = try fixture.converse(name, password: "guess-1")
                _ = conversation
            }
            let second = try fixture.converse(name, password: "guess-2")
            second.client.send("{\"type\":\"answers\",\"id\":1,\"answers\":{}}\n")
            _ = try? second.result()
            // Both guesses reach the KDC and count: the third is refused without it.
            try await expectEventually { try Self.kdcFailures(realm, name, after: skip) == 2 }
            try await expectEventually { fixture.logs.entries.filter { $0.contains("bad-credentials") && $0.contains(name) }.count >= 2 }
            #expect(try fixture.sasl(name, "guess-3") == .no("authentication failed"))
            #expect(try Self.kdcFailures(realm, name, after: skip) == 2)
        }
    }

    @Test("a user of a trusted realm is verified against this host's keytab through the cross-realm TGS path")
    func crossRealmUser() async throws {
        for armor in [LoginConfiguration.ArmorSource.none, .keytab, .anonymous] {
            try await DaemonFixture.withThrottle({ configuration, _ in configuration.login.armor = armor }) { fixture in
                let realm = fixture.realm
                let other = "\(realm["OTHER_USER"])@\(realm["OTHER_REALM"])"
                #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok, "armor \(armor)")
                #expect(try fixture.sasl(other, realm["OTHER_USER_PASSWORD"]) == .ok, "armor \(armor)")
                let result = try fixture.converse(other, password: realm["OTHER_USER_PASSWORD"]).result()
                #expect(result.ok && result.verified && result.principal == other, "armor \(armor): \(result)")
                #expect(try fixture.sasl(other, "wrong") == .no("authentication failed"), "armor \(armor)")
            }
        }
    }
}
