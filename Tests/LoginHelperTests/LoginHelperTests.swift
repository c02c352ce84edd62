import Foundation
import Kerberos
import LoginHelper
import LoginProtocol
import LoginService
import TestRealm
import Testing
import VerifyDaemon

/// `krb5-login` run as a process, the way PAM stacks and login programs run it.
@Suite("krb5-login end to end", .onTestThreads)
struct LoginHelperTests {
    let realm: TestRealm
    let binary = TestRealm.executable("krb5-login")
    init() throws { realm = try TestRealm.shared() }

    /// The flags every run needs: the realm's configuration, keytab and server principal, and the tests' login timeout.
    var base: [String] {
        [binary] + realm.helperFlags()
    }

    func run(_ extra: [String] = [], input: [UInt8], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try TestRealm.run(base + extra, environment: environment, inputBytes: input)
    }

    @Test("line mode: principal then password; exit 0, 1 for a wrong password, 2 for missing input")
    func lineMode() throws {
        #expect(try run(input: Array("\(realm["USER"])\n\(realm["USER_PASSWORD"])\n".utf8)).status == 0)
        let denied = try run(input: Array("\(realm["USER"])\nwrong\n".utf8))
        #expect(denied.status == 1)
        #expect(denied.output.contains("bad-credentials"))
        #expect(!denied.output.contains("wrong\n"))
        #expect(try run(input: Array("\(realm["USER"])\n".utf8)).status == 2, "no password line")
        #expect(try run(input: []).status == 2, "empty input")
        #expect(try run(input: [0xFF, 0xFE, 0x0A, 0x41, 0x0A]).status == 2, "a principal that is not UTF-8")
    }

    @Test("pam-exec mode: PAM_USER and a NUL-terminated password; other PAM_TYPEs pass without the KDC")
    func pamExecMode() throws {
        let env = ["PAM_USER": realm["USER"], "PAM_TYPE": "auth", "PAM_SERVICE": "login"]
        // The realm's users have no local accounts: authorization (PAMExecTests) is off here.
        #expect(try run(["--pam-exec", "--no-authorize"], input: Array(realm["USER_PASSWORD"].utf8) + [0], environment: env).status == 0)
        #expect(try run(["--pam-exec", "--no-authorize"], input: Array(realm["USER_PASSWORD"].utf8), environment: env).status == 0, "NUL-less input ends at EOF")
        // (palice: the sshd suites make a local alice for their logins; no suite makes a local palice.)
        let preauthUser = ["PAM_USER": realm["PREAUTH_USER"], "PAM_TYPE": "auth", "PAM_SERVICE": "login"]
        let unauthorized = try run(["--pam-exec"], input: Array(realm["PREAUTH_PASSWORD"].utf8) + [0], environment: preauthUser)
        #expect(unauthorized.status == 1, "no local account \(realm["PREAUTH_USER"]): \(unauthorized.output)")
        #expect(try run(["--pam-exec"], input: Array("wrong".utf8) + [0], environment: env).status == 1)
        #expect(try run(["--pam-exec"], input: [0xC3, 0x28, 0x01, 0x7F] + [0], environment: env).status == 1, "binary password: denied, no crash")
        #expect(try run(["--pam-exec"], input: [], environment: env).status == 2, "empty input")
        #expect(try run(["--pam-exec"], input: Array(repeating: 0x41, count: 600), environment: env).status == 2, "over PAM_MAX_RESP_SIZE")
        #expect(try run(["--pam-exec"], input: Array("x".utf8), environment: ["PAM_TYPE": "auth"]).status == 2, "no PAM_USER")
        #expect(try run(["--pam-exec"], input: [], environment: ["PAM_USER": "u", "PAM_TYPE": "account"]).status == 0, "account stack")
    }

    @Test("every exit-status class: unavailable when no KDC answers, usage for bad flags")
    func exitClasses() throws {
        let path = realm.directory + "/krb5-nokdc.conf"
        try "[libdefaults]\n default_realm = \(realm.realm)\n[realms]\n \(realm.realm) = {\n  kdc = 127.0.0.1:9\n }\n".write(toFile: path, atomically: true, encoding: .utf8)
        let unreachable = try TestRealm.run([binary, "--krb5-config", path, "--keytab", realm["HOST_KEYTAB"]], input: "\(realm["USER"])\nx\n")
        #expect(unreachable.status == 3)
        #expect(unreachable.output.contains("kdc-unreachable"))
        #expect(try TestRealm.run([binary, "--no-such-flag"], input: "").status == 2)
        #expect(try TestRealm.run([binary, "--fast-required"], input: "").status == 2)
        #expect(try TestRealm.run([binary, "--version"], input: "").output.contains(KerberosVersion.current))
    }

    /// MIT clients correct a skewed clock from the KDC's error (kdc_timesync, on by default); with it off,
    /// a client an hour ahead (libfaketime) meets the KDC's skew check.
    @Test("a client clock an hour off gives clock-skew (exit 3), and with kdc_timesync on it still logs in")
    func clockSkew() throws {
        let path = realm.directory + "/krb5-notimesync.conf"
        try String(contentsOfFile: realm.configFile, encoding: .utf8)
            .replacingOccurrences(of: "[libdefaults]", with: "[libdefaults]\n kdc_timesync = 0").write(toFile: path, atomically: true, encoding: .utf8)
        let input = "\(realm["USER"])\n\(realm["USER_PASSWORD"])\n"
        let skewed = try TestRealm.run(["faketime", "-f", "+1h", binary] + realm.helperFlags(krb5Config: path), input: input)
        #expect(skewed.status == 3, "\(skewed.output)")
        #expect(skewed.output.contains("clock-skew"))
        let corrected = try TestRealm.run(["faketime", "-f", "+1h", binary] + realm.helperFlags(), input: input)
        #expect(corrected.status == 0, "\(corrected.output)")
    }

    @Test("credentials from a rogue KDC of the same realm are denied")
    func rogueKDC() throws {
        let result = try TestRealm.run([binary] + realm.helperFlags(krb5Config: realm["KRB5_ROGUE_CONFIG_FILE"]),
                                       input: "\(realm["USER"])\n\(realm["ROGUE_PASSWORD"])\n")
        #expect(result.status == 1)
        #expect(result.output.contains("verification-failed"))
    }

    @Test("--ccache leaves a cache klist reads, owned by the target uid with mode 0600")
    func ccache() throws {
        let path = "/tmp/krb5cc_test_\(getpid())_\(Int.random(in: 1000...9999))"
        defer { unlink(path) }
        let result = try run(["--ccache", "FILE:\(path)", "--uid", "65534", "--gid", "65534"], input: Array("\(realm["USER"])\n\(realm["USER_PASSWORD"])\n".utf8))
        #expect(result.status == 0, "\(result.output)")
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_uid == 65534 && info.st_gid == 65534)
        #expect(info.st_mode & 0o777 == 0o600)
        let klist = try TestRealm.run(["klist", "-c", "FILE:\(path)"], environment: ["KRB5_CONFIG": realm.configFile])
        #expect(klist.output.contains("\(realm["USER"])@\(realm.realm)"))
        #expect(klist.output.contains("krbtgt/\(realm.realm)"))
    }

    @Test("the real Linux-PAM stack: pamtester → pam_exec expose_authtok → krb5-login")
    func pamtester() throws {
        let service = "krb5-login-test-\(getpid())"
        let file = "/etc/pam.d/\(service)"
        let command = base.joined(separator: " ") + " --pam-exec --no-authorize"
        try "auth required pam_exec.so expose_authtok quiet \(command)\naccount required pam_permit.so\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        let ok = try TestRealm.run(["pamtester", service, realm["USER"], "authenticate"], input: realm["USER_PASSWORD"] + "\n")
        #expect(ok.output.contains("successfully authenticated"), "\(ok.output)")
        let denied = try TestRealm.run(["pamtester", service, realm["USER"], "authenticate"], input: "wrong-password\n")
        #expect(denied.status != 0)
        #expect(!denied.output.contains("successfully authenticated"))
        // The forged-KDC case through PAM: the helper pointed at the rogue KDC of the same realm, which issues a
        // real TGT for the attacker's password; only verification against the host keytab refuses it.
        let rogueCommand = ([binary] + realm.helperFlags(krb5Config: realm["KRB5_ROGUE_CONFIG_FILE"])).joined(separator: " ")
        try "auth required pam_exec.so expose_authtok quiet \(rogueCommand) --pam-exec --no-authorize\naccount required pam_permit.so\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let rogueLog = realm.directory + "/rogue/kdc.log"
        let issuedBefore = Self.issued(to: realm["USER"], in: rogueLog)
        let rogue = try TestRealm.run(["pamtester", service, realm["USER"], "authenticate"], input: realm["ROGUE_PASSWORD"] + "\n")
        #expect(rogue.status != 0 && !rogue.output.contains("successfully authenticated"), "\(rogue.output)")
        #expect(Self.issued(to: realm["USER"], in: rogueLog) > issuedBefore, "the rogue KDC did issue a ticket: verification refused it")
    }

    /// The tickets a KDC's log says it issued to `user`.
    static func issued(to user: String, in log: String) -> Int {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("ISSUE:") && $0.contains(" \(user)@") }.count
    }

    @Test("conversation mode: OTP question on stdout, answer on stdin, result last")
    func conversationOTP() throws {
        let user = try realm.addOTPUser(prefix: "hotp")
        let code = TOTPCode.now(realm["OTP_SECRET"])
        let input = "{\"type\":\"login\",\"principal\":\"\(user)\"}\n{\"type\":\"answers\",\"id\":1,\"answers\":{\"otp\":{\"token\":0,\"value\":\"\(code)\"}}}\n"
        let result = try run(["--conversation", "--armor", "anonymous"], input: Array(input.utf8))
        #expect(result.status == 0, "\(result.output)")
        let lines = result.output.split(separator: "\n")
        #expect(lines.first?.contains(#""kind":"otp""#) == true)
        #expect(lines.last?.contains(#""ok":true"#) == true)
        #expect(!result.output.contains(code))
    }

    @Test("conversation mode: PKINIT pass phrase as a pkinit answer")
    func conversationPKINIT() throws {
        let identity = "FILE:\(realm["PKINIT_CERT"]),\(realm["PKINIT_KEY"])"
        let input = "{\"type\":\"login\",\"principal\":\"\(realm["PKINIT_USER"])\"}\n{\"type\":\"answers\",\"id\":1,\"answers\":{\"pkinit\":{\"\(identity)\":\"\(realm["PKINIT_KEY_PASSPHRASE"])\"}}}\n"
        let result = try run(["--conversation", "--pkinit-identity", identity], input: Array(input.utf8))
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains(#""kind":"pkinit""#))
    }

    @Test("interactive mode on a pseudo-terminal: the password prompt hides input")
    func interactive() throws {
        let script = """
        import pexpect, sys
        child = pexpect.spawn(sys.argv[1], sys.argv[2:], encoding="utf-8", timeout=20)
        child.expect("Password for")
        child.sendline(sys.stdin.readline().strip())
        child.expect(pexpect.EOF)
        child.close()
        sys.exit(child.exitstatus)
        """
        let result = try TestRealm.run(["python3", "-c", script] + base + [realm["USER"]], input: realm["USER_PASSWORD"] + "\n")
        #expect(result.status == 0, "\(result.output)")
        let denied = try TestRealm.run(["python3", "-c", script] + base + [realm["USER"]], input: "wrong\n")
        #expect(denied.status == 1, "\(denied.output)")
    }

    @Test("relay through krb5-verifyd's conversation socket")
    func daemonRelay() async throws {
        var configuration = DaemonConfiguration()
        configuration.socket = SocketClient.temporaryPath("relay")
        configuration.login = LoginConfiguration(krb5: .files(realm.configFile), keytab: realm["HOST_KEYTAB"], serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: .anonymous)
        configuration.login.loginTimeout = TestRealm.loginTimeout
        configuration.failureFloor = .zero
        let daemon = try VerifyDaemon(configuration: configuration)
        try await daemon.start()
        let ok = try TestRealm.run([binary, "--daemon", configuration.socket!], input: "\(realm["USER"])\n\(realm["USER_PASSWORD"])\n")
        #expect(ok.status == 0, "\(ok.output)")
        let denied = try TestRealm.run([binary, "--daemon", configuration.socket!], input: "\(realm["USER"])\nwrong\n")
        #expect(denied.status == 1)
        let user = try realm.addOTPUser(prefix: "rotp")
        let code = TOTPCode.now(realm["OTP_SECRET"])
        let input = "{\"type\":\"login\",\"principal\":\"\(user)\"}\n{\"type\":\"answers\",\"id\":1,\"answers\":{\"otp\":{\"token\":0,\"value\":\"\(code)\"}}}\n"
        let otp = try TestRealm.run([binary, "--conversation", "--daemon", configuration.socket!], input: input)
        #expect(otp.status == 0, "\(otp.output)")
        await daemon.shutdown()
        let gone = try TestRealm.run([binary, "--daemon", configuration.socket!], input: "\(realm["USER"])\nx\n")
        #expect(gone.status == 3, "daemon unreachable: \(gone.output)")
    }
}

enum TOTPCode {
    static func now(_ secret: String) -> String {
        let left = 30 - Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 30)
        if left < 5 { Thread.sleep(forTimeInterval: left + 0.2) }
        return TOTP.code(secret: TOTP.base32Decode(secret), time: UInt64(Date().timeIntervalSince1970))
    }
}
