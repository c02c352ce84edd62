import Foundation
import Kerberos
@testable import LoginHelper
import TestRealm
import Testing

/// krb5-login under pam_exec: PAM types, the secure context, authorization, what reaches standard output.
@Suite("krb5-login under pam_exec", .onTestThreads)
struct PAMExecTests {
    let realm: TestRealm
    let binary = TestRealm.executable("krb5-login")
    init() throws { realm = try TestRealm.shared() }

    var base: [String] {
        [binary, "--pam-exec"] + realm.helperFlags()
    }

    func pam(_ user: String, _ password: String, extra: [String] = [], type: String = "auth", config: String? = nil,
             environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        var arguments = base + extra
        if let config { arguments[3] = config }
        let env = ["PAM_USER": user, "PAM_TYPE": type, "PAM_SERVICE": "test"].merging(environment) { $1 }
        return try TestRealm.run(arguments, environment: env, inputBytes: Array(password.utf8) + [0])
    }

    /// Standard output alone (standard error dropped), as pam_exec's `stdout` option passes it on.
    func pamStdout(_ user: String, _ password: String, extra: [String]) throws -> (status: Int32, output: String) {
        let command = (base + extra).map { "'\($0)'" }.joined(separator: " ")
        return try TestRealm.run(["sh", "-c", "printf '%s\\0' \"$KRB5_TEST_SECRET\" | \(command) 2>/dev/null"],
                                 environment: ["PAM_USER": user, "PAM_TYPE": "auth", "KRB5_TEST_SECRET": password], inputBytes: [])
    }

    // MARK: issue 11, item 17

    @Test("--help and -h print help and exit 0, for krb5-login and krb5-verifyd")
    func help() throws {
        for name in ["krb5-login", "krb5-verifyd"] {
            for flag in ["--help", "-h"] {
                let result = try TestRealm.run([TestRealm.executable(name), flag], input: "")
                #expect(result.status == 0, "\(name) \(flag): \(result.output)")
                #expect(result.output.contains("USAGE: \(name)"), "\(name) \(flag): \(result.output)")
            }
        }
    }

    // MARK: issue 11, item 12

    @Test("each PAM_TYPE: password refused with a message, sessions and account pass, unknown types refused")
    func pamTypes() throws {
        let password = try pam("anyone", "x", type: "password")
        #expect(password.status == 1)
        #expect(password.output.contains("PAM_TYPE=password"))
        #expect(password.output.contains("kpasswd"))
        for type in ["account", "open_session", "close_session"] {
            #expect(try pam("anyone", "x", type: type).status == 0, "\(type)")
        }
        let unknown = try pam("anyone", "x", type: "chauthtok")
        #expect(unknown.status == 1)
        #expect(unknown.output.contains("refused"))
        #expect(LoginHelper.PAMType(nil) == .auth)
        #expect(LoginHelper.PAMType("password") == .password)
    }

    @Test("a secure context in pam-exec mode and for set-uid use: KRB5_TRACE and KRB5_KTNAME from the PAM environment are ignored")
    func secureContext() throws {
        let trace = realm.directory + "/pam-trace-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        defer { unlink(trace) }
        let traced = try pam(realm["USER"], realm["USER_PASSWORD"], extra: ["--no-authorize"], environment: ["KRB5_TRACE": trace])
        #expect(traced.status == 0, "\(traced.output)")
        #expect(!FileManager.default.fileExists(atPath: trace), "KRB5_TRACE was honoured under pam_exec")

        // No --keytab: only the environment names the realm's keytab, and a secure context does not read it.
        var arguments = base
        arguments.removeSubrange(4...5)
        let keytab = try TestRealm.run(arguments + ["--no-authorize"],
                                       environment: ["PAM_USER": realm["USER"], "PAM_TYPE": "auth", "KRB5_KTNAME": realm["HOST_KEYTAB"]],
                                       inputBytes: Array(realm["USER_PASSWORD"].utf8) + [0])
        #expect(keytab.status == 1, "KRB5_KTNAME was honoured under pam_exec: \(keytab.output)")

        #expect(LoginHelper.usesSecureContext(mode: .pamExec, realUID: 0, effectiveUID: 0))
        #expect(LoginHelper.usesSecureContext(mode: .lines, realUID: 1000, effectiveUID: 0))
        #expect(!LoginHelper.usesSecureContext(mode: .lines, realUID: 1000, effectiveUID: 1000))
        #expect(!LoginHelper.usesSecureContext(mode: .conversation, realUID: 0, effectiveUID: 0))
    }

    // MARK: issue 14, authorization

    /// A krb5.conf with a k5login directory of its own and, optionally, an auth_to_local rule mapping `x/admin` to `x`
    /// (MIT's rule substitution does not escape `/`, hence the `;` in the selection string).
    func authorizationConfig(rule: Bool) throws -> (config: String, k5login: String) {
        let directory = realm.directory + "/authz-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        try FileManager.default.createDirectory(atPath: directory + "/k5login", withIntermediateDirectories: true)
        var text = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        text = text.replacingOccurrences(of: "[libdefaults]\n", with: "[libdefaults]\n k5login_directory = \(directory)/k5login\n")
        if rule {
            text = text.replacingOccurrences(of: " \(realm.realm) = {\n", with: " \(realm.realm) = {\n  auth_to_local = RULE:[2:$1;$2@$0](^.*;admin@\(realm.realm)$)s/;admin@.*$//\n  auth_to_local = DEFAULT\n")
        }
        try text.write(toFile: directory + "/krb5.conf", atomically: true, encoding: .utf8)
        return (directory + "/krb5.conf", directory + "/k5login")
    }

    /// A principal named like a local account (bin, daemon/admin), with a known password.
    func accountPrincipal(_ name: String) throws -> String {
        let password = "acct-\(name.replacingOccurrences(of: "/", with: "-"))-Passw0rd"
        _ = try? realm.kadmin("addprinc", "-pw", password, name)
        try realm.kadmin("cpw", "-pw", password, name)
        return password
    }

    @Test("authorization after a verified login: .k5login files, auth_to_local, --principal-format and --no-authorize")
    func authorization() throws {
        let bin = try accountPrincipal("bin")
        let daemonAdmin = try accountPrincipal("daemon/admin")
        let plain = try authorizationConfig(rule: false)
        let ruled = try authorizationConfig(rule: true)

        // No .k5login for bin: the default auth_to_local maps bin@REALM to bin.
        #expect(try pam("bin", bin, config: plain.config).status == 0)
        // A .k5login exists and does not list bin@REALM: verified but not authorized.
        try "\(realm["USER"])@\(realm.realm)\n".write(toFile: plain.k5login + "/bin", atomically: true, encoding: .utf8)
        let refused = try pam("bin", bin, config: plain.config)
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("not-authorized"))
        #expect(refused.output.contains("is verified but not allowed to log in as bin"))
        #expect(try pam("bin", bin, extra: ["--no-authorize"], config: plain.config).status == 0)
        // The .k5login lists alice: alice's principal may log in as bin (--principal-format without %s).
        #expect(try pam("bin", realm["USER_PASSWORD"], extra: ["--principal-format", realm["USER"]], config: plain.config).status == 0)
        // A wrong password stays a failed login, not an authorization question.
        #expect(try pam("bin", "wrong", config: plain.config).output.contains("bad-credentials"))

        // %s/admin: daemon/admin@REALM; no default rule maps two components, the realm's rule does.
        let unmapped = try pam("daemon", daemonAdmin, extra: ["--principal-format", "%s/admin"], config: plain.config)
        #expect(unmapped.status == 1, "\(unmapped.output)")
        #expect(unmapped.output.contains("not-authorized"))
        #expect(try pam("daemon", daemonAdmin, extra: ["--principal-format", "%s/admin"], config: ruled.config).status == 0)
        // %s@REALM spelled out.
        #expect(try pam("daemon", daemonAdmin, extra: ["--principal-format", "%s/admin@\(realm.realm)"], config: ruled.config).status == 0)
        // An account that does not exist is never authorized.
        #expect(try pam("no-such-account-\(getpid())", realm["USER_PASSWORD"], extra: ["--principal-format", realm["USER"]]).status == 1)

        #expect(LoginHelper.principal(forUser: "bob", format: "%s@OTHER.REALM") == "bob@OTHER.REALM")
        #expect(LoginHelper.principal(forUser: "bob", format: "%s/admin") == "bob/admin")
        #expect(LoginHelper.principal(forUser: "bob", format: "100%%-%s") == "100%-bob")
        #expect(LoginHelper.principal(forUser: "bob", format: "%d") == nil)
        #expect(try TestRealm.run([binary, "--pam-exec", "--principal-format", "%x"], input: "").status == 2)
    }

    // MARK: issue 14, expiry warnings and expired passwords

    @Test("expiry warnings on standard output and nothing else; through pamtester with pam_exec stdout")
    func expiryWarnings() throws {
        let password = "soon-Passw0rd1"
        let user = try realm.addPrincipal(prefix: "soon", password: password, attributes: ["-pwexpire", "now + 3 days"])
        let direct = try pamStdout(user, password, extra: ["--no-authorize"])
        #expect(direct.status == 0)
        let lines = direct.output.split(separator: "\n")
        #expect(lines.count == 1, "\(direct.output)")
        #expect(lines.first?.hasPrefix("Password expires in 2 days") == true || lines.first?.hasPrefix("Password expires in 3 days") == true, "\(direct.output)")
        let quiet = try pamStdout(realm["USER"], realm["USER_PASSWORD"], extra: ["--no-authorize"])
        #expect(quiet.status == 0)
        #expect(quiet.output.isEmpty, "stdout of a login without warnings: \(quiet.output)")
        let failed = try pamStdout(user, "wrong", extra: ["--no-authorize"])
        #expect(failed.status == 1)
        #expect(failed.output.isEmpty)

        let service = "krb5-login-stdout-\(getpid())"
        let file = "/etc/pam.d/\(service)"
        try "auth required pam_exec.so expose_authtok stdout quiet \((base + ["--no-authorize"]).joined(separator: " "))\nauth optional pam_permit.so\naccount required pam_permit.so\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        defer { unlink(file) }
        let through = try TestRealm.run(["pamtester", service, user, "authenticate"], input: password + "\n")
        #expect(through.output.contains("successfully authenticated"), "\(through.output)")
        #expect(through.output.contains("Password expires in"), "\(through.output)")
    }

    @Test("an expired password under pam_exec: a clear message and exit 1, at once")
    func expiredPassword() throws {
        let result = try pam(realm["EXPIRED_USER"], realm["EXPIRED_PASSWORD"], extra: ["--no-authorize"])
        #expect(result.status == 1, "\(result.output)")
        #expect(result.output.contains("the password has expired"), "\(result.output)")
        #expect(result.output.contains("kpasswd"))
        let stdout = try pamStdout(realm["EXPIRED_USER"], realm["EXPIRED_PASSWORD"], extra: ["--no-authorize"])
        #expect(stdout.output.isEmpty)
    }
}

/// The credential-cache hand-over and the daemon relay's checks (issue 11, items 5 and 8).
@Suite("krb5-login hand-over and daemon checks", .onTestThreads)
struct HandOverTests {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "handover-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("the cache hand-over does not follow a symlink swapped in for the cache, nor a hard link")
    func symlinkSwap() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let victim = directory + "/victim"
        try "root's file\n".write(toFile: victim, atomically: false, encoding: .utf8)
        chmod(victim, 0o644)
        let cache = directory + "/krb5cc"
        #expect(symlink(victim, cache) == 0)
        #expect(throws: CacheHandOver.Refused.self) { try CacheHandOver.give(path: cache, uid: 65534, gid: 65534) }
        var info = stat()
        #expect(stat(victim, &info) == 0)
        #expect(info.st_uid == geteuid() && info.st_mode & 0o777 == 0o644, "the symlink's target was changed")

        unlink(cache)
        #expect(link(victim, cache) == 0)
        #expect(throws: CacheHandOver.Refused.self) { try CacheHandOver.give(path: cache, uid: 65534, gid: 65534) }
        #expect(stat(victim, &info) == 0 && info.st_uid == geteuid())

        unlink(cache)
        try "cache".write(toFile: cache, atomically: false, encoding: .utf8)
        try CacheHandOver.give(path: cache, uid: 65534, gid: 65534)
        #expect(stat(cache, &info) == 0 && info.st_uid == 65534 && info.st_gid == 65534 && info.st_mode & 0o777 == 0o600)
    }

    /// A one-shot fake krb5-verifyd: answers any login with `ok: true` and the given `verified`, listening as `uid`.
    func fakeDaemon(verified: Bool, uid: UInt32, in directory: String) throws -> (socket: String, process: ChildProcess) {
        let socket = directory + "/fake.sock"
        let script = """
        import json, os, socket, sys
        path, verified, uid = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, 0o777)
        if uid:
            os.setgid(uid); os.setuid(uid)
        s.listen(1)
        print("ready", flush=True)
        s.settimeout(30)
        c, _ = s.accept()
        c.recv(65536)
        c.sendall((json.dumps({"type": "result", "ok": True, "principal": "alice@KRB5.TEST", "verified": verified}) + "\\n").encode())
        c.close()
        """
        let process = try ChildProcess(["python3", "-c", script, socket, verified ? "1" : "0", String(uid)], output: .pipe)
        _ = process.readSome()   // "ready"
        return (socket, process)
    }

    @Test("--daemon requires verified: true unless --allow-unverified, and a socket served by root, this user or --daemon-uid")
    func daemonChecks() throws {
        let binary = TestRealm.executable("krb5-login")
        let directory = try temporaryDirectory()
        chmod(directory, 0o755)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let input = "alice\nsome-password\n"

        var fake = try fakeDaemon(verified: false, uid: 0, in: directory)
        let unverified = try TestRealm.run([binary, "--daemon", fake.socket], input: input)
        fake.process.wait()
        #expect(unverified.status == 1, "\(unverified.output)")
        #expect(unverified.output.contains("not verified"))
        unlink(fake.socket)

        fake = try fakeDaemon(verified: false, uid: 0, in: directory)
        let allowed = try TestRealm.run([binary, "--daemon", fake.socket, "--allow-unverified"], input: input)
        fake.process.wait()
        #expect(allowed.status == 0, "\(allowed.output)")
        unlink(fake.socket)

        fake = try fakeDaemon(verified: true, uid: 65534, in: directory)
        let foreign = try TestRealm.run([binary, "--daemon", fake.socket], input: input)
        #expect(foreign.status == 3, "\(foreign.output)")
        #expect(foreign.output.contains("served by uid 65534"))
        fake.process.terminate()
        fake.process.wait()
        unlink(fake.socket)

        fake = try fakeDaemon(verified: true, uid: 65534, in: directory)
        let named = try TestRealm.run([binary, "--daemon", fake.socket, "--daemon-uid", "65534"], input: input)
        fake.process.wait()
        #expect(named.status == 0, "\(named.output)")
    }
}
