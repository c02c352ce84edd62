import Foundation
#if canImport(Glibc)
public import Glibc
#endif

extension TestRealm {
    /// Waits for an sshd the test started (`sshd -f …` forks, and its parent exits at once) to be ready: its pid file
    /// written and `port` on 127.0.0.1 accepting connections. Returns the daemon's pid, or nil when it is not ready
    /// within ``loginTimeout``.
    public static func waitForSSHD(pidFile: String, port: String) -> pid_t? {
        let deadline = ContinuousClock.now + loginTimeout
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
               (try? run(["/usr/bin/python3", "-c", "import socket; socket.create_connection(('127.0.0.1', \(port)), timeout=1)"]).status) == 0 {
                return pid
            }
            usleep(50_000)
        }
        return nil
    }
}

extension TestRealm {
    /// Starts sshd on a free loopback port with a host key and configuration of its own in `directory`, under the name
    /// `service` (a symlink to /usr/sbin/sshd there: sshd takes its program's name as its PAM service), keyboard-
    /// interactive on, public keys off, and password authentication as `passwordAuthentication` says. `launcher`
    /// goes before the program (valgrind), with `environment`. sshd daemonizes (the test's process runner, which
    /// waits for its children, would block on a long-lived one); returns the port and the daemon's pid.
    public static func startSSHD(in directory: String, service: String, passwordAuthentication: Bool,
                                 launcher: [String] = [], environment: [String: String] = [:]) throws -> (port: String, pid: pid_t) {
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        chmod("/run/sshd", 0o755)
        let hostKey = directory + "/host_ed25519"
        let keygen = try run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey])
        guard keygen.status == 0 else { throw TestRealmError("ssh-keygen: \(keygen.output)") }
        let port = String(try freePort())
        try """
            Port \(port)
            ListenAddress 127.0.0.1
            HostKey \(hostKey)
            PidFile \(directory)/sshd.pid
            UsePAM yes
            PasswordAuthentication \(passwordAuthentication ? "yes" : "no")
            KbdInteractiveAuthentication yes
            PubkeyAuthentication no
            AuthorizedKeysFile none
            PermitRootLogin no
            MaxAuthTries 3
            LogLevel VERBOSE
            """.write(toFile: directory + "/sshd_config", atomically: true, encoding: .utf8)
        let program = directory + "/" + service
        try? FileManager.default.removeItem(atPath: program)
        guard symlink("/usr/sbin/sshd", program) == 0 else { throw TestRealmError("symlink \(program): \(String(cString: strerror(errno)))") }
        let started = try run(launcher + [program, "-f", directory + "/sshd_config", "-E", directory + "/sshd.log"], environment: environment)
        guard started.status == 0 else { throw TestRealmError("sshd did not start: \(started.output)") }
        guard let pid = waitForSSHD(pidFile: directory + "/sshd.pid", port: port) else { throw TestRealmError("sshd did not come up: \(started.output)") }
        return (port, pid)
    }
}
