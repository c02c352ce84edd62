import Foundation
import Kerberos
import LoginProtocol
import LoginService
import NIOHTTP1
import TestRealm
import Testing
@testable import VerifyDaemon

/// One HTTP answer, as the tests read it.
struct HTTPReply: CustomStringConvertible {
    let status: Int
    /// Header names in lower case.
    let headers: [String: String]
    let body: String

    /// Parses a raw response (`curl -i` output, or bytes read from a socket).
    init(parsing text: String) throws {
        // curl -i prints every response of a request (a 100 Continue, say); the last one counts.
        guard let start = text.range(of: "HTTP/1.", options: .backwards) else { throw TestRealmError("not an HTTP response: \(text)") }
        let response = text[start.lowerBound...]
        let parts = response.components(separatedBy: "\r\n\r\n")
        let lines = parts[0].components(separatedBy: "\r\n")
        let statusLine = lines[0].split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestRealmError("no status in \(lines[0])") }
        self.status = status
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        self.body = parts.dropFirst().joined(separator: "\r\n\r\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var description: String { "\(status) \(headers) \(body)" }
}

/// curl against an endpoint: `target` is `unix:PATH` or `http://host:port`.
func curl(_ target: String, path: String = "/auth", user: String? = nil, headers: [String] = [], extra: [String] = []) throws -> HTTPReply {
    var arguments = ["curl", "-s", "-i", "--max-time", "75"]
    let url: String
    if target.hasPrefix("unix:") {
        arguments += ["--unix-socket", String(target.dropFirst(5))]
        url = "http://localhost" + path
    } else {
        url = target + path
    }
    if let user { arguments += ["-u", user] }
    for header in headers { arguments += ["-H", header] }
    let result = try TestRealm.run(arguments + extra + [url])
    guard result.status == 0 else { throw TestRealmError("curl \(url) failed (\(result.status)): \(result.output)") }
    return try HTTPReply(parsing: result.output)
}

@Suite("HTTP auth endpoint: Basic credentials, client addresses, answers (no KDC)")
struct HTTPAuthUnitTests {
    private func basic(_ bytes: [UInt8]) -> String { "Basic " + Data(bytes).base64EncodedString() }

    @Test("a Basic header gives the name and the password; a header for another scheme, or none, asks for credentials")
    func parsesBasic() throws {
        guard case .basic(let credentials) = try HTTPAuth.authorization(basic(Array("alice:pa:ss wörd".utf8))) else { Issue.record("not basic"); return }
        #expect(credentials.user == "alice")
        #expect(credentials.password.withUnsafeBytes { Array($0) } == Array("pa:ss wörd".utf8))
        guard case .basic = try HTTPAuth.authorization("basic   " + Data("bob:x".utf8).base64EncodedString()) else { Issue.record("scheme is case-insensitive"); return }
        guard case .absent = try HTTPAuth.authorization(nil) else { Issue.record("absent"); return }
        guard case .otherScheme = try HTTPAuth.authorization("Negotiate YIIB") else { Issue.record("other scheme"); return }
        guard case .otherScheme = try HTTPAuth.authorization("Bearer") else { Issue.record("other scheme without a value"); return }
    }

    @Test("malformed Basic credentials are refused with the reason", arguments: [
        ("Basic", "the Basic credentials are missing"),
        ("Basic !!!!", "the Basic credentials are not base64"),
        ("Basic YWxpY2U", "the Basic credentials are not base64"),
        ("Basic YQ=a", "the Basic credentials are not base64"),
        ("Basic YWxpY2U=", "the Basic credentials have no colon between name and password"),
        ("Basic OnNlY3JldA==", "the user name is empty"),
        ("Basic " + String(repeating: "A", count: 1100), "the Authorization header is longer than 1024 bytes"),
    ])
    func malformed(header: String, reason: String) {
        #expect(throws: HTTPAuth.BadRequest(reason)) { try HTTPAuth.authorization(header) }
    }

    @Test("a user name that is not UTF-8 or holds a control character, a password with a NUL, an overlong name: refused")
    func badBytes() {
        #expect(throws: HTTPAuth.BadRequest("the user name is not UTF-8")) { try HTTPAuth.authorization(basic([0x61, 0xFF, 0x62, 0x3A, 0x70])) }
        #expect(throws: HTTPAuth.BadRequest("the user name contains a control character")) { try HTTPAuth.authorization(basic(Array("a\r\nb:p".utf8))) }
        #expect(throws: HTTPAuth.BadRequest("the password contains a NUL byte")) { try HTTPAuth.authorization(basic(Array("alice:p".utf8) + [0, 0x71])) }
        #expect(throws: HTTPAuth.BadRequest("the user name is longer than 256 bytes")) {
            try HTTPAuth.authorization(basic(Array(String(repeating: "u", count: 257).utf8) + [0x3A, 0x70]))
        }
    }

    @Test("the client address comes from a trusted peer's header (its last address), else from a TCP peer, else none")
    func clientAddress() throws {
        var configuration = DaemonConfiguration()
        configuration.httpTrustedUIDs = [33]
        configuration.httpTrustedAddresses = ["127.0.0.1"]
        let trust = HTTPAuth.ProxyTrust(configuration)
        let proxy = PeerCredentials(pid: 1, uid: 33, gid: 33)
        let other = PeerCredentials(pid: 1, uid: 1000, gid: 1000)
        #expect(try HTTPAuth.clientAddress(header: "198.51.100.1, 192.0.2.7", peer: .local(proxy), trust: trust) == "192.0.2.7")
        #expect(try HTTPAuth.clientAddress(header: "2001:DB8::1", peer: .tcp("127.0.0.1"), trust: trust) == "2001:db8::1")
        #expect(try HTTPAuth.clientAddress(header: "192.0.2.7", peer: .tcp("::ffff:127.0.0.1"), trust: trust) == "192.0.2.7")
        #expect(try HTTPAuth.clientAddress(header: "192.0.2.7", peer: .local(other), trust: trust) == nil, "an untrusted uid's header is ignored")
        #expect(try HTTPAuth.clientAddress(header: "192.0.2.7", peer: .local(nil), trust: trust) == nil, "an unknown peer's header is ignored")
        #expect(try HTTPAuth.clientAddress(header: "192.0.2.7", peer: .tcp("127.0.0.2"), trust: trust) == "127.0.0.2", "an untrusted TCP peer is its own address")
        #expect(try HTTPAuth.clientAddress(header: nil, peer: .local(proxy), trust: trust) == nil)
        #expect(throws: HTTPAuth.BadRequest("the X-Forwarded-For header does not end with an IP address")) {
            try HTTPAuth.clientAddress(header: "192.0.2.7, evil", peer: .local(proxy), trust: trust)
        }
    }

    @Test("results map to statuses: 200, 401 for wrong or unverifiable credentials, 403 for a refused account, 503 without a KDC")
    func statuses() {
        #expect(HTTPAuth.status(for: .success(principal: "a@R", verified: true, expires: nil)) == .ok)
        #expect(HTTPAuth.status(for: .failed(.badCredentials, "")) == .unauthorized)
        #expect(HTTPAuth.status(for: .failed(.unknownPrincipal, "")) == .unauthorized)
        #expect(HTTPAuth.status(for: .failed(.verificationFailed, "")) == .unauthorized)
        #expect(HTTPAuth.status(for: .failed(.accountDisabled, "")) == .forbidden)
        #expect(HTTPAuth.status(for: .failed(.passwordExpired, "")) == .forbidden)
        #expect(HTTPAuth.status(for: .failed(.kdcUnreachable, "")) == .serviceUnavailable)
        #expect(HTTPAuth.status(for: .failed(.invalidRequest, "")) == .badRequest)
    }

    @Test("configuration: the http_ keys load; a TCP listener off loopback, a quoted realm, a bad header name or address are refused")
    func configuration() throws {
        var configuration = DaemonConfiguration()
        try configuration.load(toml: """
            http_socket = "/run/krb5-verifyd/http"
            http_listen = "127.0.0.1:8088"
            http_realm = "Example intranet"
            http_client_address_header = "X-Real-IP"
            http_trusted_uids = [33]
            http_trusted_addresses = ["127.0.0.1", "::1"]
            """)
        #expect(configuration.httpSocket == "/run/krb5-verifyd/http")
        #expect(configuration.httpTrustedAddresses == ["127.0.0.1", "::1"])
        #expect(DaemonConfiguration.loopbackPort("[::1]:0")! == ("::1", 0))
        for (toml, error) in [
            (#"http_listen = "0.0.0.0:8088""#, "http_listen must be a loopback address and a port, such as 127.0.0.1:8088 or [::1]:8088, not 0.0.0.0:8088"),
            (#"http_listen = "192.0.2.1:80""#, "http_listen must be a loopback address and a port, such as 127.0.0.1:8088 or [::1]:8088, not 192.0.2.1:80"),
            ("http_socket = \"/tmp/s\"\nhttp_realm = 'a\"b'", "http_realm must be non-empty, without quotes, backslashes or control characters"),
            ("http_socket = \"/tmp/s\"\nhttp_client_address_header = \"X Forwarded\"", "http_client_address_header must be a header name such as X-Forwarded-For"),
            ("http_socket = \"/tmp/s\"\nhttp_trusted_addresses = [\"proxy.example\"]", "http_trusted_addresses: proxy.example is not an IP address"),
        ] {
            var bad = DaemonConfiguration()
            #expect(throws: ConfigurationError(error)) { try bad.load(toml: toml) }
        }
    }
}

@Suite("HTTP auth endpoint against the live realm", .onTestThreads)
struct HTTPAuthTests {
    /// A daemon with the HTTP endpoint on a UNIX socket and on loopback TCP (any free port).
    static func with(configure: @escaping (inout DaemonConfiguration, TestRealm) -> Void = { _, _ in },
                     _ body: (DaemonFixture) async throws -> Void) async throws {
        try await DaemonFixture.with(configure: { configuration, realm in
            configuration.httpSocket = SocketClient.temporaryPath("http")
            configuration.httpListen = "127.0.0.1:0"
            configure(&configuration, realm)
        }, body)
    }

    /// How many lines of the KDC's log name `name`.
    static func kdcRequests(_ realm: TestRealm, naming name: String) throws -> Int {
        try realm.kdcLog().filter { $0.contains(" \(name)@") }.count
    }

    @Test("right password: 200 with X-Remote-User and X-Remote-Principal; wrong: 401 with the Basic challenge; disabled: 403; no credentials: 401; other paths: 404")
    func answers() async throws {
        try await Self.with(configure: { configuration, _ in configuration.metricsListen = "127.0.0.1:0" }) { fixture in
            let realm = fixture.realm
            for target in ["unix:\(fixture.endpoints.httpSocket!)", "http://\(fixture.endpoints.http!)"] {
                let ok = try curl(target, user: "\(realm["USER"]):\(realm["USER_PASSWORD"])")
                #expect(ok.status == 200, "\(ok)")
                #expect(ok.headers["x-remote-user"] == realm["USER"])
                #expect(ok.headers["x-remote-principal"] == "\(realm["USER"])@\(realm.realm)")
                let wrong = try curl(target, user: "\(realm["USER"]):wrong-password")
                #expect(wrong.status == 401, "\(wrong)")
                #expect(wrong.headers["www-authenticate"] == #"Basic realm="Kerberos", charset="UTF-8""#)
                #expect(wrong.headers["x-remote-user"] == nil)
                let disabled = try curl(target, user: "\(realm["DISABLED_USER"]):\(realm["DISABLED_PASSWORD"])")
                #expect(disabled.status == 403, "\(disabled)")
                let anonymous = try curl(target)
                #expect(anonymous.status == 401)
                #expect(anonymous.headers["www-authenticate"] != nil)
                #expect(try curl(target, path: "/other", user: "\(realm["USER"]):\(realm["USER_PASSWORD"])").status == 404)
                let unknown = try curl(target, user: "no-such-user-http:x")
                #expect(unknown.status == 401)
            }
            #expect(!fixture.logs.text.contains(realm["USER_PASSWORD"]))
            #expect(!fixture.logs.text.contains("wrong-password"))
            #expect(fixture.logs.text.contains("\"listener\": http"), "logins are logged under the http listener")
            let metrics = try TestRealm.run(["curl", "-s", "http://\(fixture.endpoints.metrics!)/metrics"]).output
            for outcome in ["ok", "bad-credentials", "account-disabled"] {
                #expect(metrics.contains(#"krb5_verifyd_requests_total{listener="http",outcome="\#(outcome)"} 2"#), "\(metrics)")
            }
        }
    }

    @Test("one keep-alive connection carries several requests, each verified")
    func keepAlive() async throws {
        try await Self.with { fixture in
            let realm = fixture.realm
            let url = "http://\(fixture.endpoints.http!)/auth"
            let result = try TestRealm.run(["curl", "-s", "-v", "-o", "/dev/null", "-w", "%{http_code}\n", "-u", "\(realm["USER"]):\(realm["USER_PASSWORD"])",
                                            url, "-u", "\(realm["USER"]):\(realm["USER_PASSWORD"])", url])
            #expect(result.output.components(separatedBy: "\n").filter { $0 == "200" }.count == 2, "\(result.output)")
            #expect(result.output.contains("Re-using existing connection") || result.output.contains("Reusing existing connection"), "\(result.output)")
        }
    }

    @Test("bad input gets 400 naming what was wrong, and none of it reaches the KDC")
    func badInput() async throws {
        try await Self.with(configure: { configuration, _ in configuration.httpTrustedUIDs = [getuid()] }) { fixture in
            let realm = fixture.realm
            let name = TestRealm.uniqueName("httpbad")
            func raw(_ request: String) throws -> HTTPReply {
                let client = try SocketClient(path: fixture.endpoints.httpSocket!, timeout: 75)
                client.send(request)
                return try HTTPReply(parsing: String(decoding: client.readAll(), as: UTF8.self))
            }
            func request(authorization: String, extra: String = "") -> String {
                "GET /auth HTTP/1.1\r\nHost: localhost\r\nAuthorization: \(authorization)\r\n\(extra)Connection: close\r\n\r\n"
            }
            let good = Data("\(name):\(realm["USER_PASSWORD"])".utf8).base64EncodedString()
            let cases: [(String, String)] = [
                (request(authorization: "Basic \(good)", extra: "X-Padding: \(String(repeating: "p", count: 40_000))\r\n"), "larger than 32768 bytes"),
                (request(authorization: "Basic \(good)", extra: "X-Padding: \(String(repeating: "p", count: 100_000))\r\n"), "too large"),
                (request(authorization: "Basic \(good)!"), "not base64"),
                (request(authorization: "Basic " + Data([0x61, 0xC3, 0x28, 0x3A, 0x70]).base64EncodedString()), "not UTF-8"),
                (request(authorization: "Basic \(good)", extra: "Authorization: Basic \(good)\r\n"), "more than one Authorization header"),
                (request(authorization: "Basic \(good)", extra: "X-Forwarded-For: not-an-address\r\n"), "does not end with an IP address"),
                ("GARBAGE\r\n\r\n", "not an HTTP/1 request"),
            ]
            for (text, reason) in cases {
                let reply = try raw(text)
                #expect(reply.status == 400, "\(reason): \(reply)")
                #expect(reply.body.contains(reason), "\(reply.body)")
            }
            #expect(try Self.kdcRequests(realm, naming: name) == 0, "a refused request reached the KDC")
            // The daemon still answers.
            #expect(try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(realm["USER"]):\(realm["USER_PASSWORD"])").status == 200)
            #expect(fixture.daemon.counts.inFlight == 0)
        }
    }

    @Test("the client address from a trusted peer's X-Forwarded-For is throttled; an untrusted peer's header is ignored")
    func clientAddressThrottle() async throws {
        let password = "Http-Throttle-Passw0rd"
        try await Self.with(configure: { configuration, _ in
            configuration.throttleFailures = 2
            configuration.throttlePenalty = .milliseconds(50)
            configuration.httpTrustedUIDs = [getuid()]  // the UNIX socket's peer (this process's curl) is a trusted proxy; TCP peers are not
        }) { fixture in
            let realm = fixture.realm
            let socket = "unix:\(fixture.endpoints.httpSocket!)"
            let tcp = "http://\(fixture.endpoints.http!)"
            let users = try (0..<4).map { _ in try realm.addPrincipal(prefix: "httpthr", password: password) }
            // Two wrong guesses for two principals from 192.0.2.50: the address, not either principal, reaches the limit.
            for user in users[0..<2] {
                #expect(try curl(socket, user: "\(user):wrong", headers: ["X-Forwarded-For: 192.0.2.50"]).status == 401)
            }
            #expect(try curl(socket, user: "\(users[2]):\(password)", headers: ["X-Forwarded-For: 192.0.2.50"]).status == 401, "the address is throttled")
            #expect(try curl(socket, user: "\(users[2]):\(password)", headers: ["X-Forwarded-For: 192.0.2.51"]).status == 200, "another address is not")
            #expect(try Self.kdcRequests(realm, naming: users[2]) > 0)
            // Over TCP nobody is trusted: each guess counts against 127.0.0.1 whatever the header says.
            #expect(try curl(tcp, user: "\(users[0]):wrong", headers: ["X-Forwarded-For: 192.0.2.60"]).status == 401)
            #expect(try curl(tcp, user: "\(users[1]):wrong", headers: ["X-Forwarded-For: 192.0.2.61"]).status == 401)
            #expect(try curl(tcp, user: "\(users[3]):\(password)", headers: ["X-Forwarded-For: 192.0.2.62"]).status == 401, "127.0.0.1 is throttled")
            #expect(try Self.kdcRequests(realm, naming: users[3]) == 0, "a throttled login never reached the KDC")
        }
    }

    @Test("with the result cache on, repeated logins are answered without the KDC; with it off, each one asks")
    func resultCache() async throws {
        let password = "Http-Cache-Passw0rd"
        for cached in [true, false] {
            try await Self.with(configure: { configuration, _ in
                configuration.resultCacheTTL = cached ? .seconds(300) : nil
            }) { fixture in
                let realm = fixture.realm
                let user = try realm.addPrincipal(prefix: "httpcache", password: password)
                #expect(try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(user):\(password)").status == 200)
                let first = try Self.kdcRequests(realm, naming: user)
                for _ in 0..<3 { #expect(try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(user):\(password)").status == 200) }
                let repeated = try Self.kdcRequests(realm, naming: user)
                if cached {
                    #expect(repeated == first, "cache on: the repeated logins did not ask the KDC (\(first) → \(repeated))")
                } else {
                    #expect(repeated >= first + 3, "cache off: every login asked the KDC (\(first) → \(repeated))")
                }
                #expect(try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(user):wrong").status == 401, "a wrong password is never a cache hit")
                #expect(try Self.kdcRequests(realm, naming: user) > repeated)
            }
        }
    }

    @Test("a rogue KDC of the same realm: its password gets 401 (the ticket fails verification against the keytab)")
    func rogueKDC() async throws {
        try await Self.with(configure: { configuration, realm in
            configuration.login.krb5 = .files(realm["KRB5_ROGUE_CONFIG_FILE"])
        }) { fixture in
            let realm = fixture.realm
            let rogue = try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(realm["USER"]):\(realm["ROGUE_PASSWORD"])")
            #expect(rogue.status == 401, "\(rogue)")
            #expect(rogue.headers["x-remote-user"] == nil)
            #expect(fixture.logs.text.contains("verification-failed"))
        }
    }

    @Test("no KDC answers: 503")
    func unreachable() async throws {
        let realm = try TestRealm.shared()
        // The realm's only KDC on a port where nothing listens: every exchange is refused at once.
        let configText = """
            [libdefaults]
             default_realm = \(realm.realm)
             dns_lookup_kdc = false
             dns_lookup_realm = false
             udp_preference_limit = 1
            [realms]
             \(realm.realm) = {
              kdc = 127.0.0.1:1
             }
            """
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-http-unreachable-\(getpid()).conf").path
        try configText.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await Self.with(configure: { configuration, _ in configuration.login.krb5 = .files(path) }) { fixture in
            let reply = try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(realm["USER"]):\(realm["USER_PASSWORD"])")
            #expect(reply.status == 503, "\(reply)")
        }
    }

    @Test("X-Remote-User is the local name by the realm's auth_to_local rules; a principal no rule maps is sent as its principal")
    func localNames() async throws {
        let realm = try TestRealm.shared()
        let password = "Http-Local-Passw0rd"
        let unmapped = try realm.addPrincipal(prefix: "httpmap", password: password)
        let text = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        let block = "\(realm.realm) = {"
        guard let range = text.range(of: block) else { throw TestRealmError("no \(block) in \(realm.configFile)") }
        // Only alice has a rule (and no DEFAULT rule follows), so the other principal maps to nothing.
        let rules = "\n  auth_to_local = RULE:[1:$1@$0](^\(realm["USER"])@.*$)s/^\(realm["USER"])@.*$/web-\(realm["USER"])/"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-http-an2ln-\(getpid()).conf").path
        try text.replacingCharacters(in: range, with: block + rules).write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await Self.with(configure: { configuration, _ in configuration.login.krb5 = .files(path) }) { fixture in
            let mapped = try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(realm["USER"]):\(realm["USER_PASSWORD"])")
            #expect(mapped.status == 200, "\(mapped)")
            #expect(mapped.headers["x-remote-user"] == "web-\(realm["USER"])")
            #expect(mapped.headers["x-remote-principal"] == "\(realm["USER"])@\(realm.realm)")
            let other = try curl("unix:\(fixture.endpoints.httpSocket!)", user: "\(unmapped):\(password)")
            #expect(other.status == 200, "\(other)")
            #expect(other.headers["x-remote-user"] == "\(unmapped)@\(realm.realm)")
        }
    }

    @Test("a peer outside allowed_uids is refused on the HTTP socket without an answer")
    func refusedPeer() async throws {
        try await Self.with(configure: { configuration, _ in configuration.allowedUIDs = [getuid() &+ 1] }) { fixture in
            let client = try SocketClient(path: fixture.endpoints.httpSocket!, timeout: 75)
            client.send("GET /auth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(client.readAll().isEmpty)
            #expect(fixture.logs.text.contains("HTTP auth connection refused"))
        }
    }
}
