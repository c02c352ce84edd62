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
