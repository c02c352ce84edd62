import Foundation
import Kerberos
import KerberosEngine
@testable import LoginService
import LoginProtocol
import TestRealm
import Testing

/// Issue #21, finding 3: when armor is configured, what the key is made with (the enctype and salt of the KDC's
/// etype info) comes inside FAST, so someone on the path cannot choose it. A proxy between the daemon and the KDC
/// rewrites the principal's salt wherever it appears in the clear: an unarmored login through it fails (the attack
/// works), an armored one logs in, twice (first through MIT's exchange, then with what it learnt), and the KDC sees
/// no failed pre-authentication.
@Suite("LoginService: etype info comes inside FAST when armor is configured")
struct ArmoredEtypeInfoTests {
    /// A UDP and TCP proxy to the KDC that replaces `from` by `to` (same length) in every reply.
    static let proxyScript = #"""
import socket, struct, sys, threading
kdc, old, new = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
port = udp.getsockname()[1]
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); tcp.bind(("127.0.0.1", port)); tcp.listen(64)
def serve_udp():
    while True:
        data, client = udp.recvfrom(65536)
        def relay(data=data, client=client):
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); upstream.settimeout(30)
            upstream.sendto(data, ("127.0.0.1", kdc))
            try: reply = upstream.recv(65536)
            except OSError: return
            udp.sendto(reply.replace(old, new), client)
        threading.Thread(target=relay, daemon=True).start()
def read(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk: raise EOFError
        data += chunk
    return data
def serve_tcp(conn):
    try:
        while True:
            length = read(conn, 4); request = read(conn, struct.unpack(">I", length)[0])
            upstream = socket.create_connection(("127.0.0.1", kdc), timeout=30)
            upstream.sendall(length + request)
            size = read(upstream, 4); reply = read(upstream, struct.unpack(">I", size)[0])
            upstream.close()
            conn.sendall(size + reply.replace(old, new))
    except (EOFError, OSError):
        conn.close()
threading.Thread(target=serve_udp, daemon=True).start()
print(port, flush=True)
while True:
    conn, _ = tcp.accept()
    threading.Thread(target=serve_tcp, args=(conn,), daemon=True).start()
"""#

    /// The realm's krb5.conf with its KDC replaced by the proxy.
    static func configThrough(_ realm: TestRealm, port: Int) throws -> String {
        let text = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            line.trimmingCharacters(in: .whitespaces).hasPrefix("kdc = 127.0.0.1:\(realm["KDC_PORT"])") ? "  kdc = 127.0.0.1:\(port)" : String(line)
        }
        let path = realm.directory + "/krb5-rewriting-\(TestRealm.uniqueName("p")).conf"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a salt rewritten on the path: unarmored logins fail, armored ones log in with no failure at the KDC")
    func rewrittenSalt() async throws {
        let realm = try TestRealm.shared()
        let user = try realm.addPrincipal(prefix: "mitm", password: "Mitm-Passw0rd1", attributes: ["+requires_preauth"])
        let salt = realm.realm + user
        let forged = String(salt.dropLast()) + (salt.last == "x" ? "y" : "x")
        let script = realm.directory + "/rewriting-proxy.py"
        try Self.proxyScript.write(toFile: script, atomically: true, encoding: .utf8)
        let proxy = try ChildProcess(["/usr/bin/python3", script, realm["KDC_PORT"], salt, forged], output: .pipe)
        defer { _ = proxy.terminate() }
        let port = try #require(Int(String(decoding: proxy.readSome(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        let config = try Self.configThrough(realm, port: port)
        let start = try realm.kdcLog().count

        for armor in [LoginConfiguration.ArmorSource.none, .anonymous] {
            var configuration = LoginConfiguration(krb5: .files(config), keytab: realm["HOST_KEYTAB"], serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: armor)
            configuration.loginTimeout = TestRealm.loginTimeout
            let service = try LoginService(configuration: configuration, threads: 1)
            for attempt in 1...2 {
                let result = await service.verifyPassword(principal: user, password: Secret("Mitm-Passw0rd1"))
                if armor == .none {
                    #expect(result.failure == .badCredentials, "unarmored login \(attempt) through the rewriting proxy: \(result)")
                } else {
                    #expect(result.ok, "armored login \(attempt) through the rewriting proxy: \(result)")
                }
            }
            await service.shutdown()
            if armor == .none { continue }
            let failures = try realm.kdcLog().dropFirst(start).filter { $0.contains("PREAUTH_FAILED") && $0.contains(" \(user)@") }
            #expect(failures.count == 2, "only the two unarmored logins failed pre-authentication: \(failures)")
        }
    }
}
