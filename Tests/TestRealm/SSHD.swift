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

/// What one SSH login by paramiko saw (``TestRealm/sshLogin(port:user:method:password:answers:command:)``).
public struct SSHLogin: Decodable, Sendable {
    /// Whether sshd accepted the authentication.
    public var auth: Bool
    /// The keyboard-interactive prompts, in order.
    public var prompts: [String]
    /// What the session's command wrote to standard output.
    public var output: String
    /// The command's exit status; nil when no session ran it (sshd calls pam_setcred and opens the PAM session
    /// only after authentication: a stack whose setcred fails drops the connection then).
    public var status: Int?
    public var error: String?
    public var session_error: String?
    /// What the session wrote to standard error (sshd's own complaints before the command ran).
    public var errors: String?

    /// Whether a session ran the command.
    public var session: Bool { status.map { $0 != -1 } ?? false }
}

extension TestRealm {
    public enum SSHMethod: String, Sendable {
        case password
        case keyboardInteractive = "keyboard-interactive"
    }

    /// The paramiko client of ``sshLogin(port:user:method:password:answers:command:)``: the login's spec as JSON on
    /// standard input, what it saw as one JSON line on standard output.
    static let sshClient = """
        import base64, hashlib, hmac, json, socket, struct, sys, time, paramiko
        spec = json.loads(sys.stdin.read())
        result = {"auth": False, "prompts": [], "output": ""}
        def totp(secret):
            # RFC 6238, made when the prompt appears, with at least 10 s of its step left.
            if 30 - time.time() % 30 < 10:
                time.sleep(30 - time.time() % 30 + 0.2)
            digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
            offset = digest[-1] & 0x0F
            return "%06d" % ((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000)
        def handler(title, instructions, prompts):
            answers = []
            for text, echo in prompts:
                result["prompts"].append(text)
                value = next((value for key, value in spec["answers"].items() if key in text), spec["password"])
                answers.append(totp(spec["totp_secret"]) if value == "TOTP" else value)
            return answers
        sock = socket.create_connection(("127.0.0.1", int(spec["port"])), timeout=60)
        t = paramiko.Transport(sock)
        # sshd may run under valgrind: paramiko's own 15 s banner and 30 s authentication waits are too short.
        t.banner_timeout = t.auth_timeout = 60
        try:
            t.start_client(timeout=60)
            if spec["method"] == "password":
                t.auth_password(spec["user"], spec["password"], fallback=False)
            else:
                t.auth_interactive(spec["user"], handler)
            result["auth"] = t.is_authenticated()
        except Exception as e:
            result["error"] = repr(e)
        if result["auth"]:
            try:
                chan = t.open_session(timeout=60)
                chan.exec_command(spec["command"])
                data = b""
                while True:
                    chunk = chan.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                result["status"] = chan.recv_exit_status()
                result["output"] = data.decode()
                result["errors"] = chan.recv_stderr(65536).decode(errors="replace") if chan.recv_stderr_ready() else ""
            except Exception as e:
                result["session_error"] = repr(e)
        t.close()
        print(json.dumps(result))
        """

    /// One login with paramiko into the sshd on 127.0.0.1:`port` as `user`, then `command` in its session. By
    /// password, `password` is the password; by keyboard-interactive, each prompt is answered with the value of the
    /// first key of `answers` it contains (the value `TOTP`: this realm's current one-time code), or `password`.
    public func sshLogin(port: String, user: String, method: SSHMethod = .keyboardInteractive, password: String = "",
                         answers: [String: String] = [:], command: String = "true") throws -> SSHLogin {
        struct Spec: Encodable {
            var port, user, method, password: String
            var answers: [String: String]
            var command: String
            var totp_secret: String?
        }
        let spec = Spec(port: port, user: user, method: method.rawValue, password: password, answers: answers, command: command,
                        totp_secret: answers.values.contains("TOTP") ? self["OTP_SECRET"] : nil)
        let result = try Self.run(["/usr/bin/python3", "-c", Self.sshClient], inputBytes: Array(try JSONEncoder().encode(spec)))
        guard let line = result.output.split(separator: "\n").last, let login = try? JSONDecoder().decode(SSHLogin.self, from: Data(line.utf8)) else {
            throw TestRealmError("paramiko client: \(result.output)")
        }
        return login
    }
}
