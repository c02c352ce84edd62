import Foundation
import Kerberos
import LoginProtocol
import LoginService
import TestRealm
import Testing
import VerifyDaemon

@Suite("krb5-verifyd: the JSON-lines conversation listener", .onTestThreads)
struct ConversationListenerTests {
    @Test("password in the login request: verified result")
    func password() async throws {
        try await DaemonFixture.with { fixture throws in
            let result = try fixture.converse(fixture.realm["USER"], password: fixture.realm["USER_PASSWORD"]).result()
            #expect(result.ok)
            #expect(result.verified)
            #expect(result.principal == "\(fixture.realm["USER"])@\(fixture.realm.realm)")
            #expect(result.expires.map { $0 > .now } == true)
        }
    }

    @Test("no password: the password question, answered")
    func passwordQuestion() async throws {
        try await DaemonFixture.with { fixture throws in
            let conversation = try fixture.converse(fixture.realm["USER"])
            guard case .questions(let id, let questions) = try conversation.next() else { Issue.record("no questions"); return }
            #expect(questions.contains { if case .password = $0 { true } else { false } })
            conversation.answer(id, LoginAnswers(password: Secret(fixture.realm["USER_PASSWORD"])))
            #expect(try conversation.result().ok)
        }
    }

    @Test("OTP through FreeRADIUS: question, code, verified result; a wrong code is refused")
    func otp() async throws {
        try await DaemonFixture.with { fixture throws in
            let user = try fixture.realm.addOTPUser(prefix: "dotp")
            let secret = fixture.realm["OTP_SECRET"]
            let conversation = try fixture.converse(user)
            guard case .questions(let id, let questions) = try conversation.next(), case .otp(let challenge)? = questions.first else {
                Issue.record("no OTP question"); return
            }
            #expect(challenge.tokens.first?.flags.contains(.collectToken) == true)
            conversation.answer(id, LoginAnswers(otp: OTPAnswer(token: 0, value: Secret(TOTPClock.code(secret)))))
            let result = try conversation.result()
            #expect(result.ok, "\(result)")

            let wrong = try fixture.converse(user)
            guard case .questions(let wrongID, _) = try wrong.next() else { Issue.record("no question"); return }
            wrong.answer(wrongID, LoginAnswers(otp: OTPAnswer(token: 0, value: Secret("000000"))))
            #expect(try wrong.result().failure == .badCredentials)
        }
    }

    @Test("PKINIT with an encrypted key: the pass phrase asked as a PKINIT question")
    func pkinit() async throws {
        try await DaemonFixture.with(configure: { configuration, realm in
            configuration.login.preauthOptions = [.init(name: "X509_user_identity", value: "FILE:\(realm["PKINIT_CERT"]),\(realm["PKINIT_KEY"])")]
            configuration.login.armor = .none
        }) { fixture throws in
            let conversation = try fixture.converse(fixture.realm["PKINIT_USER"])
            guard case .questions(let id, let questions) = try conversation.next(), case .pkinit(let identities)? = questions.first else {
                Issue.record("no PKINIT question"); return
            }
            let identity = try #require(identities.first?.identity)
            conversation.answer(id, LoginAnswers(pkinit: [identity: Secret(fixture.realm["PKINIT_KEY_PASSPHRASE"])]))
            let result = try conversation.result()
            #expect(result.ok, "\(result)")
        }
    }

    @Test("an expired password is changed in the conversation")
    func expiredPassword() async throws {
        try await DaemonFixture.with { fixture throws in
            let user = try fixture.realm.addPrincipal(prefix: "dexp", password: "Old-Passw0rd", attributes: ["+needchange"])
            let conversation = try fixture.converse(user, password: "Old-Passw0rd")
            guard case .questions(let id, let questions) = try conversation.next() else { Issue.record("no questions"); return }
            #expect(questions.count == 2)
            #expect(questions.contains { if case .newPassword = $0 { true } else { false } })
            conversation.answer(id, LoginAnswers(newPassword: Secret("New-Passw0rd-9"), newPasswordAgain: Secret("New-Passw0rd-9")))
            #expect(try conversation.result().ok)
            #expect(try fixture.sasl(user, "New-Passw0rd-9") == .ok)
            #expect(try fixture.sasl(user, "Old-Passw0rd") == .no("authentication failed"))
        }
    }

    @Test("a new password the realm's policy refuses: the kpasswd server's reason in the result, and the old password stays expired")
    func refusedNewPassword() async throws {
        try await DaemonFixture.with { fixture throws in
            let policy = TestRealm.uniqueName("minlen")
            _ = try fixture.realm.kadmin("addpol", "-minlength", "12", policy)
            let user = try fixture.realm.addPrincipal(prefix: "dpol", password: "Old-Passw0rd-long", attributes: ["+needchange", "-policy", policy])
            let conversation = try fixture.converse(user, password: "Old-Passw0rd-long")
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            conversation.answer(id, LoginAnswers(newPassword: Secret("Short-1"), newPasswordAgain: Secret("Short-1")))
            let result = try conversation.result()
            #expect(result.failure == .passwordExpired, "\(result)")
            #expect(result.message?.contains("Password change rejected") == true, "\(result)")
            #expect(result.message?.contains("too short") == true, "kadmind's reason: \(result)")
            #expect(result.message?.contains("Short-1") == false)
            // (MIT's KDC answers KEY_EXP before checking any password, so saslauthd cannot tell which one is set;
            // the conversation's kadmin/changepw ticket proves the old one is.)
            let again = try fixture.converse(user, password: "Old-Passw0rd-long")
            guard case .questions = try again.next() else { Issue.record("the old password no longer gets a changepw ticket"); return }
        }
    }

    @Test("new passwords that differ: refused before any kpasswd message, nothing changed")
    func mismatchedNewPassword() async throws {
        try await DaemonFixture.with { fixture throws in
            let user = try fixture.realm.addPrincipal(prefix: "dmis", password: "Old-Passw0rd", attributes: ["+needchange"])
            let conversation = try fixture.converse(user, password: "Old-Passw0rd")
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            conversation.answer(id, LoginAnswers(newPassword: Secret("New-Passw0rd-1"), newPasswordAgain: Secret("New-Passw0rd-2")))
            let result = try conversation.result()
            #expect(result.failure == .passwordExpired, "\(result)")
            #expect(result.message?.contains("differ") == true, "\(result)")
            // Unchanged: the old password still gets the kadmin/changepw ticket that precedes the questions.
            let again = try fixture.converse(user, password: "Old-Passw0rd")
            guard case .questions = try again.next() else { Issue.record("the old password no longer gets a changepw ticket"); return }
        }
    }

    @Test("bad input gets an invalid-request result, and a good login still succeeds", arguments: [
        "not json", #"{"type":"login"}"#, #"{"type":"answers","id":9,"answers":{}}"#, #"{"type":"what"}"#, "[]",
    ])
    func badInput(line: String) async throws {
        try await DaemonFixture.with { fixture throws in
            let client = try SocketClient(path: fixture.socket)
            client.send(line + "\n")
            let result = try Conversation(client: client).result()
            #expect(result.failure == .invalidRequest, "\(result)")
            #expect(try fixture.converse(fixture.realm["USER"], password: fixture.realm["USER_PASSWORD"]).result().ok)
        }
    }

    @Test("answers for an unknown round, an over-long line and non-UTF-8 are refused")
    func protocolViolations() async throws {
        try await DaemonFixture.with { fixture throws in
            let conversation = try fixture.converse(fixture.realm["USER"])
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            conversation.answer(id + 5, LoginAnswers(password: Secret("x")))
            #expect(try conversation.result().failure == .invalidRequest)

            let long = try SocketClient(path: fixture.socket)
            long.send(String(repeating: "x", count: 70_000) + "\n")
            #expect(try Conversation(client: long).result().failure == .invalidRequest)

            let binary = try SocketClient(path: fixture.socket)
            binary.send(Array(#"{"type":"login","principal":""#.utf8) + [0xFF, 0xFE] + Array("\"}\n".utf8))
            #expect(try Conversation(client: binary).result().failure == .invalidRequest)
            #expect(fixture.daemon.counts.parked == 0)
        }
    }

    @Test("a client that disconnects mid-conversation frees its place")
    func disconnect() async throws {
        try await DaemonFixture.with { fixture throws in
            do {
                let conversation = try fixture.converse(fixture.realm["USER"])
                guard case .questions = try conversation.next() else { Issue.record("no questions"); return }
                #expect(fixture.daemon.counts.parked == 1)
            }
            try await expectEventually("the closed conversation is no longer parked") { fixture.daemon.counts.parked == 0 }
            #expect(try fixture.converse(fixture.realm["USER"], password: fixture.realm["USER_PASSWORD"]).result().ok)
        }
    }

    @Test("a silent client and a half-sent answer line are cut by idle_timeout; a person thinking is not")
    func idleTimeout() async throws {
        // 1 s: the login line, sent with the connection, is read long before it on a loaded machine too. The exact
        // bounds are ListenerTimerTests'.
        try await DaemonFixture.with(configure: { configuration, _ in configuration.idleTimeout = .seconds(1) }) { fixture throws in
            let silent = try SocketClient(path: fixture.socket)
            #expect(try Conversation(client: silent).result().failure == .timeout)

            let conversation = try fixture.converse(fixture.realm["USER"])
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            try await Task.sleep(for: .milliseconds(1500))
            conversation.client.send(#"{"type":"answers","id":\#(id),"answers":{"#)
            #expect(try conversation.result().failure == .timeout)
            #expect(fixture.daemon.counts.parked == 0)

            let thinking = try fixture.converse(fixture.realm["USER"])
            guard case .questions(let round, _) = try thinking.next() else { Issue.record("no questions"); return }
            try await Task.sleep(for: .milliseconds(1500))
            thinking.answer(round, LoginAnswers(password: Secret(fixture.realm["USER_PASSWORD"])))
            #expect(try thinking.result().ok, "only the round timeout limits the time to answer")
        }
    }

    @Test("each login is logged with listener, outcome, principal, peer uid and pid, reason and latency")
    func structuredLog() async throws {
        try await DaemonFixture.with { fixture throws in
            _ = try fixture.sasl(fixture.realm["USER"], "Wrong-Passw0rd")
            let text = fixture.logs.text
            let line = try #require(text.split(separator: "\n").first { $0.contains("login") && $0.contains("bad-credentials") })
            for field in ["listener", "outcome", "principal", "reason", "latency_ms"] {
                #expect(line.contains("\"\(field)\""), "\(field) missing: \(line)")
            }
            #expect(line.contains("\"peer_uid\": \(getuid())"), "\(line)")
            #expect(line.contains("\"peer_pid\": \(getpid())"), "\(line)")
        }
    }

    @Test("the failure floor counts from the last round, not from the login: thinking time does not use it up")
    func floorPerRound() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.failureFloor = .milliseconds(800) }) { fixture throws in
            let conversation = try fixture.converse(fixture.realm["USER"])
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            try await Task.sleep(for: .seconds(1))
            let answered = Date()
            conversation.answer(id, LoginAnswers(password: Secret("Wrong-Passw0rd")))
            #expect(try conversation.result().failure == .badCredentials)
            #expect(Date().timeIntervalSince(answered) >= 0.75, "answered after \(Date().timeIntervalSince(answered)) s")
        }
    }

    @Test("a round that is not answered in time ends with timeout")
    func roundTimeout() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.roundTimeout = .milliseconds(300) }) { fixture throws in
            let conversation = try fixture.converse(fixture.realm["USER"])
            guard case .questions = try conversation.next() else { Issue.record("no questions"); return }
            #expect(try conversation.result().failure == .timeout)
        }
    }

    @Test("1,000 conversations parked at an OTP question hold no worker: the daemon's only worker still serves logins")
    func parkedConversations() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.logLevel = .warning
            // One worker: if a parked conversation held it, no other login could complete.
            configuration.workers = 1
        }) { fixture throws in
            let realm = fixture.realm
            let user = try realm.addOTPUser(prefix: "park")
            var parked: [Conversation] = []
            for _ in 0..<1000 {
                let conversation = try fixture.converse(user)
                guard case .questions = try conversation.next() else { Issue.record("no question"); return }
                parked.append(conversation)
            }
            #expect(fixture.daemon.counts.parked == 1000)
            #expect(fixture.daemon.counts.inFlight == 0, "no login occupies a worker while parked")
            for _ in 0..<20 { #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok, "the worker is free with 1,000 parked") }
            parked.removeAll()
        }
    }

    @Test("1,000 parked conversations cost the daemon little memory: its own resident size, in a krb5-verifyd process of its own")
    func parkedConversationsMemory() async throws {
        let realm = try TestRealm.shared()
        let socketPath = SocketClient.temporaryPath("park")
        // The test process runs other suites beside this one: only a daemon of its own has a resident size to measure.
        let daemon = try ChildProcess([TestRealm.executable("krb5-verifyd"), "--socket", socketPath, "--armor", "anonymous", "--workers", "1",
                                       "--log-level", "warning"] + realm.helperFlags())
        defer { _ = daemon.terminate() }
        try await expectEventually("the daemon listens") { FileManager.default.fileExists(atPath: socketPath) }
        let user = try realm.addOTPUser(prefix: "parkm")
        func park() throws -> Conversation {
            let client = try SocketClient(path: socketPath)
            client.send(ClientMessage.login(LoginRequest(principal: user)).encodedLine)
            let conversation = Conversation(client: client)
            guard case .questions = try conversation.next() else { throw TestRealmError("no OTP question") }
            return conversation
        }
        // Warmed up: the worker's armor, the location cache, the allocator's first arenas.
        for _ in 0..<20 { _ = try park() }
        let before = Self.residentKilobytes(of: daemon.pid)
        let parked = try (0..<1000).map { _ in try park() }
        let after = Self.residentKilobytes(of: daemon.pid)
        #expect(parked.count == 1000)
        #expect(before > 0 && after - before < 64 * 1024, "the daemon grew by \(after - before) KB for 1,000 parked conversations")
    }

    /// VmRSS of process `pid`, in KB (0 when it cannot be read).
    static func residentKilobytes(of pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }

    @Test("no password, OTP or PIN ever reaches the log, even at trace level")
    func secretsNotLogged() async throws {
        try await DaemonFixture.with { fixture throws in
            let realm = fixture.realm
            _ = try fixture.sasl(realm["USER"], realm["USER_PASSWORD"])
            _ = try fixture.sasl(realm["USER"], "Wrong-Secret-77")
            _ = try fixture.converse(realm["USER"], password: "Another-Secret-88").result()
            let user = try realm.addOTPUser(prefix: "logotp")
            let conversation = try fixture.converse(user)
            if case .questions(let id, _) = try conversation.next() {
                conversation.answer(id, LoginAnswers(otp: OTPAnswer(token: 0, value: Secret("918273"), pin: Secret("5647"))))
                _ = try conversation.result()
            }
            let text = fixture.logs.text
            #expect(text.contains("login"), "logging happened")
            for secret in [realm["USER_PASSWORD"], "Wrong-Secret-77", "Another-Secret-88", "918273", "5647"] {
                #expect(!text.contains(secret), "\(secret) leaked into the log")
            }
        }
    }
}

/// The current TOTP code, waiting out a step boundary so the code is still valid when checked.
enum TOTPClock {
    static func code(_ secret: String) -> String {
        let left = 30 - Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 30)
        if left < 4 { Thread.sleep(forTimeInterval: left + 0.2) }
        return TOTP.code(secret: TOTP.base32Decode(secret), time: UInt64(Date().timeIntervalSince1970))
    }
}
