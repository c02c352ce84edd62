import Foundation
import TestRealm
import Testing

/// A real PAM consumer: OpenSSH's sshd on a loopback port, started as `sshd-test` so that it reads
/// `/etc/pam.d/sshd-test`, logged into with paramiko by password and by keyboard-interactive, through every
/// PAM stack docs/login-helper.md shows. Needs root (sshd, /etc/pam.d), as CI runs.
@Suite("sshd through the documented PAM stacks", .serialized, .onTestThreads)
struct SSHDTests {
    let realm: TestRealm
    let binary = TestRealm.executable("krb5-login")
    /// A local account (no login shell, no password of its own) with a principal of the same name.
    let account = "daemon"
    let password = "acct-daemon-Passw0rd"
    init() throws { realm = try TestRealm.shared() }

    /// The stacks of docs/login-helper.md, with this realm's flags in place of `KRB5LOGIN`.
    static let documentedStacks: [(name: String, text: String)] = [
        ("pam_exec alone", """
            auth     required  pam_exec.so expose_authtok quiet KRB5LOGIN
            auth     optional  pam_permit.so
            account  required  pam_permit.so
            session  required  pam_permit.so
            """),
        ("beside pam_unix", """
            auth     [success=2 default=ignore]  pam_unix.so nullok
            auth     [success=1 default=ignore]  pam_exec.so expose_authtok quiet KRB5LOGIN
            auth     requisite                   pam_deny.so
            auth     required                    pam_permit.so
            account  required                    pam_permit.so
            session  required                    pam_permit.so
            """),
    ]

    static let client = """
        import json, socket, sys, paramiko
        host, port, user, method = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        password = sys.stdin.readline().rstrip("\\n")
        result = {"auth": False, "session": False}
        sock = socket.create_connection((host, port), timeout=30)
        t = paramiko.Transport(sock)
        try:
            t.start_client(timeout=30)
            if method == "password":
                t.auth_password(user, password, fallback=False)
            else:
                t.auth_interactive(user, lambda title, instructions, prompts: [password for _ in prompts])
            result["auth"] = t.is_authenticated()
        except Exception as e:
            result["error"] = repr(e)
        if result["auth"]:
            # sshd calls pam_setcred and opens the PAM session only now: a stack whose setcred fails drops the connection here.
            try:
                chan = t.open_session(timeout=30)
                chan.exec_command("true")
                status = chan.recv_exit_status()
                result["session"] = status != -1
            except Exception as e:
                result["session_error"] = repr(e)
        t.close()
        print(json.dumps(result))
        """

    struct Attempt: Decodable {
        var auth: Bool
        var session: Bool
        var error: String?
    }

    func attempt(port: String, method: String, password: String) throws -> Attempt {
        let result = try TestRealm.run(["/usr/bin/python3", "-c", Self.client, "127.0.0.1", port, account, method], input: password + "\n")
        let line = result.output.split(separator: "\n").last.map(String.init) ?? ""
        guard let attempt = try? JSONDecoder().decode(Attempt.self, from: Data(line.utf8)) else {
            throw TestRealmError("paramiko client: \(result.output)")
        }
        return attempt
    }

    /// Gives the local account a principal of its own name, on the real KDC with `password` and on the rogue
    /// KDC with the attacker's password.
    func preparePrincipals() throws {
        _ = try? realm.kadmin("addprinc", "-pw", password, account)
        try realm.kadmin("cpw", "-pw", password, account)
        let rogue = ["env", "KRB5_CONFIG=\(realm["KRB5_ROGUE_CONFIG_FILE"])", "KRB5_KDC_PROFILE=\(realm.directory)/rogue/kdc.conf",
                     "kadmin.local", "-r", realm.realm]
        _ = try TestRealm.run(rogue + ["addprinc", "-pw", realm["ROGUE_PASSWORD"], account])
        _ = try TestRealm.run(rogue + ["cpw", "-pw", realm["ROGUE_PASSWORD"], account])
    }

    @Test("right password logs in and opens a session, wrong password and rogue KDC are refused; password and keyboard-interactive; every documented stack")
    func documentedStacks() throws {
        try preparePrincipals()
        let directory = realm.directory + "/sshd-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let (port, sshd) = try TestRealm.startSSHD(in: directory, service: "sshd-test", passwordAuthentication: true)
        defer {
            kill(sshd, SIGTERM)
            unlink("/etc/pam.d/sshd-test")
        }
        let log = { (try? String(contentsOfFile: directory + "/sshd.log", encoding: .utf8))?.suffix(1500) ?? "" }
        for stack in Self.documentedStacks {
            for (kdc, config, secret, accepted) in [("real KDC, right password", realm.configFile, password, true),
                                                    ("real KDC, wrong password", realm.configFile, "wrong-Passw0rd", false),
                                                    ("rogue KDC, attacker's password", realm["KRB5_ROGUE_CONFIG_FILE"], realm["ROGUE_PASSWORD"], false)] {
                let command = ([binary, "--pam-exec"] + realm.helperFlags(krb5Config: config)).joined(separator: " ")
                try (stack.text.replacingOccurrences(of: "KRB5LOGIN", with: command) + "\n")
                    .write(toFile: "/etc/pam.d/sshd-test", atomically: true, encoding: .utf8)
                for method in ["password", "keyboard-interactive"] {
                    let result = try attempt(port: port, method: method, password: secret)
                    #expect(result.auth == accepted, "\(stack.name), \(kdc), \(method): \(result) \(log())")
                    #expect(result.session == accepted, "\(stack.name), \(kdc), \(method): session \(result) \(log())")
                }
            }
        }
        // Why the stacks carry `auth optional pam_permit.so`: without it, sshd accepts keyboard-interactive,
        // then pam_setcred fails (pam_exec answers "ignore" there) and sshd drops the connection.
        let command = ([binary, "--pam-exec"] + realm.helperFlags()).joined(separator: " ")
        try "auth required pam_exec.so expose_authtok quiet \(command)\naccount required pam_permit.so\nsession required pam_permit.so\n"
            .write(toFile: "/etc/pam.d/sshd-test", atomically: true, encoding: .utf8)
        let dropped = try attempt(port: port, method: "keyboard-interactive", password: password)
        #expect(!dropped.session, "\(dropped)")
        #expect(log().contains("pam_setcred(): Permission denied"))
    }
}
