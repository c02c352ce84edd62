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
                for method in [TestRealm.SSHMethod.password, .keyboardInteractive] {
                    let result = try realm.sshLogin(port: port, user: account, method: method, password: secret)
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
        let dropped = try realm.sshLogin(port: port, user: account, password: password)
        #expect(!dropped.session, "\(dropped)")
        #expect(log().contains("pam_setcred(): Permission denied"))
    }
}
