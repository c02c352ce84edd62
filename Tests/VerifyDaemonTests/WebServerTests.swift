import Foundation
import Kerberos
import TestRealm
import Testing
import VerifyDaemon

/// A real web server in front of a static page, asking krb5-verifyd's HTTP endpoint: Debian's nginx with
/// `auth_request`, or Debian's Caddy with `forward_auth` (the configurations of docs/web.md), on a free loopback port.
final class WebServer {
    enum Kind: String, CustomStringConvertible, Sendable {
        case nginx, caddy
        var description: String { rawValue }
    }

    let kind: Kind
    let directory: String
    let port: Int
    private let process: ChildProcess
    /// The static page the server guards.
    static let page = "the protected page"

    var base: String { "http://127.0.0.1:\(port)" }

    /// Starts `kind` asking the endpoint on `authSocket`; returns once it accepts connections.
    init(_ kind: Kind, authSocket: String) throws {
        self.kind = kind
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestRealm.uniqueName("web-\(kind)")).path
        try FileManager.default.createDirectory(atPath: directory + "/www", withIntermediateDirectories: true)
        try Self.page.write(toFile: directory + "/www/index.html", atomically: true, encoding: .utf8)
        port = try TestRealm.freePort()
        let configuration = directory + (kind == .nginx ? "/nginx.conf" : "/Caddyfile")
        switch kind {
        case .nginx:
            try Self.nginxConfiguration(directory: directory, port: port, authSocket: authSocket).write(toFile: configuration, atomically: true, encoding: .utf8)
            process = try ChildProcess(["nginx", "-c", configuration, "-p", directory, "-e", directory + "/error.log", "-g", "daemon off;"],
                                       output: .file(directory + "/server.log"))
        case .caddy:
            try Self.caddyConfiguration(directory: directory, port: port, authSocket: authSocket).write(toFile: configuration, atomically: true, encoding: .utf8)
            process = try ChildProcess(["caddy", "run", "--config", configuration, "--adapter", "caddyfile"],
                                       environment: ["HOME": directory, "XDG_DATA_HOME": directory + "/data", "XDG_CONFIG_HOME": directory + "/config"],
                                       output: .file(directory + "/server.log"))
        }
        try waitUntilListening()
    }

    func stop() {
        _ = process.terminate()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The server's own log, for failure messages.
    var log: String { (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? "" }

    /// nginx as docs/web.md configures it: `auth_request` to the endpoint over a keep-alive upstream, the client's
    /// address in `X-Forwarded-For`, the verified user back in a response header of the page.
    static func nginxConfiguration(directory: String, port: Int, authSocket: String) -> String {
        // As root, nginx's workers would switch to `nobody`; they run as this user, the one the test's daemon trusts.
        let user = getuid() == 0 ? "user root root;" : ""
        return """
            \(user)
            worker_processes 1;
            pid \(directory)/nginx.pid;
            events { worker_connections 1024; }
            http {
                access_log \(directory)/access.log;
                client_body_temp_path \(directory)/client_body;
                proxy_temp_path \(directory)/proxy;
                fastcgi_temp_path \(directory)/fastcgi;
                uwsgi_temp_path \(directory)/uwsgi;
                scgi_temp_path \(directory)/scgi;
                default_type text/html;
                upstream krb5_verifyd {
                    server unix:\(authSocket);
                    keepalive 32;
                }
                server {
                    listen 127.0.0.1:\(port);
                    root \(directory)/www;
                    location / {
                        auth_request /_krb5_auth;
                        auth_request_set $krb5_user $upstream_http_x_remote_user;
                        add_header X-Authenticated-User $krb5_user always;
                        index index.html;
                    }
                    location = /_krb5_auth {
                        internal;
                        proxy_pass http://krb5_verifyd/auth;
                        proxy_http_version 1.1;
                        proxy_set_header Connection "";
                        proxy_pass_request_body off;
                        proxy_set_header Content-Length "";
                        proxy_set_header X-Forwarded-For $remote_addr;
                    }
                }
            }
            """
    }

    /// Caddy as docs/web.md configures it: `forward_auth` to the endpoint, the verified user copied into the request
    /// and shown in a response header of the page.
    static func caddyConfiguration(directory: String, port: Int, authSocket: String) -> String {
        """
        {
            admin off
            auto_https off
            storage file_system \(directory)/data
        }
        http://127.0.0.1:\(port) {
            root * \(directory)/www
            route {
                forward_auth unix/\(authSocket) {
                    uri /auth
                    copy_headers X-Remote-User X-Remote-Principal
                }
                header X-Authenticated-User {http.request.header.X-Remote-User}
                file_server
            }
        }
        """
    }

    /// Polls the port until the server accepts, for at most a minute (a loaded CI machine starts Caddy slowly).
    private func waitUntilListening() throws {
        for _ in 0..<600 {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(descriptor)
            if connected { return }
            usleep(100_000)
        }
        throw TestRealmError("\(kind) did not listen on \(port): \(log)")
    }

    /// `count` requests at once (curl --parallel), each with `user`; the statuses in order.
    func concurrentStatuses(_ count: Int, user: String) throws -> [Int] {
        let config = directory + "/parallel.curl"
        try String(repeating: "url = \"\(base)/\"\noutput = \"/dev/null\"\n", count: count).write(toFile: config, atomically: true, encoding: .utf8)
        let result = try TestRealm.run(["curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "\(count)", "--max-time", "120",
                                        "-u", user, "-w", "%{http_code}\n", "-K", config])
        return result.output.split(separator: "\n").compactMap { Int($0) }
    }
}

@Suite("nginx auth_request and Caddy forward_auth in front of a static page, through the HTTP endpoint", .onTestThreads)
struct WebServerTests {
    /// A daemon with the HTTP endpoint, trusting this user's processes (the web server) for X-Forwarded-For, and the
    /// web server in front of it.
    static func with(_ kind: WebServer.Kind, configure: @escaping (inout DaemonConfiguration, TestRealm) -> Void = { _, _ in },
                     _ body: (DaemonFixture, WebServer) async throws -> Void) async throws {
        try await DaemonFixture.with(configure: { configuration, realm in
            configuration.httpSocket = SocketClient.temporaryPath("web")
            configuration.httpTrustedUIDs = [getuid()]
            configuration.maxConnections = 2048
            configure(&configuration, realm)
        }) { fixture in
            let server = try WebServer(kind, authSocket: fixture.endpoints.httpSocket!)
            defer { server.stop() }
            try await body(fixture, server)
        }
    }

    @Test("right password: the page and the verified user; wrong password: 401 with the Basic challenge; disabled account: 403; none: 401",
          arguments: [WebServer.Kind.nginx, .caddy])
    func answers(kind: WebServer.Kind) async throws {
        try await Self.with(kind) { fixture, server in
            let realm = fixture.realm
            let ok = try curl(server.base, path: "/", user: "\(realm["USER"]):\(realm["USER_PASSWORD"])")
            #expect(ok.status == 200, "\(ok)\n\(server.log)")
            #expect(ok.body == WebServer.page)
            #expect(ok.headers["x-authenticated-user"] == realm["USER"])
            let wrong = try curl(server.base, path: "/", user: "\(realm["USER"]):wrong-password")
            #expect(wrong.status == 401, "\(wrong)")
            #expect(wrong.headers["www-authenticate"] == #"Basic realm="Kerberos", charset="UTF-8""#)
            #expect(!wrong.body.contains(WebServer.page))
            let disabled = try curl(server.base, path: "/", user: "\(realm["DISABLED_USER"]):\(realm["DISABLED_PASSWORD"])")
            #expect(disabled.status == 403, "\(disabled)")
            #expect(!disabled.body.contains(WebServer.page))
            let none = try curl(server.base, path: "/")
            #expect(none.status == 401)
            #expect(none.headers["www-authenticate"] != nil)
            #expect(fixture.daemon.counts.inFlight == 0)
        }
    }

    @Test("a rogue KDC of the same realm: its password does not open the page", arguments: [WebServer.Kind.nginx, .caddy])
    func rogueKDC(kind: WebServer.Kind) async throws {
        try await Self.with(kind, configure: { configuration, realm in configuration.login.krb5 = .files(realm["KRB5_ROGUE_CONFIG_FILE"]) }) { fixture, server in
            let realm = fixture.realm
            let rogue = try curl(server.base, path: "/", user: "\(realm["USER"]):\(realm["ROGUE_PASSWORD"])")
            #expect(rogue.status == 401, "\(rogue)")
            #expect(!rogue.body.contains(WebServer.page))
            #expect(fixture.logs.text.contains("verification-failed"))
        }
    }

    @Test("200 concurrent requests all get the page, with the result cache off (each asks the KDC) and on (none does)",
          arguments: [WebServer.Kind.nginx, .caddy])
    func concurrent(kind: WebServer.Kind) async throws {
        let password = "Web-Concurrent-Passw0rd"
        // Over the realm's krb5.conf, MIT's default transport (UDP for small messages): over TCP only, 200 logins at once
        // open more connections than the KDC keeps (it drops the oldest beyond 45, "too many connections"; docs/web.md, "Load").
        for cached in [false, true] {
            try await Self.with(kind, configure: { configuration, _ in
                configuration.resultCacheTTL = cached ? .seconds(300) : nil
            }) { fixture, server in
                let realm = fixture.realm
                let user = try realm.addPrincipal(prefix: "web\(kind)", password: password)
                // One login first: with the cache on, the 200 that follow are all answered from it.
                #expect(try curl(server.base, path: "/", user: "\(user):\(password)").status == 200)
                let before = try realm.kdcLog().filter { $0.contains(" \(user)@") }.count
                let statuses = try server.concurrentStatuses(200, user: "\(user):\(password)")
                #expect(statuses.count == 200, "\(statuses.count) answers\n\(server.log)")
                #expect(statuses.allSatisfy { $0 == 200 }, "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
                let asked = try realm.kdcLog().filter { $0.contains(" \(user)@") }.count - before
                if cached {
                    #expect(asked == 0, "cache on: the KDC was asked \(asked) times for 200 requests")
                } else {
                    #expect(asked >= 200, "cache off: the KDC was asked \(asked) times for 200 requests")
                }
                let again = try curl(server.base, path: "/", user: "\(user):wrong")
                #expect(again.status == 401)
            }
        }
    }
}
