import Foundation
import Kerberos
import LoginProtocol
import TestRealm
import Testing
import VerifyDaemon

/// A real OpenSSH sshd with keyboard-interactive over PAM, pam_krb5verify.so as installed (the sanitized build
/// runs in the pam_wrapper suites; see ``PAMModule/productionPath()``) in `/etc/pam.d/sshd-krb5verify-PID-N`, the daemon in process. Logins by paramiko
/// with a prompt handler that answers by prompt text. sshd and every process it forks or re-executes run under
/// valgrind's memcheck, and each test fails on any error it reports. Needs root (sshd, /etc/pam.d, local
/// accounts), as CI runs.
@Suite("pam_krb5verify.so in sshd with keyboard-interactive", .serialized, .onTestThreads)
struct PAMSSHDTests {
    /// Local accounts with a shell (made when missing) and principals of the same names.
    static let passwordAccount = "k5vpass"
    static let otpAccount = "k5votp"
    static let password = "Ssh-Passw0rd-1"
    /// The PAM service name prefix: sshd takes its program's name as the service, and each sshd of a test gets
    /// its own (`sshd-krb5verify-PID-N`), so that runs in other checkouts on the machine keep their stacks.
    static let service = "sshd-krb5verify"

    static func ensureAccount(_ name: String) throws {
        if getpwnam(name) != nil { return }
        let made = try TestRealm.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", name])
        // getpwnam: or made meanwhile by a run in another checkout.
        guard made.status == 0 || getpwnam(name) != nil else { throw TestRealmError("useradd \(name): \(made.output)") }
    }

    /// valgrind's memcheck for sshd: its forks, and the re-executed sshd of each connection with its own forks
    /// (the monitor, which loads the PAM stack; the PAM process; the preauth child, sandbox off), each logging to
    /// `vg.PID` in `logDirectory`; definite leaks count as errors, sshd's own ones suppressed
    /// (scripts/valgrind.supp). The session's commands (/bin/sh and what it runs) are not followed.
    ///
    /// `--vgdb=no`: valgrind's gdbserver makes `/tmp/vgdb-pipe-*-PID-…` files as the process's user. A process that
    /// made them as root and then took the user's identity cannot remove them, and when a later session child
    /// (the user's) gets the same PID, valgrind cannot make its own and exits 1 before the command runs.
    static func memcheck(logDirectory: String) -> [String] {
        ["valgrind", "--vgdb=no", "--trace-children=yes", "--trace-children-skip=/bin/*,/usr/bin/*", "--child-silent-after-fork=no",
         "--leak-check=full", "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite", "--num-callers=40",
         "--suppressions=\(PAMModule.packageRoot)/scripts/valgrind.supp", "--log-file=\(logDirectory)/vg.%p"]
    }

    /// Waits for every per-connection sshd process memcheck followed to end (its log's `ERROR SUMMARY`, or the
    /// process gone after executing the session's shell), then records an issue for each log reporting errors,
    /// and one if fewer than `connections` connections' monitor and PAM process were checked.
    func expectNoMemcheckErrors(in logDirectory: String, connections: Int) {
        let deadline = ContinuousClock.now + TestRealm.loginTimeout
        var logs: [(pid: pid_t, text: String)] = []
        repeat {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: logDirectory)) ?? []
            logs = names.compactMap { name in
                guard name.hasPrefix("vg."), let pid = pid_t(name.dropFirst(3)),
                      let text = try? String(contentsOfFile: logDirectory + "/" + name, encoding: .utf8),
                      text.contains(" -R\n") else { return nil }  // the re-executed sshd of a connection, and its forks
                return (pid, text)
            }
            if logs.allSatisfy({ $0.text.contains("ERROR SUMMARY:") || kill($0.pid, 0) != 0 }) { break }
            usleep(200_000)
        } while ContinuousClock.now < deadline
        let finished = logs.filter { $0.text.contains("ERROR SUMMARY:") }
        #expect(finished.count >= 2 * connections, "memcheck logs of per-connection sshd processes: \(finished.count) finished of \(logs.count)")
        for log in finished where !log.text.contains("ERROR SUMMARY: 0 errors") {
            Issue.record("memcheck found errors in sshd process \(log.pid) (pam_krb5verify.so loaded there):\n\(log.text.suffix(20_000))")
        }
        for log in logs where !log.text.contains("ERROR SUMMARY:") && kill(log.pid, 0) == 0 {
            Issue.record("sshd process \(log.pid) under memcheck did not end within \(TestRealm.loginTimeout)")
        }
    }


    func stack(socket: String, configFile: String) -> String {
        let module = (try? PAMModule.productionPath()) ?? "pam_krb5verify.so"
        let common = "socket=\(socket) krb5_config=\(configFile)"
        return """
            auth     required  \(module) \(common)
            account  required  \(module) \(common)
            session  required  \(module) \(common)
            password required  \(module) \(common)

            """
    }

    /// The principals of the local accounts on the real KDC.
    static func preparePrincipals(_ realm: TestRealm) throws {
        for account in [passwordAccount, otpAccount] {
            try ensureAccount(account)
            _ = try? realm.kadmin("addprinc", "-pw", password, "+requires_preauth", account)
            try realm.kadmin("cpw", "-pw", password, account)
        }
        // The OTP user has a password too: the KDC offers OTP and the password, and the module asks for both.
        try realm.kadmin("setstr", otpAccount, "otp", "[{\"type\":\"RADIUS\"}]")
    }

    /// Runs `body` with sshd (under memcheck) and a daemon (configured by `configure`) behind the module's stack,
    /// then expects memcheck to have found nothing in any of its connections.
    func withSSHD(configure: @escaping (inout DaemonConfiguration, TestRealm) -> Void = { _, _ in },
                  _ body: (_ port: String, _ fixture: DaemonFixture, _ log: () -> Substring) throws -> Void) async throws {
        let realm = try TestRealm.shared()
        try Self.preparePrincipals(realm)
        let instance = "\(getpid())-\(Int.random(in: 0..<1_000_000))"
        let directory = realm.directory + "/pam-sshd-" + instance
        let service = Self.service + "-" + instance
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let memcheckLogs = "/tmp/pam-sshd-memcheck-" + instance
        // In /tmp, sticky and writable by all: the session's processes, forked after sshd takes the user's identity,
        // open their memcheck logs there too (valgrind exits 1 when it cannot).
        try FileManager.default.createDirectory(atPath: memcheckLogs, withIntermediateDirectories: true)
        chmod(memcheckLogs, 0o1777)
        let (port, sshd) = try TestRealm.startSSHD(in: directory, service: service, passwordAuthentication: false,
                                                   launcher: Self.memcheck(logDirectory: memcheckLogs),
                                                   environment: ["LD_PRELOAD": try PAMModule.sshdSandboxOffPath()])
        defer {
            kill(sshd, SIGTERM)
            unlink("/etc/pam.d/\(service)")
            try? FileManager.default.removeItem(atPath: memcheckLogs)  // what matters is in the issues recorded
        }
        try await DaemonFixture.with(configure: configure) { fixture throws in
            try stack(socket: fixture.socket, configFile: realm.configFile).write(toFile: "/etc/pam.d/\(service)", atomically: true, encoding: .utf8)
            try body(port, fixture, { (try? String(contentsOfFile: directory + "/sshd.log", encoding: .utf8))?.suffix(2000) ?? "" })
        }
        let sshdLog = (try? String(contentsOfFile: directory + "/sshd.log", encoding: .utf8)) ?? ""
        // The logins (each ends in one "Accepted" or "Failed keyboard-interactive/pam"), not startSSHD's probes.
        let logins = sshdLog.split(separator: "\n").filter { $0.hasPrefix("Accepted keyboard-interactive/pam ") || $0.hasPrefix("Failed keyboard-interactive/pam ") }
        expectNoMemcheckErrors(in: memcheckLogs, connections: logins.count)
    }

    @Test("bob types his password and his one-time password (a real TOTP code through FreeRADIUS) at sshd's prompts and logs in; a wrong code is refused")
    func passwordAndOTP() async throws {
        try await withSSHD { port, fixture, log in
            // "TOTP": the client computes the code when the prompt appears.
            let bob = try fixture.realm.sshLogin(port: port, user: Self.otpAccount, answers: ["Password": Self.password, "One-time password": "TOTP"])
            #expect(bob.auth, "\(bob) \(log())")
            #expect(bob.prompts == ["Password: ", "One-time password: "], "\(bob)")
            #expect(bob.status == 0, "\(bob) \(log())")
            let wrong = try fixture.realm.sshLogin(port: port, user: Self.otpAccount, answers: ["Password": Self.password, "One-time password": "000000"])
            #expect(!wrong.auth, "\(wrong)")
        }
    }

    @Test("alice types her password at sshd's prompt and logs in; a wrong password is refused")
    func password() async throws {
        try await withSSHD { port, fixture, log in
            let alice = try fixture.realm.sshLogin(port: port, user: Self.passwordAccount, answers: ["Password": Self.password])
            #expect(alice.auth, "\(alice) \(log())")
            #expect(alice.prompts == ["Password: "], "\(alice)")
            #expect(alice.status == 0, "\(alice) \(log())")
            let wrong = try fixture.realm.sshLogin(port: port, user: Self.passwordAccount, answers: ["Password": "Wrong-Passw0rd"])
            #expect(!wrong.auth, "\(wrong)")
        }
    }

    @Test("KRB5CCNAME in the session names a cache of the user's holding the TGT; sshd's close_session removes it")
    func sessionCache() async throws {
        try await withSSHD { port, fixture, log in
            let realm = fixture.realm
            let uid = getpwnam(Self.passwordAccount).pointee.pw_uid
            let command = "echo \"CC=$KRB5CCNAME\"; stat -c 'owner=%u mode=%a' \"${KRB5CCNAME#FILE:}\"; KRB5_CONFIG=/dev/null klist"
            let session = try fixture.realm.sshLogin(port: port, user: Self.passwordAccount, answers: ["Password": Self.password], command: command)
            #expect(session.auth, "\(session) \(log())")
            #expect(session.output.contains("CC=FILE:/tmp/krb5cc_\(uid)_"), "\(session) \(log())")
            #expect(session.output.contains("owner=\(uid) mode=600"), "\(session)")
            #expect(session.output.contains("Default principal: \(Self.passwordAccount)@\(realm.realm)"), "\(session)")
            #expect(session.output.contains("krbtgt/\(realm.realm)@\(realm.realm)"), "\(session)")
            let line = try #require(session.output.split(separator: "\n").first { $0.hasPrefix("CC=FILE:") })
            let path = String(line.dropFirst("CC=FILE:".count))
            // sshd closes the PAM session as the connection ends.
            var gone = false
            for _ in 0..<Int(TestRealm.loginTimeout.components.seconds * 10) where !gone {
                gone = !FileManager.default.fileExists(atPath: path)
                if !gone { usleep(100_000) }
            }
            #expect(gone, "the session's cache \(path) outlived the session")
        }
    }

    @Test("carol types her smart card's PIN at the prompt that names the token and logs in")
    func smartCardPIN() async throws {
        let realm = try TestRealm.shared()
        let carol = realm["PKINIT_USER"]
        try Self.ensureAccount(carol)
        setenv("SOFTHSM2_CONF", realm["SOFTHSM2_CONF"], 1)
        try await withSSHD(configure: { configuration, realm in
            configuration.login.preauthOptions = [.init(name: "X509_user_identity", value: realm["PKCS11_IDENTITY"])]
            configuration.login.armor = .none
        }) { port, fixture, log in
            let label = fixture.realm["TOKEN_LABEL"]
            let login = try fixture.realm.sshLogin(port: port, user: carol, answers: ["PIN for \(label)": fixture.realm["TOKEN_PIN"]])
            #expect(login.auth, "\(login) \(log()) \(fixture.logs.text.suffix(2000))")
            #expect(login.prompts == ["PIN for \(label): "], "\(login)")
            #expect(login.status == 0, "\(login) \(log())")
        }
    }

    @Test("a rogue KDC that knows the attacker's password is refused: its ticket does not verify against the host keytab")
    func rogueKDC() async throws {
        try await withSSHD(configure: { configuration, realm in configuration.login.krb5 = .files(realm["KRB5_ROGUE_CONFIG_FILE"]) }) { port, fixture, _ in
            // The rogue KDC's database has alice with the attacker's password (docs/test-kdc.md); a local alice logs in.
            let alice = fixture.realm["USER"]
            try Self.ensureAccount(alice)
            let rogue = try fixture.realm.sshLogin(port: port, user: alice, answers: ["Password": fixture.realm["ROGUE_PASSWORD"]])
            #expect(!rogue.auth, "\(rogue)")
            #expect(rogue.prompts == ["Password: "], "\(rogue)")
            #expect(fixture.logs.text.contains("verification-failed"), "\(fixture.logs.text.suffix(2000))")
        }
    }
}
