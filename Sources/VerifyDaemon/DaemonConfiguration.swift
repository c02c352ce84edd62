import KerberosSecrets
public import LoginService
public import Logging
import Foundation
import TOMLKit

/// Everything `krb5-verifyd` can be told, from its TOML file and its flags (flags win).
/// docs/daemon.md documents every key.
public struct DaemonConfiguration: Sendable {
    /// The saslauthd-compatible socket (`mux` in saslauthd's run directory).
    public var saslSocket: String?
    /// The JSON-lines conversation socket.
    public var socket: String?
    /// The HTTP auth endpoint's UNIX socket (nginx `auth_request`, Caddy `forward_auth`; docs/web.md).
    public var httpSocket: String?
    /// The HTTP auth endpoint on loopback TCP, `host:port` (port 0: any free port).
    public var httpListen: String?
    /// The realm named in the endpoint's `WWW-Authenticate: Basic realm="…"`.
    public var httpRealm = "Kerberos"
    /// The header a proxy puts the client's address in; its last address is used.
    public var httpClientAddressHeader = "X-Forwarded-For"
    /// Peer uids on the HTTP socket whose client-address header is believed.
    public var httpTrustedUIDs: [UInt32] = []
    /// Peer addresses on the HTTP TCP listener whose client-address header is believed.
    public var httpTrustedAddresses: [String] = []
    /// Socket file permissions, such as 0o660.
    public var socketMode: UInt32 = 0o660
    /// Group to give the socket files (name or number).
    public var socketGroup: String?
    /// How logins are done: krb5 configuration, keytab, server principal, armor, FAST.
    public var login = LoginConfiguration()
    /// krb5 worker threads, one context each.
    public var workers = 4
    /// Connections open at once; more are closed at once.
    public var maxConnections = 1024
    /// A request (the saslauthd fields, the login line) must arrive complete within this time.
    public var readTimeout: Duration = .seconds(10)
    /// While a request or a line is awaited, the longest silence between two reads.
    public var idleTimeout: Duration = .seconds(5)
    /// How long a person may take to answer one round of questions.
    public var roundTimeout: Duration = .seconds(120)
    /// Conversations waiting for answers at once.
    public var maxParkedConversations = 10_000
    /// A failure is never answered faster than this, to blunt guessing.
    public var failureFloor: Duration = .milliseconds(100)
    /// After this many failures for one principal or one peer within the window, refuse for a while.
    public var throttleFailures = 5
    /// How far back failures are counted for ``throttleFailures``.
    public var throttleWindow: Duration = .seconds(60)
    /// The first refusal period; it doubles for each further burst, up to the maximum.
    public var throttleBackoff: Duration = .seconds(5)
    /// The longest refusal period.
    public var throttleMaxBackoff: Duration = .seconds(300)
    /// How long the first refused guess waits for its answer; each further refusal in the window doubles
    /// it, up to 16 times this or 15 s (Dovecot's auth penalty).
    public var throttlePenalty: Duration = .seconds(1)
    /// Only these peer uids / gids may connect (empty: anyone who can open the socket).
    public var allowedUIDs: [UInt32] = []
    /// Peer gids that may connect; a peer is let in when its uid or its gid is listed.
    public var allowedGIDs: [UInt32] = []
    /// `host:port` for the Prometheus `/metrics` endpoint; nil turns it off.
    public var metricsListen: String?
    /// Log level (`trace` … `critical`).
    public var logLevel: Logger.Level = .info
    /// Grace period after a request's fourth saslauthd field before treating it as a four-field request.
    public var fourFieldGrace: Duration = .milliseconds(50)
    /// Opt-in success cache TTL (`saslauthd -c`); nil is off.
    public var resultCacheTTL: Duration?

    /// The defaults; a socket must still be set before ``validate()`` passes.
    public init() {}

    /// Every key the configuration file accepts.
    public static let keys: Set<String> = [
        "sasl_socket", "socket", "socket_mode", "socket_group", "krb5_config", "keytab", "server_principal", "realm",
        "realms", "armor", "armor_principal", "fast_required", "workers", "max_connections", "read_timeout", "idle_timeout", "round_timeout",
        "max_parked_conversations", "failure_floor", "throttle_failures", "throttle_window", "throttle_backoff",
        "throttle_max_backoff", "throttle_penalty", "allowed_uids", "allowed_gids", "metrics_listen", "log_level", "insecure_skip_verification",
        "ticket_lifetime", "login_timeout", "optimistic_preauth", "learned_preauth", "direct_verification_ticket", "result_cache_ttl",
        "ticket_lifetime", "optimistic_preauth", "learned_preauth", "direct_verification_ticket", "result_cache_ttl",
        "enterprise_names", "canonicalize", "http_socket", "http_listen", "http_realm", "http_client_address_header",
        "http_trusted_uids", "http_trusted_addresses",
    ]

    /// Reads a TOML file over the defaults; unknown keys and wrong types are errors that name the key.
    public mutating func load(tomlFile path: String) throws(ConfigurationError) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigurationError("cannot read the configuration file \(path)")
        }
        try load(toml: text, source: path)
    }

    /// Refuses what toml++ (TOMLKit's parser) would not survive, naming the line: a table header that does not start
    /// with a key on its line (`[=]`, `[.a]`, `[[#]]`, `[\u{1}]`, a lone `[`) fails an assertion in its `parse_key`, which aborts the process
    /// (and is undefined behaviour where assertions are compiled out). Found by `make fuzz` (docs/fuzzing.md). Also
    /// refused: control characters other than tab, newline and carriage return, which TOML allows nowhere.
    static func checkBeforeParsing(_ text: String, source: String) throws(ConfigurationError) {
        // By scalars (a String's "\r\n" is one Character), after the byte-order mark toml++ skips.
        let scalars = text.unicodeScalars.first == "\u{FEFF}" ? text.unicodeScalars.dropFirst() : text.unicodeScalars[...]
        for (index, line) in scalars.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let control = line.first(where: { ($0.value < 0x20 && $0 != "\t" && $0 != "\r") || $0.value == 0x7F }) {
                throw ConfigurationError("\(source): line \(index + 1): control character U+\(String(control.value, radix: 16, uppercase: true)) is not allowed in TOML")
            }
            // Any white space, not only TOML's space and tab: what toml++ might skip before a header.
            var rest = line.drop(while: \.properties.isWhitespace)
            guard rest.first == "[" else { continue }
            rest = rest.dropFirst()
            if rest.first == "[" { rest = rest.dropFirst() }
            rest = rest.drop(while: { $0 == " " || $0 == "\t" })
            // Nothing after the bracket on its line counts as no key too (toml++ reads on into the next line).
            let startsKey = rest.first.map { first in
                first.isASCII && (first.properties.isAlphabetic || ("0"..."9").contains(first) || "_-\"'".unicodeScalars.contains(first))
            } ?? false
            if !startsKey {
                throw ConfigurationError("\(source): line \(index + 1): a table header must start with a key (a bare key or a quoted one)")
            }
        }
        if let line = braceInArrayValue(text) {
            throw ConfigurationError("\(source): line \(line): \"}\" where an array value should be")
        }
    }

    /// The line of the first `}` where an array's value should start (after `[` or `,`, white space, newlines and
    /// comments between), outside strings and comments; nil when there is none. toml++ asserts (`parse_value`) on
    /// it: `a = [}]`, `a = ["x",}]` (found by `make fuzz`).
    static func braceInArrayValue(_ text: String) -> Int? {
        let scalars = Array(text.unicodeScalars)
        var line = 1
        var index = 0
        var previous: Unicode.Scalar = "\n"  // the last significant scalar
        while index < scalars.count {
            let scalar = scalars[index]
            switch scalar {
            case "\n":
                line += 1
            case " ", "\t", "\r":
                break
            case "#":
                while index + 1 < scalars.count && scalars[index + 1] != "\n" { index += 1 }
            case "\"", "'":
                // A string: basic ("..." with escapes) or literal ('...'), single- or multi-line (tripled quotes).
                let tripled = index + 2 < scalars.count && scalars[index + 1] == scalar && scalars[index + 2] == scalar
                index += tripled ? 3 : 1
                while index < scalars.count {
                    let current = scalars[index]
                    if current == "\n" { line += 1 }
                    if current == "\\" && scalar == "\"" {
                        index += 2
                        continue
                    }
                    if current == scalar && (!tripled || (index + 2 < scalars.count && scalars[index + 1] == scalar && scalars[index + 2] == scalar)) {
                        index += tripled ? 2 : 0
                        break
                    }
                    if current == "\n" && !tripled { break }
                    index += 1
                }
                previous = scalar
            case "}" where previous == "[" || previous == ",":
                return line
            default:
                previous = scalar
            }
            index += 1
        }
        return nil
    }

    /// Reads TOML text over the current values.
    public mutating func load(toml text: String, source: String = "configuration") throws(ConfigurationError) {
        try Self.checkBeforeParsing(text, source: source)
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch { throw ConfigurationError("\(source): \(error)") }
        for key in table.keys where !Self.keys.contains(key) {
            throw ConfigurationError("\(source): unknown key \"\(key)\"")
        }
        func string(_ key: String) throws(ConfigurationError) -> String? {
            guard let value = table[key] else { return nil }
            guard let text = value.string else { throw ConfigurationError("\(source): \(key) must be a string") }
            return text
        }
        func int(_ key: String) throws(ConfigurationError) -> Int? {
            guard let value = table[key] else { return nil }
            guard let number = value.int else { throw ConfigurationError("\(source): \(key) must be an integer") }
            return number
        }
        func bool(_ key: String) throws(ConfigurationError) -> Bool? {
            guard let value = table[key] else { return nil }
            guard let flag = value.bool else { throw ConfigurationError("\(source): \(key) must be true or false") }
            return flag
        }
        func duration(_ key: String) throws(ConfigurationError) -> Duration? {
            guard let value = table[key] else { return nil }
            if let seconds = value.int { return .seconds(seconds) }
            if let seconds = value.double { return .milliseconds(Int64(seconds * 1000)) }
            if let text = value.string, let parsed = Self.parseDuration(text) { return parsed }
            throw ConfigurationError("\(source): \(key) must be seconds or a duration such as \"250ms\" or \"2m\"")
        }
        func ids(_ key: String) throws(ConfigurationError) -> [UInt32]? {
            guard let value = table[key] else { return nil }
            guard let array = value.array else { throw ConfigurationError("\(source): \(key) must be an array of numbers") }
            var result: [UInt32] = []
            for item in array {
                guard let id = item.int, id >= 0 else { throw ConfigurationError("\(source): \(key) must be an array of numbers") }
                result.append(UInt32(id))
            }
            return result
        }
        saslSocket = try string("sasl_socket") ?? saslSocket
        socket = try string("socket") ?? socket
        httpSocket = try string("http_socket") ?? httpSocket
        httpListen = try string("http_listen") ?? httpListen
        httpRealm = try string("http_realm") ?? httpRealm
        httpClientAddressHeader = try string("http_client_address_header") ?? httpClientAddressHeader
        httpTrustedUIDs = try ids("http_trusted_uids") ?? httpTrustedUIDs
        if let value = table["http_trusted_addresses"] {
            guard let array = value.array, array.allSatisfy({ $0.string != nil }) else {
                throw ConfigurationError("\(source): http_trusted_addresses must be an array of IP addresses")
            }
            httpTrustedAddresses = array.compactMap { $0.string }
        }
        if let mode = try string("socket_mode") {
            guard let parsed = UInt32(mode, radix: 8), parsed <= 0o777 else { throw ConfigurationError("\(source): socket_mode must be octal such as \"0660\"") }
            socketMode = parsed
        }
        socketGroup = try string("socket_group") ?? socketGroup
        if let value = table["krb5_config"] {
            if let single = value.string { login.krb5 = .init(files: [single]) }
            else if let array = value.array, array.allSatisfy({ $0.string != nil }) { login.krb5 = .init(files: array.compactMap { $0.string }) }
            else { throw ConfigurationError("\(source): krb5_config must be a path or an array of paths") }
        }
        login.keytab = try string("keytab") ?? login.keytab
        login.serverPrincipal = try string("server_principal") ?? login.serverPrincipal
        login.realm = try string("realm") ?? login.realm
        if let value = table["realms"] {
            if let array = value.array, array.allSatisfy({ $0.string != nil }) {
                login.realms = array.compactMap { $0.string }
            } else if let realms = value.table {
                try loadRealmSettings(realms, source: source)
            } else {
                throw ConfigurationError("\(source): realms must be an array of realm names or a table of realms")
            }
        }
        login.armorPrincipal = try string("armor_principal") ?? login.armorPrincipal
        if let armor = try string("armor") {
            guard let parsed = LoginConfiguration.ArmorSource(rawValue: armor) else { throw ConfigurationError("\(source): armor must be anonymous, keytab or none") }
            login.armor = parsed
        }
        login.fastRequired = try bool("fast_required") ?? login.fastRequired
        if try bool("insecure_skip_verification") == true { login.verify = false }
        login.optimisticPreauth = try bool("optimistic_preauth") ?? login.optimisticPreauth
        login.learnedPreauth = try bool("learned_preauth") ?? login.learnedPreauth
        login.directVerificationTicket = try bool("direct_verification_ticket") ?? login.directVerificationTicket
        login.ticketLifetime = try duration("ticket_lifetime") ?? login.ticketLifetime
        login.loginTimeout = try duration("login_timeout") ?? login.loginTimeout
        login.enterpriseNames = try bool("enterprise_names") ?? login.enterpriseNames
        login.canonicalize = try bool("canonicalize") ?? login.canonicalize
        workers = try int("workers") ?? workers
        maxConnections = try int("max_connections") ?? maxConnections
        readTimeout = try duration("read_timeout") ?? readTimeout
        idleTimeout = try duration("idle_timeout") ?? idleTimeout
        roundTimeout = try duration("round_timeout") ?? roundTimeout
        maxParkedConversations = try int("max_parked_conversations") ?? maxParkedConversations
        failureFloor = try duration("failure_floor") ?? failureFloor
        throttleFailures = try int("throttle_failures") ?? throttleFailures
        throttleWindow = try duration("throttle_window") ?? throttleWindow
        throttleBackoff = try duration("throttle_backoff") ?? throttleBackoff
        throttleMaxBackoff = try duration("throttle_max_backoff") ?? throttleMaxBackoff
        throttlePenalty = try duration("throttle_penalty") ?? throttlePenalty
        allowedUIDs = try ids("allowed_uids") ?? allowedUIDs
        allowedGIDs = try ids("allowed_gids") ?? allowedGIDs
        metricsListen = try string("metrics_listen") ?? metricsListen
        resultCacheTTL = try duration("result_cache_ttl") ?? resultCacheTTL
        if let level = try string("log_level") {
            guard let parsed = Logger.Level(rawValue: level) else { throw ConfigurationError("\(source): log_level must be one of trace, debug, info, notice, warning, error, critical") }
            logLevel = parsed
        }
        try validate()
    }

    /// The keys a `[realms."NAME"]` table accepts.
    public static let realmKeys: Set<String> = ["keytab", "server_principal", "armor", "armor_principal"]

    /// `[realms."NAME"]` tables: the realms allowed, each with settings of its own.
    private mutating func loadRealmSettings(_ realms: TOMLTable, source: String) throws(ConfigurationError) {
        var names: [String] = []
        for name in realms.keys.sorted() {
            guard let entry = realms[name]?.table else { throw ConfigurationError("\(source): realms.\(name) must be a table") }
            for key in entry.keys where !Self.realmKeys.contains(key) {
                throw ConfigurationError("\(source): unknown key \"\(key)\" in realms.\(name)")
            }
            func string(_ key: String) throws(ConfigurationError) -> String? {
                guard let value = entry[key] else { return nil }
                guard let text = value.string else { throw ConfigurationError("\(source): realms.\(name).\(key) must be a string") }
                return text
            }
            var settings = LoginConfiguration.RealmSettings(keytab: try string("keytab"), serverPrincipal: try string("server_principal"),
                                                            armorPrincipal: try string("armor_principal"))
            if let armor = try string("armor") {
                guard let parsed = LoginConfiguration.ArmorSource(rawValue: armor) else {
                    throw ConfigurationError("\(source): realms.\(name).armor must be anonymous, keytab or none")
                }
                settings.armor = parsed
            }
            names.append(name)
            login.realmSettings[name] = settings
        }
        login.realms = names
    }

    /// Checks values that make no sense together.
    public func validate() throws(ConfigurationError) {
        if saslSocket == nil && socket == nil && httpSocket == nil && httpListen == nil {
            throw ConfigurationError("no listener: give --sasl-socket, --socket, --http-socket or --http-listen")
        }
        if let httpListen, Self.loopbackPort(httpListen) == nil {
            throw ConfigurationError("http_listen must be a loopback address and a port, such as 127.0.0.1:8088 or [::1]:8088, not \(httpListen)")
        }
        if httpRealm.isEmpty || httpRealm.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F || $0 == "\"" || $0 == "\\" }) {
            throw ConfigurationError("http_realm must be non-empty, without quotes, backslashes or control characters")
        }
        if httpClientAddressHeader.isEmpty || !httpClientAddressHeader.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || $0.properties.numericType != nil || $0 == "-") }) {
            throw ConfigurationError("http_client_address_header must be a header name such as X-Forwarded-For")
        }
        for address in httpTrustedAddresses where !HTTPAuth.isAddress(address) {
            throw ConfigurationError("http_trusted_addresses: \(address) is not an IP address")
        }
        if workers < 1 || workers > 256 { throw ConfigurationError("workers must be between 1 and 256") }
        if maxConnections < 1 { throw ConfigurationError("max_connections must be at least 1") }
        if throttleFailures < 1 { throw ConfigurationError("throttle_failures must be at least 1") }
        if maxParkedConversations < 0 { throw ConfigurationError("max_parked_conversations must not be negative") }
        for (key, value) in [("read_timeout", readTimeout), ("idle_timeout", idleTimeout), ("round_timeout", roundTimeout)] where value <= .zero {
            throw ConfigurationError("\(key) must be longer than zero")
        }
        if login.realms?.isEmpty == true { throw ConfigurationError("realms must name at least one realm") }
        if login.loginTimeout <= .zero { throw ConfigurationError("login_timeout must be longer than zero") }
        for (realm, settings) in login.realmSettings where login.fastRequired && settings.armor == LoginConfiguration.ArmorSource.none {
            throw ConfigurationError("fast_required needs armor for realm \(realm) too")
        }
        if login.fastRequired && login.armor == .none { throw ConfigurationError("fast_required needs armor = anonymous or keytab") }
        for path in [saslSocket, socket, httpSocket].compactMap({ $0 }) where path.utf8.count >= 108 {
            throw ConfigurationError("socket path longer than 107 bytes: \(path)")
        }
    }

    /// The host and port of a loopback `host:port` (`127.0.0.1:8088`, `[::1]:8088`, `localhost:8088`); nil for
    /// anything else: the endpoint answers only this machine's proxies.
    static func loopbackPort(_ address: String) -> (host: String, port: Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let loopback = host == "localhost" || host == "::1" || (host.hasPrefix("127.") && HTTPAuth.isAddress(host))
        return loopback ? (host == "localhost" ? "127.0.0.1" : host, port) : nil
    }

    /// Parses `250ms`, `30s`, `2m`, `1h`, `1d` or plain seconds; nil for anything else.
    public static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, milliseconds) in units where text.hasSuffix(suffix) {
            let digits = text.dropLast(suffix.count)
            if suffix == "s", digits.hasSuffix("m") { continue }
            guard let value = Int64(digits), value >= 0 else { return nil }
            return .milliseconds(value * milliseconds)
        }
        return Int64(text).map { .seconds($0) }
    }
}

/// A configuration problem, naming the key or flag.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// What is wrong, naming the key or flag.
    public let description: String
    /// An error with the given text.
    public init(_ description: String) { self.description = description }
}

/// The timers of one connection: all a listener's handler reads of the configuration.
struct ListenerTimeouts: Sendable {
    /// For the whole request (`read_timeout`).
    var read: Duration
    /// For silence while a request or a begun line is awaited (`idle_timeout`).
    var idle: Duration
    /// How long a four-field saslauthd request waits for a fifth field (`four_field_grace`).
    var fourFieldGrace: Duration
    /// For a person's answers to one round of questions (`round_timeout`).
    var round: Duration

    init(_ configuration: DaemonConfiguration) {
        read = configuration.readTimeout
        idle = configuration.idleTimeout
        fourFieldGrace = configuration.fourFieldGrace
        round = configuration.roundTimeout
    }
}
