import Foundation
import Kerberos
import LoginProtocol
import TestRealm
import Testing

/// The built `krb5-verifyd` binary under signals and peer restrictions.
@Suite("krb5-verifyd as a process", .onTestThreads)
struct ShutdownTests {
    /// A TCP listener that accepts connections (the kernel does) and never answers: a KDC that hangs.
    final class SilentKDC {
        let fd: Int32
        let port: UInt16
        init() {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                    _ = bind(fd, pointer, length)
                    _ = listen(fd, 64)
                    return getsockname(fd, pointer, &length)
                }
            }
            self.fd = fd
            port = UInt16(bigEndian: address.sin_port)
        }
        deinit { close(fd) }

        /// Whether a client has connected (a connection waits to be accepted): a login has asked this KDC.
        var contacted: Bool {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            return poll(&poller, 1, 0) > 0
        }
    }

    /// Starts the built `krb5-verifyd` with `arguments` and waits for its saslauthd socket at `socketPath`, which
    /// appears (by rename) once the daemon listens.
    static func startDaemon(_ arguments: [String], socket socketPath: String, output: ChildProcess.Stream = .null) throws -> ChildProcess {
        let daemon = try ChildProcess([TestRealm.executable("krb5-verifyd")] + arguments, output: output)
        for _ in 0..<1200 where !FileManager.default.fileExists(atPath: socketPath) { Thread.sleep(forTimeInterval: 0.05) }
        return daemon
    }

    /// The reply to one saslauthd request for the realm's user with the right password, sent to `socketPath`.
    static func userLogin(_ realm: TestRealm, at socketPath: String) throws -> SaslauthdReply {
        let client = try SocketClient(path: socketPath)
        client.send(SaslauthdRequest(login: realm["USER"], password: Secret(realm["USER_PASSWORD"]), service: "t", realm: "", clientAddress: "").encoded())
        return try SaslauthdReply(decoding: client.readAll())
    }

    /// A configuration file in the realm's directory, named for `name`: the saslauthd socket `saslSocket` with mode 0600,
    /// `krb5Config`, the realm's keytab and service principal, and peers only of uid 4242.
    static func restrictedConfiguration(_ realm: TestRealm, name: String, saslSocket: String, krb5Config: String) throws -> String {
        let configFile = realm.directory + "/verifyd-\(name)-\(getpid()).toml"
        try """
        sasl_socket = "\(saslSocket)"
        socket_mode = "0600"
        krb5_config = "\(krb5Config)"
        keytab = "\(realm["HOST_KEYTAB"])"
        server_principal = "\(realm["LOCALHOST_PRINCIPAL"])"
        allowed_uids = [4242]
        """.write(toFile: configFile, atomically: true, encoding: .utf8)
        return configFile
    }

    /// The permission bits of the file at `path` (nil when it cannot be read).
    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode & 0o777 : nil
    }

    @Test("SIGTERM lets a login in flight finish, then the daemon exits 0 and removes its socket")
    func sigterm() throws {
        let realm = try TestRealm.shared()
        let silent = SilentKDC()
        // The silent KDC is tried first on every request, so a login takes a few seconds.
        let config = realm.directory + "/krb5-slow-\(getpid()).conf"
        try String(contentsOfFile: realm.configFile, encoding: .utf8)
            .replacingOccurrences(of: "  kdc = 127.0.0.1:", with: "  kdc = 127.0.0.1:\(silent.port)\n  kdc = 127.0.0.1:")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let socketPath = SocketClient.temporaryPath("term")
        let logPath = realm.directory + "/verifyd-term-\(getpid()).log"
        let daemon = try Self.startDaemon(["--sasl-socket", socketPath, "--krb5-config", config, "--keytab", realm["HOST_KEYTAB"],
                                           "--server-principal", realm["LOCALHOST_PRINCIPAL"], "--log-level", "info"] + TestRealm.loginTimeoutFlags,
                                          socket: socketPath, output: .file(logPath))

        let client = try SocketClient(path: socketPath)
        let started = Date()
        client.send(SaslauthdRequest(login: realm["USER"], password: Secret(realm["USER_PASSWORD"]), service: "t", realm: "", clientAddress: "").encoded())
        // The silent KDC first in the list holds the login for one hedge delay (250 ms, docs/engine.md): once it
        // has been asked, the login is in flight. (A fixed 100 ms sleep signalled, on a loaded run, before the
        // daemon had read the request.)
        for _ in 0..<3000 where !silent.contacted { Thread.sleep(forTimeInterval: 0.01) }
        #expect(silent.contacted, "the login asked the first KDC")
        daemon.signal(SIGTERM)
        let reply = try SaslauthdReply(decoding: client.readAll())
        #expect(reply == .ok, "the login in flight finished after SIGTERM")
        #expect(Date().timeIntervalSince(started) > 0.2, "the login was really in flight when the signal came")
        #expect(daemon.wait() == 0)
        #expect(!FileManager.default.fileExists(atPath: socketPath))
        let output = try String(contentsOfFile: logPath, encoding: .utf8)
        #expect(output.contains("shutting down"))
        #expect(!output.contains(realm["USER_PASSWORD"]))
    }

    @Test("peers outside allowed_uids are refused; socket mode comes from the configuration")
    func allowedPeers() throws {
        let realm = try TestRealm.shared()
        let socketPath = SocketClient.temporaryPath("peer")
        let configFile = try Self.restrictedConfiguration(realm, name: "peer", saslSocket: socketPath, krb5Config: realm.configFile)
        let daemon = try Self.startDaemon(["--config", configFile], socket: socketPath)
        defer { daemon.terminate() }
        #expect(Self.mode(socketPath) == 0o600)
        #expect(try Self.userLogin(realm, at: socketPath) == .no("not allowed"))
    }

    @Test("flags override the configuration file")
    func flagsOverride() throws {
        let realm = try TestRealm.shared()
        let socketPath = SocketClient.temporaryPath("flag")
        let configFile = try Self.restrictedConfiguration(realm, name: "flags", saslSocket: "/tmp/never-used-\(getpid()).sock",
                                                          krb5Config: "/nonexistent/krb5.conf")
        let daemon = try Self.startDaemon(["--config", configFile, "--sasl-socket", socketPath, "--socket-mode", "0640", "--krb5-config", realm.configFile,
                                           "--allowed-uids", String(getuid())] + TestRealm.loginTimeoutFlags, socket: socketPath)
        defer { daemon.terminate() }
        #expect(Self.mode(socketPath) == 0o640)
        #expect(try Self.userLogin(realm, at: socketPath) == .ok)
    }

    @Test("a configuration file with an unknown key is refused with its name")
    func badConfiguration() throws {
        let realm = try TestRealm.shared()
        let configFile = realm.directory + "/verifyd-bad-\(getpid()).toml"
        try "sasl_socket = \"/tmp/x.sock\"\nworkerz = 3\n".write(toFile: configFile, atomically: true, encoding: .utf8)
        let result = try TestRealm.run([TestRealm.executable("krb5-verifyd"), "--config", configFile])
        #expect(result.status != 0)
        #expect(result.output.contains("unknown key \"workerz\""), "\(result.output)")
    }
}
