// Microbenchmarks of the per-login work that needs no KDC: the wire codecs of krb5-verifyd and krb5-login,
// TOTP, the result cache, principal parsing, context creation and secrets. `make bench-micro` runs them and
// writes docs/microbenchmarks.md. With KRB5_TEST_REALM naming a running realm (Docker/kdc/realm.sh), one
// verified password login is measured too.
//
// Every benchmark repeats its operation `scaledIterations` times per sample and feeds each result to
// `blackHole`, so the reported numbers (scaled, `*` in the text output) are per operation.
import Benchmark
import Foundation
import Kerberos
import LoginProtocol
import LoginService
import TOTP

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000
    )

    // MARK: saslauthd frames (Sources/LoginProtocol/Saslauthd.swift)

    // What a client such as Postfix or Cyrus IMAP sends: login, password, service, realm, client address.
    let request = SaslauthdRequest(login: "alice", password: Secret("alice-Passw0rd"), service: "imap", realm: "EXAMPLE.ORG",
                                   clientAddress: "192.0.2.10").encoded()

    Benchmark("saslauthd: decode a 5-field request") { benchmark in
        for _ in benchmark.scaledIterations {
            var decoder = SaslauthdDecoder()
            try decoder.feed(request)
            guard case .request(let decoded) = try decoder.progress() else { fatalError("request not decoded") }
            blackHole(decoded)
        }
    }

    Benchmark("saslauthd: encode a reply") { benchmark in
        let reply = SaslauthdReply.no("authentication failed")
        for _ in benchmark.scaledIterations {
            blackHole(SaslauthdReply.ok.encoded)
            blackHole(reply.encoded)
        }
    }

    // MARK: JSON lines (Sources/LoginProtocol/JSON.swift, Messages.swift, LineFramer.swift)

    let loginLine = Array(#"{"type":"login","principal":"alice@EXAMPLE.ORG","password":"alice-Passw0rd","service":"imap"}"#.utf8)
    let answersLine = Array(#"{"type":"answers","id":2,"answers":{"password":"alice-Passw0rd","otp":{"token":0,"value":"123456","pin":"4711"}}}"#.utf8)
    let login = ClientMessage.login(LoginRequest(principal: "alice@EXAMPLE.ORG", password: Secret("alice-Passw0rd"), service: "imap"))
    let answers = ClientMessage.answers(id: 2, LoginAnswers(password: Secret("alice-Passw0rd"), otp: OTPAnswer(token: 0, value: Secret("123456"), pin: Secret("4711"))))
    let result = ServerMessage.result(.failed(.badCredentials, "Password incorrect", principal: "alice@EXAMPLE.ORG"))

    Benchmark("json: decode a login message") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ClientMessage.decode(loginLine))
        }
    }

    Benchmark("json: decode an answers message") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ClientMessage.decode(answersLine))
        }
    }

    Benchmark("json: encode a login message") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(login.encodedLine)
        }
    }

    Benchmark("json: encode an answers message") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(answers.encodedLine)
        }
    }

    Benchmark("json: encode a failure result") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(result.encodedLine)
        }
    }

    // The duplicate-name check on a hostile line (issue #11, item 7): a login message followed by 9,000 more
    // members, all within one 64 KiB line. A quadratic check made this ~40 million name comparisons on the
    // event loop; each member is now checked once.
    let wideLine: [UInt8] = {
        let alphabet = (0x20...0x7e).map { UInt8($0) }.filter { $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
        var names = alphabet.map { [$0] }
        for first in alphabet { for second in alphabet { names.append([first, second]) } }
        for first in alphabet { for second in alphabet { for third in alphabet where names.count < 9_000 { names.append([first, second, third]) } } }
        var line = Array(#"{"type":"login","principal":"alice@EXAMPLE.ORG""#.utf8)
        for name in names.prefix(9_000) { line += Array(#",""#.utf8) + name + Array(#"":0"#.utf8) }
        return line + [UInt8(ascii: "}")]
    }()
    precondition(wideLine.count <= 65_536)
    Benchmark("json: decode a 64 KiB line of 9,000 members",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .microseconds,
                                   warmupIterations: 1, scalingFactor: .one, maxDuration: .seconds(2), maxIterations: 1_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try ClientMessage.decode(wideLine))
        }
    }

    // Two messages arriving in one read, then the same two split across two reads (one framer per connection).
    let stream = loginLine + [0x0a] + answersLine + [0x0a]
    let split = stream.count / 3
    Benchmark("line framer: 2 lines in one read, then split reads") { benchmark in
        var framer = LineFramer()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(framer.feed(stream))
            blackHole(framer.feed(stream[..<split]))
            blackHole(framer.feed(stream[split...]))
        }
    }

    // What each connection pays once: the 64 KiB line buffer, wiped when released.
    Benchmark("line framer: create and release (64 KiB buffer)") { benchmark in
        for _ in benchmark.scaledIterations {
            let framer = LineFramer()
            blackHole(framer.hasPartialLine)
        }
    }

    // MARK: TOTP (Sources/TOTP)

    let totpSecret = TOTP.base32Decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
    Benchmark("totp: compute a 6-digit code") { benchmark in
        var time: UInt64 = 1_700_000_000
        for _ in benchmark.scaledIterations {
            blackHole(TOTP.code(secret: totpSecret, time: time))
            time &+= 30
        }
    }

    // MARK: result cache (Sources/LoginService/ResultCache.swift): HMAC-SHA-256 of principal and password per call

    let password = Secret("alice-Passw0rd")
    let wrongPassword = Secret("alice-Passw0rd!")
    let success = LoginResult.success(principal: "alice@EXAMPLE.ORG", verified: true, expires: .now + .seconds(36_000))
    let cache = ResultCache(ttl: .seconds(3_600))
    // A cache holding 10,000 other principals, as a busy daemon's would.
    for index in 0..<10_000 {
        cache.store(principal: "user\(index)@EXAMPLE.ORG", password: password, result: success)
    }
    cache.store(principal: "alice@EXAMPLE.ORG", password: password, result: success)

    Benchmark("result cache: lookup, hit (10k entries)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(cache.lookup(principal: "alice@EXAMPLE.ORG", password: password))
        }
    }

    Benchmark("result cache: lookup, miss (10k entries)") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(cache.lookup(principal: "alice@EXAMPLE.ORG", password: wrongPassword))
        }
    }

    Benchmark("result cache: store (10k entries)") { benchmark in
        for _ in benchmark.scaledIterations {
            cache.store(principal: "alice@EXAMPLE.ORG", password: password, result: success)
        }
    }

    // MARK: Secret (Sources/KerberosSecrets/Secret.swift): allocate, copy, explicit_bzero and free

    let passwordBytes = Array("alice-Passw0rd".utf8)
    Benchmark("secret: create from bytes and wipe") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(Secret(copying: passwordBytes))
        }
    }

    // MARK: libkrb5 without a network (Sources/Kerberos/Context.swift, Principal.swift)

    // A small krb5.conf of our own, so the numbers do not depend on this machine's /etc/krb5.conf.
    try? FileManager.default.createDirectory(atPath: scratchDirectory, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(atPath: scratchDirectory) }
    let configFile = scratchDirectory + "/krb5.conf"
    let config = """
        [libdefaults]
            default_realm = EXAMPLE.ORG
            dns_lookup_realm = false
            dns_lookup_kdc = false
            rdns = false
        [realms]
            EXAMPLE.ORG = {
                kdc = 127.0.0.1:1
            }
        """
    guard FileManager.default.createFile(atPath: configFile, contents: Data(config.utf8)) else { fatalError("cannot write \(configFile)") }
    setenv("KRB5_CONFIG", configFile, 1)

    Benchmark("krb5: create a Context (default config, KRB5_CONFIG)",
              configuration: .init(scalingFactor: .one, maxDuration: .seconds(2), maxIterations: 10_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try Context())
        }
    }

    // A context is used by one thread at a time; each benchmark runs on one thread.
    let context = try! Context()
    Benchmark("krb5: parse a principal and unparse it") { benchmark in
        for _ in benchmark.scaledIterations {
            let principal = try Principal(parsing: "alice", in: context)
            blackHole(principal.name())
        }
    }

    Benchmark("krb5: parse a service principal and unparse it short") { benchmark in
        for _ in benchmark.scaledIterations {
            let principal = try Principal(parsing: "host/mail.example.org@EXAMPLE.ORG", in: context)
            blackHole(principal.name(.short))
        }
    }

    // MARK: one verified login against a running realm (optional)

    guard let realmDirectory = ProcessInfo.processInfo.environment["KRB5_TEST_REALM"], !realmDirectory.isEmpty else {
        print("HotPaths: KRB5_TEST_REALM not set; skipping the verified-login benchmark (needs a running realm, see Docker/kdc/realm.sh).")
        return
    }
    guard let realm = readRealmEnv(realmDirectory) else {
        print("HotPaths: no readable realm.env in \(realmDirectory); skipping the verified-login benchmark.")
        return
    }
    Benchmark("krb5: verified password login (KDC on loopback)",
              configuration: .init(metrics: [.wallClock, .throughput, .mallocCountTotal], timeUnits: .microseconds, units: [.mallocCountTotal: .count],
                                   warmupIterations: 5, scalingFactor: .one, maxDuration: .seconds(5), maxIterations: 2_000)) { benchmark in
        // Parsed once, reused per login, as krb5-verifyd's workers do.
        let context = try Context(.files(realm["KRB5_CONFIG_FILE"]!))
        let client = try Principal(parsing: realm["USER"]!, in: context)
        let verification = VerificationOptions(server: try Principal(parsing: realm["HOST_PRINCIPAL"]!, in: context),
                                               keytab: try Keytab(resolving: realm["HOST_KEYTAB"]!, in: context))
        let secret = Secret(realm["USER_PASSWORD"]!)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let credentials = try context.initialCredentials(for: client, password: secret, options: InitialCredentialsOptions())
            try context.verify(credentials, options: verification)
            blackHole(credentials)
        }
    }
}

/// Where the benchmark's own krb5.conf lives; removed when the process exits.
let scratchDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-microbench-\(getpid())").path

/// The `KEY=VALUE` lines of `directory/realm.env` (written by Docker/kdc/realm.sh).
func readRealmEnv(_ directory: String) -> [String: String]? {
    guard let text = try? String(contentsOfFile: directory + "/realm.env", encoding: .utf8) else { return nil }
    var values: [String: String] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let equals = line.firstIndex(of: "=") else { continue }
        values[String(line[..<equals])] = String(line[line.index(after: equals)...])
    }
    for key in ["KRB5_CONFIG_FILE", "USER", "USER_PASSWORD", "HOST_PRINCIPAL", "HOST_KEYTAB"] where values[key] == nil { return nil }
    return values
}
