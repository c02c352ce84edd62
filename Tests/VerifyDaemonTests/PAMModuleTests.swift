import Foundation
import Kerberos
import LoginProtocol
import TestRealm
import Testing
import VerifyDaemon

/// pam_krb5verify.so in real Linux-PAM stacks (pam_wrapper, pypamtest) against krb5-verifyd and the test realm.
/// Serialized: the smart-card test sets SOFTHSM2_CONF for the whole process.
@Suite("pam_krb5verify.so under pam_wrapper against the daemon", .serialized, .onTestThreads)
struct PAMModuleTests {
    /// The stack most tests use: everything through the module, PAM items from the environment first.
    static func stack(_ fixture: DaemonFixture, auth: String = "", account: String = "", session: String = "", password: String = "") -> String {
        let common = "socket=\(fixture.socket) krb5_config=\(fixture.realm.configFile)"
        return """
            auth     required  /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so
            auth     required  MODULE \(common) \(auth)
            account  required  MODULE \(common) \(account)
            session  required  MODULE \(common) \(session)
            password required  /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so
            password required  MODULE \(common) \(password)
            """
    }

    @Test("alice's password: authenticate, account (kuserok), setcred and session give KRB5CCNAME a cache owned by her; close_session removes it")
    func password() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let pam = try PAMWrapper(users: [alice])
            defer { pam.remove() }
            try pam.service("login", Self.stack(fixture))
            let opened = try pam.run("login", user: alice, [.authenticate(), .account(), .setcred(), .openSession(), .environment],
                                     hidden: [fixture.realm["USER_PASSWORD"]])
            #expect(opened.ok, "\(opened)")
            let name = try #require(opened.env["KRB5CCNAME"], "\(opened)")
            #expect(name.hasPrefix("FILE:/tmp/krb5cc_\(pam.users[alice]!)_"))
            let path = String(name.dropFirst(5))
            // The handle ended with the run: without close_session the cache stays, the user's, mode 0600, holding alice's TGT.
            var info = stat()
            #expect(lstat(path, &info) == 0)
            #expect(info.st_uid == pam.users[alice]! && info.st_gid == PAMWrapper.gid)
            #expect(info.st_mode & 0o7777 == 0o600)
            let listing = try TestRealm.run(["klist", "-c", name], environment: ["KRB5_CONFIG": fixture.realm.configFile])
            #expect(listing.output.contains("Default principal: \(alice)@\(fixture.realm.realm)"), "\(listing.output)")
            #expect(listing.output.contains("krbtgt/\(fixture.realm.realm)@\(fixture.realm.realm)"), "\(listing.output)")
            unlink(path)
            // No pending cache is left behind, in /tmp or in the environment.
            #expect(opened.env[ "KRB5VERIFY_PENDING_CCACHE"] == nil)

            let closed = try pam.run("login", user: alice, [.authenticate(), .openSession(), .environment, .closeSession()],
                                     hidden: [fixture.realm["USER_PASSWORD"]])
            #expect(closed.ok, "\(closed)")
            let closedName = try #require(closed.env["KRB5CCNAME"], "\(closed)")
            #expect(!FileManager.default.fileExists(atPath: String(closedName.dropFirst(5))), "close_session left \(closedName)")
        }
    }

    @Test("otp user: the OTP question as a hidden prompt, answered with a real TOTP code through FreeRADIUS; a wrong code is PAM_AUTH_ERR")
    func otp() async throws {
        try await DaemonFixture.with { fixture throws in
            let user = try fixture.realm.addOTPUser(prefix: "potp")
            let pam = try PAMWrapper(users: [user])
            defer { pam.remove() }
            try pam.service("sshd", Self.stack(fixture))
            let right = try pam.run("sshd", user: user, [.authenticate(), .account()], hidden: [TOTPClock.code(fixture.realm["OTP_SECRET"], leaving: 15)])
            #expect(right.ok, "\(right)")
            let wrong = try pam.run("sshd", user: user, [.authenticate(PAMCode.authError)], hidden: ["000000"])
            #expect(wrong.ok, "\(wrong)")
        }
    }

    @Test("smart card: the PKINIT PIN question as a hidden prompt; the token's PIN logs the certificate user in and opens a session with a cache")
    func smartCardPIN() async throws {
        let realm = try TestRealm.shared()
        setenv("SOFTHSM2_CONF", realm["SOFTHSM2_CONF"], 1)
        try await DaemonFixture.with(configure: { configuration, realm in
            configuration.login.preauthOptions = [.init(name: "X509_user_identity", value: realm["PKCS11_IDENTITY"])]
            configuration.login.armor = .none
        }) { fixture throws in
            let user = fixture.realm["PKINIT_USER"]
            let pam = try PAMWrapper(users: [user])
            defer { pam.remove() }
            try pam.service("login", Self.stack(fixture))
            let outcome = try pam.run("login", user: user, [.authenticate(), .account(), .openSession(), .environment], hidden: [fixture.realm["TOKEN_PIN"]])
            #expect(outcome.ok, "\(outcome)")
            #expect(outcome.env["KRB5CCNAME"] != nil, "\(outcome)")
            if let name = outcome.env["KRB5CCNAME"] { unlink(String(name.dropFirst(5))) }
        }
    }

    @Test("wrong password and a disabled account are PAM_AUTH_ERR, an unknown principal PAM_USER_UNKNOWN, no answer PAM_CONV_ERR; nothing is cached")
    func wrongAnswers() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let disabled = fixture.realm["DISABLED_USER"]
            let pam = try PAMWrapper(users: [alice, "nosuchprincipal", disabled])
            defer { pam.remove() }
            try pam.service("login", Self.stack(fixture))
            let wrong = try pam.run("login", user: alice, [.authenticate(PAMCode.authError), .environment], hidden: ["wrong-Passw0rd"])
            #expect(wrong.ok, "\(wrong)")
            #expect(wrong.env.isEmpty, "\(wrong)")
            let unknown = try pam.run("login", user: "nosuchprincipal", [.authenticate(PAMCode.userUnknown)], hidden: ["whatever-Passw0rd"])
            #expect(unknown.ok, "\(unknown)")
            let refused = try pam.run("login", user: disabled, [.authenticate(PAMCode.authError)], hidden: [fixture.realm["DISABLED_PASSWORD"]])
            #expect(refused.ok, "a disabled account: \(refused)")
            // No answer at all (the conversation has nothing to give): not a success.
            let silent = try pam.run("login", user: alice, [.authenticate(PAMCode.conversationError)])
            #expect(silent.ok, "\(silent)")
        }
    }

    @Test("an answer of PAM_MAX_RESP_SIZE (512) bytes or more is refused before it reaches the daemon")
    func oversizedAnswer() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let pam = try PAMWrapper(users: [alice])
            defer { pam.remove() }
            try pam.service("login", Self.stack(fixture))
            let refused = try pam.run("login", user: alice, [.authenticate(PAMCode.authError)], hidden: [String(repeating: "p", count: 512)])
            #expect(refused.ok, "\(refused)")
            #expect(!fixture.logs.text.contains("bad-credentials"), "the 512-byte answer reached the daemon")
            let fits = try pam.run("login", user: alice, [.authenticate(PAMCode.authError)], hidden: [String(repeating: "p", count: 511)])
            #expect(fits.ok, "\(fits)")
            #expect(fixture.logs.text.contains("bad-credentials"), "the 511-byte answer never reached the KDC")
        }
    }

    @Test("use_first_pass and try_first_pass take PAM_AUTHTOK; a wrong one is retried by prompting with try_first_pass only; forward_pass and a prompted password set PAM_AUTHTOK for the next module")
    func passwordOptions() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let right = fixture.realm["USER_PASSWORD"]
            let pam = try PAMWrapper(users: [alice])
            defer { pam.remove() }
            let common = "socket=\(fixture.socket)"
            try pam.service("first", "auth required /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so\nauth required MODULE \(common) use_first_pass")
            try pam.service("try", "auth required /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so\nauth required MODULE \(common) try_first_pass")
            // /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_get_items.so copies the PAM items into the PAM environment, where the run reads PAM_AUTHTOK.
            try pam.service("forward", "auth required MODULE \(common)\nauth required /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_get_items.so")
            try pam.service("forward-wrong", "auth optional MODULE \(common) forward_pass\nauth required /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_get_items.so")
            try pam.service("no-forward", "auth optional MODULE \(common)\nauth required /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_get_items.so")

            #expect(try pam.run("first", user: alice, [.authenticate()], items: ["PAM_AUTHTOK": right]).ok)
            let firstWrong = try pam.run("first", user: alice, [.authenticate(PAMCode.authError)], hidden: [right], items: ["PAM_AUTHTOK": "wrong-Passw0rd"])
            #expect(firstWrong.ok, "use_first_pass prompted: \(firstWrong)")
            let firstNone = try pam.run("first", user: alice, [.authenticate(PAMCode.authError)], hidden: [right])
            #expect(firstNone.ok, "use_first_pass without a password prompted: \(firstNone)")
            let tryWrong = try pam.run("try", user: alice, [.authenticate()], hidden: [right], items: ["PAM_AUTHTOK": "wrong-Passw0rd"])
            #expect(tryWrong.ok, "\(tryWrong)")

            let forwarded = try pam.run("forward", user: alice, [.authenticate(), .environment], hidden: [right])
            #expect(forwarded.ok, "\(forwarded)")
            #expect(forwarded.env["PAM_AUTHTOK"] == right, "the prompted password did not reach PAM_AUTHTOK")
            let forwardedWrong = try pam.run("forward-wrong", user: alice, [.authenticate(), .environment], hidden: ["wrong-Passw0rd"])
            #expect(forwardedWrong.ok, "\(forwardedWrong)")
            #expect(forwardedWrong.env["PAM_AUTHTOK"] == "wrong-Passw0rd", "forward_pass did not pass on a failed password")
            let notForwarded = try pam.run("no-forward", user: alice, [.authenticate(), .environment], hidden: ["wrong-Passw0rd"])
            #expect(notForwarded.ok, "\(notForwarded)")
            #expect(notForwarded.env["PAM_AUTHTOK"] == nil, "a failed password reached PAM_AUTHTOK without forward_pass")
        }
    }

    @Test("PAM_RHOST reaches the daemon as the address its throttle keys on")
    func remoteHost() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.throttleFailures = 2 }) { fixture throws in
            let users = [try fixture.realm.addPrincipal(prefix: "prh", password: "Right-Passw0rd"), try fixture.realm.addPrincipal(prefix: "prh", password: "Right-Passw0rd")]
            let pam = try PAMWrapper(users: users)
            defer { pam.remove() }
            try pam.service("sshd", Self.stack(fixture))
            for user in users {
                let outcome = try pam.run("sshd", user: user, [.authenticate(PAMCode.authError)], hidden: ["wrong-Passw0rd"],
                                          items: ["PAM_RHOST": "192.0.2.99", "PAM_TTY": "ssh"])
                #expect(outcome.ok, "\(outcome)")
            }
            #expect(fixture.logs.text.contains("addr:192.0.2.99"), "the throttle never saw the remote host")
        }
    }

    @Test("dave's expired password: changed during login; with defer_pwchange PAM_NEW_AUTHTOK_REQD, then changed through the password stack")
    func expiredPassword() async throws {
        try await DaemonFixture.with { fixture throws in
            let during = try fixture.realm.addPrincipal(prefix: "pexp", password: "Old-Passw0rd", attributes: ["+needchange"])
            let deferred = try fixture.realm.addPrincipal(prefix: "pexp", password: "Old-Passw0rd", attributes: ["+needchange"])
            let pam = try PAMWrapper(users: [during, deferred])
            defer { pam.remove() }
            try pam.service("login", Self.stack(fixture))
            let changed = try pam.run("login", user: during, [.authenticate(), .account()], hidden: ["Old-Passw0rd", "New-Passw0rd-1", "New-Passw0rd-1"])
            #expect(changed.ok, "\(changed)")
            #expect(changed.info?.contains { $0.contains("Password expired") } == true, "\(changed)")
            #expect(try pam.run("login", user: during, [.authenticate()], hidden: ["New-Passw0rd-1"]).ok)

            // The service changes it in its password stack (what sshd and login do with PAM_NEW_AUTHTOK_REQD from acct_mgmt).
            try pam.service("deferred", """
                auth     [success=ok new_authtok_reqd=ok default=die]  MODULE socket=\(fixture.socket) defer_pwchange
                account  required  MODULE socket=\(fixture.socket) krb5_config=\(fixture.realm.configFile)
                password required  MODULE socket=\(fixture.socket)
                """)
            let wrongOld = try pam.run("deferred", user: deferred, [.authenticate(PAMCode.authError)], hidden: ["Wrong-Passw0rd"])
            #expect(wrongOld.ok, "a wrong old password was taken for an expired one: \(wrongOld)")
            let reported = try pam.run("deferred", user: deferred, [.authenticate(PAMCode.newAuthTokenRequired)], hidden: ["Old-Passw0rd"])
            #expect(reported.ok, "\(reported)")
            let flow = try pam.run("deferred", user: deferred,
                                   [.authenticate(PAMCode.newAuthTokenRequired), .account(PAMCode.newAuthTokenRequired), .chauthtok(expiredOnly: true)],
                                   hidden: ["Old-Passw0rd", "New-Passw0rd-2", "New-Passw0rd-2"])
            #expect(flow.ok, "\(flow)")
            #expect(try pam.run("login", user: deferred, [.authenticate(), .account()], hidden: ["New-Passw0rd-2"]).ok)
        }
    }

    @Test("passwd through the password stack: current password proven first (wrong: PAM_AUTHTOK_RECOVERY_ERR), mismatched repeats and a too-short password refused with kadmind's message, then changed; a refused change during login shows the reason")
    func changePassword() async throws {
        try await DaemonFixture.with { fixture throws in
            _ = try? fixture.realm.kadmin("addpol", "-minlength", "12", "pampolicy")
            let user = try fixture.realm.addPrincipal(prefix: "pchg", password: "Current-Passw0rd", attributes: ["-policy", "pampolicy"])
            let pam = try PAMWrapper(users: [user])
            defer { pam.remove() }
            try pam.service("passwd", Self.stack(fixture))
            let wrongCurrent = try pam.run("passwd", user: user, [.chauthtok(PAMCode.authTokenRecoveryError)], hidden: ["Not-The-Passw0rd"])
            #expect(wrongCurrent.ok, "\(wrongCurrent)")
            let mismatch = try pam.run("passwd", user: user, [.chauthtok(PAMCode.authTokenError)], hidden: ["Current-Passw0rd", "Changed-Passw0rd-1", "Changed-Passw0rd-2"])
            #expect(mismatch.ok, "\(mismatch)")
            let short = try pam.run("passwd", user: user, [.chauthtok(PAMCode.authTokenError)], hidden: ["Current-Passw0rd", "Sh0rt!", "Sh0rt!"])
            #expect(short.ok, "\(short)")
            #expect(short.errors?.contains { $0.lowercased().contains("password") } == true, "\(short)")
            let changed = try pam.run("passwd", user: user, [.chauthtok()], hidden: ["Current-Passw0rd", "Changed-Passw0rd-1", "Changed-Passw0rd-1"])
            #expect(changed.ok, "\(changed)")
            try pam.service("login", Self.stack(fixture))
            #expect(try pam.run("login", user: user, [.authenticate()], hidden: ["Changed-Passw0rd-1"]).ok)
            #expect(try pam.run("login", user: user, [.authenticate(PAMCode.authError)], hidden: ["Current-Passw0rd"]).ok)

            // An expired password whose change during login kadmind refuses: the reason is shown, the password stays expired.
            let expired = try fixture.realm.addPrincipal(prefix: "pchg", password: "Expired-Passw0rd", attributes: ["+needchange", "-policy", "pampolicy"])
            let refusing = try PAMWrapper(users: [expired])
            defer { refusing.remove() }
            try refusing.service("login", Self.stack(fixture))
            let refused = try refusing.run("login", user: expired, [.authenticate(PAMCode.newAuthTokenRequired)], hidden: ["Expired-Passw0rd", "Sh0rt!", "Sh0rt!"])
            #expect(refused.ok, "\(refused)")
            #expect(refused.errors?.contains { $0.lowercased().contains("password") } == true, "\(refused)")
        }
    }

    @Test("the client's timeout (version 2) ends a conversation waiting for answers with a timeout result, long before the round timeout")
    func clientDeadline() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.roundTimeout = .seconds(600) }) { fixture throws in
            let client = try SocketClient(path: fixture.socket)
            client.send(ClientMessage.login(LoginRequest(principal: fixture.realm["USER"], version: 2, timeout: .seconds(2))).encodedLine)
            let conversation = Conversation(client: client)
            // The password question (unanswered), unless a loaded machine took the deadline before it was asked.
            var message = try conversation.next()
            if case .questions = message { message = try conversation.next() }
            guard case .result(let result) = message else { Issue.record("expected the result, got \(message)"); return }
            #expect(result.failure == .timeout, "\(result)")
            #expect(result.message?.contains("deadline") == true, "\(result)")
        }
    }

    @Test("password stack with use_authtok: the old and new passwords from earlier modules (PAM_OLDAUTHTOK, PAM_AUTHTOK), no prompt")
    func changeWithStackedPasswords() async throws {
        try await DaemonFixture.with { fixture throws in
            let user = try fixture.realm.addPrincipal(prefix: "pauth", password: "Current-Passw0rd")
            let pam = try PAMWrapper(users: [user])
            defer { pam.remove() }
            try pam.service("passwd", """
                password required  /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so
                password required  MODULE socket=\(fixture.socket) use_authtok
                """)
            let changed = try pam.run("passwd", user: user, [.chauthtok()], items: ["PAM_OLDAUTHTOK": "Current-Passw0rd", "PAM_AUTHTOK": "Stacked-Passw0rd-3"])
            #expect(changed.ok, "\(changed)")
            try pam.service("login", Self.stack(fixture))
            #expect(try pam.run("login", user: user, [.authenticate()], hidden: ["Stacked-Passw0rd-3"]).ok)
        }
    }

    @Test("ccache_dir puts the session's cache there; keep_ccache leaves it at close_session; no_ccache makes none and acct_mgmt still authorizes")
    func cacheOptions() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let password = fixture.realm["USER_PASSWORD"]
            let pam = try PAMWrapper(users: [alice])
            defer { pam.remove() }
            let caches = pam.directory + "/caches"
            try FileManager.default.createDirectory(atPath: caches, withIntermediateDirectories: true)
            let common = "socket=\(fixture.socket)"
            try pam.service("kept", "auth required MODULE \(common) ccache_dir=\(caches)\nsession required MODULE \(common) ccache_dir=\(caches) keep_ccache")
            let kept = try pam.run("kept", user: alice, [.authenticate(), .openSession(), .environment, .closeSession()], hidden: [password])
            #expect(kept.ok, "\(kept)")
            let name = try #require(kept.env["KRB5CCNAME"], "\(kept)")
            #expect(name.hasPrefix("FILE:\(caches)/krb5cc_\(pam.users[alice]!)_"), "\(name)")
            #expect(FileManager.default.fileExists(atPath: String(name.dropFirst(5))), "keep_ccache: close_session removed \(name)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: caches).count == 1)

            // Authenticated, but no session opened: the cache kept for the session goes at pam_end.
            try pam.service("auth-only", "auth required MODULE \(common) ccache_dir=\(caches)")
            let authOnly = try pam.run("auth-only", user: alice, [.authenticate()], hidden: [password])
            #expect(authOnly.ok, "\(authOnly)")
            let pending = try FileManager.default.contentsOfDirectory(atPath: caches).filter { $0.hasPrefix("krb5verify_pending_") }
            #expect(pending.isEmpty, "left at pam_end: \(pending)")

            // The sudo stack's lines: no cache, and acct_mgmt still checks the principal that authenticated.
            try pam.service("none", """
                auth     required MODULE \(common) no_ccache ccache_dir=\(caches)
                account  [ignore=die default=done] MODULE \(common) krb5_config=\(fixture.realm.configFile)
                session  required MODULE \(common) no_ccache ccache_dir=\(caches)
                """)
            let none = try pam.run("none", user: alice, [.authenticate(), .account(), .setcred(), .openSession(), .environment], hidden: [password])
            #expect(none.ok, "\(none)")
            #expect(none.env["KRB5CCNAME"] == nil, "\(none)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: caches).count == 1, "no_ccache wrote a cache")
        }
    }

    @Test("acct_mgmt: a .k5login that does not list the principal denies; the module answers nothing for users it did not authenticate")
    func authorization() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let pam = try PAMWrapper(users: [alice])
            defer { pam.remove() }
            try pam.service("login", Self.stack(fixture))
            try "someone-else@\(fixture.realm.realm)\n".write(toFile: pam.directory + "/home/\(alice)/.k5login", atomically: true, encoding: .utf8)
            chown(pam.directory + "/home/\(alice)/.k5login", pam.users[alice]!, PAMWrapper.gid)
            let denied = try pam.run("login", user: alice, [.authenticate(), .account(PAMCode.permissionDenied)], hidden: [fixture.realm["USER_PASSWORD"]])
            #expect(denied.ok, "\(denied)")
            try "\(alice)@\(fixture.realm.realm)\n".write(toFile: pam.directory + "/home/\(alice)/.k5login", atomically: true, encoding: .utf8)
            #expect(try pam.run("login", user: alice, [.authenticate(), .account()], hidden: [fixture.realm["USER_PASSWORD"]]).ok)
            // Another module authenticated (pam_permit): account is not this module's to answer (PAM_IGNORE; success would die).
            try pam.service("other", """
                auth     required  pam_permit.so
                account  [ignore=ignore default=die]  MODULE socket=\(fixture.socket) krb5_config=\(fixture.realm.configFile)
                account  required  pam_permit.so
                """)
            #expect(try pam.run("other", user: alice, [.authenticate(), .account()]).ok)
        }
    }
}

/// The daemon down or hung, and sockets that are not the daemon's: PAM_AUTHINFO_UNAVAIL without a prompt.
@Suite("pam_krb5verify.so: socket hygiene", .onTestThreads)
struct PAMSocketTests {
    /// A stand-in daemon (python): binds `path` as `user`, then either never answers or answers every line with success.
    static let fakeDaemon = """
        import os, pwd, socket, sys, time
        path, user, mode = sys.argv[1], sys.argv[2], sys.argv[3]
        if user != "root":
            entry = pwd.getpwnam(user)
            os.setgid(entry.pw_gid); os.setuid(entry.pw_uid)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.chmod(path, 0o660)
        server.listen(8)
        print("ready", flush=True)
        while True:
            connection, _ = server.accept()
            if mode == "hang":
                continue
            connection.recv(65536)
            verified = b"false" if mode == "unverified" else b"true"
            connection.sendall(b'{"type":"result","ok":true,"principal":"x@KRB5.TEST","verified":' + verified + b'}\\n')
            connection.close()
        """

    func fake(_ path: String, user: String, mode: String) throws -> ChildProcess {
        let child = try ChildProcess(["/usr/bin/python3", "-c", Self.fakeDaemon, path, user, mode], output: .pipe)
        var seen = ""
        while !seen.contains("ready") {
            let bytes = child.readSome()
            if bytes.isEmpty { throw TestRealmError("fake daemon: \(seen)") }
            seen += String(decoding: bytes, as: UTF8.self)
        }
        return child
    }

    func authenticate(socket: String, options: String = "", user: String = "alice") throws -> PAMWrapper.Outcome {
        let pam = try PAMWrapper(users: [user])
        defer { pam.remove() }
        try pam.service("login", "auth required MODULE socket=\(socket) \(options)")
        return try pam.run("login", user: user, [.authenticate(PAMCode.authInfoUnavailable)], hidden: ["any-Passw0rd"])
    }

    @Test("daemon down: no socket file, and a socket nobody listens on")
    func daemonDown() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pamsock-\(getpid())-\(Int.random(in: 0..<1_000_000))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let missing = try authenticate(socket: directory + "/none")
        #expect(missing.ok, "\(missing)")
        let stale = try TestRealm.run(["/usr/bin/python3", "-c", "import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.close()", directory + "/stale"])
        #expect(stale.status == 0, "\(stale.output)")
        let refused = try authenticate(socket: directory + "/stale")
        #expect(refused.ok, "\(refused)")
    }

    @Test("daemon hung: accepts and never answers; the module gives up at its timeout")
    func daemonHung() throws {
        let path = SocketClient.temporaryPath("hung")
        let hung = try fake(path, user: "root", mode: "hang")
        defer { _ = hung.terminate(); unlink(path) }
        let outcome = try authenticate(socket: path, options: "timeout=2")
        #expect(outcome.ok, "\(outcome)")
    }

    @Test("a success the daemon did not verify (a forged KDC would give one) is refused unless allow_unverified")
    func unverifiedResult() throws {
        let path = SocketClient.temporaryPath("unverified")
        let daemon = try fake(path, user: "root", mode: "unverified")
        defer { _ = daemon.terminate(); unlink(path) }
        let pam = try PAMWrapper(users: ["alice"])
        defer { pam.remove() }
        try pam.service("strict", "auth required MODULE socket=\(path) no_ccache")
        try pam.service("lax", "auth required MODULE socket=\(path) no_ccache allow_unverified")
        let refused = try pam.run("strict", user: "alice", [.authenticate(PAMCode.authError)], hidden: ["any-Passw0rd"])
        #expect(refused.ok, "\(refused)")
        let accepted = try pam.run("lax", user: "alice", [.authenticate()], hidden: ["any-Passw0rd"])
        #expect(accepted.ok, "\(accepted)")
    }

    @Test("a fake daemon's socket owned by another user is refused; so is a root-owned socket file whose listener is another user (SO_PEERCRED)")
    func foreignSocket() throws {
        let nobody = "nobody"
        let owned = SocketClient.temporaryPath("fake")
        let byNobody = try fake(owned, user: nobody, mode: "accept")
        defer { _ = byNobody.terminate(); unlink(owned) }
        // The stand-in answers success to anyone: only the module's checks keep these at PAM_AUTHINFO_UNAVAIL.
        let refusedFile = try authenticate(socket: owned, options: "daemon_user=root")
        #expect(refusedFile.ok, "\(refusedFile)")

        let relabelled = SocketClient.temporaryPath("fake")
        let listener = try fake(relabelled, user: nobody, mode: "accept")
        defer { _ = listener.terminate(); unlink(relabelled) }
        #expect(chown(relabelled, 0, 0) == 0)
        let refusedPeer = try authenticate(socket: relabelled, options: "daemon_user=root")
        #expect(refusedPeer.ok, "\(refusedPeer)")

        // The same stand-in is believed once its user is named as the daemon's: the checks above are what refused.
        let pam = try PAMWrapper(users: ["alice"])
        defer { pam.remove() }
        try pam.service("login", "auth required MODULE socket=\(owned) daemon_user=\(nobody)")
        let believed = try pam.run("login", user: "alice", [.authenticate()], hidden: ["any-Passw0rd"])
        #expect(believed.ok, "\(believed)")
    }
}

/// The module's reply parser under libFuzzer (`make pam-fuzz` runs it longer).
@Suite("pam_krb5verify.so: reply parser fuzzing", .onTestThreads)
struct PAMReplyFuzzTests {
    @Test("200,000 mutated daemon lines from the seed replies: no crash, no sanitizer report")
    func fuzzReplies() throws {
        _ = try PAMModule.asanPath()
        let corpus = FileManager.default.temporaryDirectory.appendingPathComponent("pam-fuzz-\(getpid())-\(Int.random(in: 0..<1_000_000))").path
        try FileManager.default.createDirectory(atPath: corpus, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: corpus) }
        let run = try TestRealm.run([PAMModule.packageRoot + "/.build/pam/fuzz-reply", "-runs=200000", "-max_len=4096", "-seed=1",
                                     corpus, PAMModule.packageRoot + "/Tests/Fuzz/pam-replies"])
        #expect(run.status == 0, "\(run.output.suffix(4000))")
        #expect(run.output.contains("Done 200000 runs"), "\(run.output.suffix(2000))")
    }
}

/// The production module in pamtester under valgrind: no memory error and no definite leak through
/// authentication (password and OTP), acct_mgmt, a session with its cache, and a password change.
@Suite("pam_krb5verify.so under valgrind (pamtester)", .serialized, .onTestThreads)
struct PAMValgrindTests {
    @Test("authenticate, acct_mgmt, open and close a session; an OTP login; a password change: valgrind finds nothing")
    func memcheck() async throws {
        try await DaemonFixture.with { fixture throws in
            let alice = fixture.realm["USER"]
            let otp = try fixture.realm.addOTPUser(prefix: "pvgo")
            let changer = try fixture.realm.addPrincipal(prefix: "pvgc", password: "Current-Passw0rd")
            let pam = try PAMWrapper(users: [alice, otp, changer])
            defer { pam.remove() }
            try pam.service("vg", PAMModuleTests.stack(fixture).replacingOccurrences(of: "auth     required  /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so\n", with: "")
                .replacingOccurrences(of: "password required  /usr/lib/x86_64-linux-gnu/pam_wrapper/pam_set_items.so\n", with: ""))
            let session = try pam.pamtesterUnderValgrind("vg", user: alice, ["authenticate", "acct_mgmt", "open_session", "close_session"], input: [fixture.realm["USER_PASSWORD"]])
            #expect(session.status == 0, "\(session.output)")
            #expect(session.output.contains("session has successfully been closed"), "\(session.output)")
            let otpLogin = try pam.pamtesterUnderValgrind("vg", user: otp, ["authenticate"], input: [TOTPClock.code(fixture.realm["OTP_SECRET"], leaving: 20)])
            #expect(otpLogin.status == 0, "\(otpLogin.output)")
            let change = try pam.pamtesterUnderValgrind("vg", user: changer, ["chauthtok"], input: ["Current-Passw0rd", "Valgrind-Passw0rd-1", "Valgrind-Passw0rd-1"])
            #expect(change.status == 0, "\(change.output)")
            let wrong = try pam.pamtesterUnderValgrind("vg", user: alice, ["authenticate"], input: ["wrong-Passw0rd"])
            #expect(wrong.status == 1 && wrong.output.contains("Authentication failure"), "\(wrong.output)")
        }
    }
}
