internal import CKrb5
internal import NIOCore
#if canImport(Glibc)
internal import Glibc
#endif

/// One KDC of a realm as the configuration names it.
struct KDCAddress: Hashable, Sendable, CustomStringConvertible {
    /// How to reach it.
    enum Transport: Hashable, Sendable {
        /// UDP first, TCP when the reply is too big or the message is over `udp_preference_limit`.
        case any
        /// TCP only (a `tcp/` prefix in krb5.conf, or an `_kerberos._tcp` SRV record).
        case tcp
        /// UDP only (a `udp/` prefix).
        case udp
    }

    var host: String
    var port: Int
    var transport: Transport
    /// Listed as `primary_kdc` (or `master_kdc`) too.
    var isPrimary: Bool

    /// `host:port`, the key of the health memory.
    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses a krb5.conf `kdc` (or `kpasswd_server`) value: `host`, `host:port`, `[v6]:port`, optionally prefixed
    /// `tcp/` or `udp/`; `defaultPort` when none is given.
    /// Returns nil for what this engine does not speak (`https://` KKDCP proxies).
    init?(parsing text: String, isPrimary: Bool = false, defaultPort: Int = 88) {
        var spec = Substring(text.trimmingWhitespace())
        transport = .any
        if spec.hasPrefix("tcp/") {
            transport = .tcp
            spec = spec.dropFirst(4)
        } else if spec.hasPrefix("udp/") {
            transport = .udp
            spec = spec.dropFirst(4)
        }
        if spec.isEmpty || spec.contains("://") { return nil }
        var port = defaultPort
        if spec.hasPrefix("[") {
            guard let close = spec.firstIndex(of: "]") else { return nil }
            host = String(spec[spec.index(after: spec.startIndex)..<close])
            let rest = spec[spec.index(after: close)...]
            if rest.hasPrefix(":") {
                guard let value = Int(rest.dropFirst()), (1...65535).contains(value) else { return nil }
                port = value
            }
        } else if let colon = spec.firstIndex(of: ":"), spec.filter({ $0 == ":" }).count == 1 {
            host = String(spec[..<colon])
            guard let value = Int(spec[spec.index(after: colon)...]), (1...65535).contains(value) else { return nil }
            port = value
        } else {
            host = String(spec)
        }
        self.port = port
        self.isPrimary = isPrimary
    }

    init(host: String, port: Int, transport: Transport, isPrimary: Bool) {
        self.host = host
        self.port = port
        self.transport = transport
        self.isPrimary = isPrimary
    }
}

/// Where a realm's KDCs are, and how to talk to them: what the engine reads from the profile once per realm.
struct RealmLocation: Sendable {
    var realm: String
    /// Every KDC, in the configured order (SRV records by priority, then weight).
    var kdcs: [KDCAddress]
    /// Messages longer than this go over TCP from the start (`udp_preference_limit`; MIT's default 1465).
    var udpPreferenceLimit: Int
    /// Whether the servers are to be found in DNS SRV records (krb5.conf lists none and `dns_lookup_kdc` is on);
    /// `kdcs` is then empty.
    var inDNS = false
    /// Whether any KDC is known to be a primary (`primary_kdc` / `master_kdc`): only then can a failure from a
    /// replica be retried on the primary.
    var hasPrimary: Bool { kdcs.contains(where: \.isPrimary) }
}

/// Which servers of a realm a message is for.
enum ServerRole: Sendable {
    /// The KDCs (`kdc`, SRV `_kerberos`).
    case kdc
    /// The kpasswd servers (`kpasswd_server`, `admin_server`, SRV `_kpasswd`).
    case passwordChange

    /// The service label of its SRV records.
    var dnsService: String { self == .kdc ? "_kerberos" : "_kpasswd" }
    /// How an error names one.
    var noun: String { self == .kdc ? "KDC" : "a kpasswd server" }
}

/// Finds a realm's KDCs the way MIT's `locate_kdc.c` does, from the profile of a context.
///
/// Reads `[realms] REALM = { kdc, primary_kdc, master_kdc }` and `[libdefaults] udp_preference_limit`,
/// `dns_lookup_kdc`; with no `kdc` entries and `dns_lookup_kdc` on, the location says to ask DNS for the SRV
/// records `_kerberos._udp.REALM` and `_kerberos._tcp.REALM`, which the engine does on its event loop
/// (``DNSServiceRecords``). Runs on a worker thread; nothing here touches the network.
enum KDCLocator {
    /// MIT's `DEFAULT_UDP_PREF_LIMIT`.
    static let defaultUDPPreferenceLimit = 1465
    /// MIT's `HARD_UDP_LIMIT`: above this, always TCP.
    static let hardUDPLimit = 32700

    /// Locates `realm`'s servers of `role` with `context`'s configuration.
    static func locate(_ role: ServerRole, realm: String, context: Context) throws(KerberosError) -> RealmLocation {
        switch role {
        case .kdc: try locate(realm: realm, context: context)
        case .passwordChange: try locatePasswordServers(realm: realm, context: context)
        }
    }

    /// Locates `realm`'s KDCs with `context`'s configuration.
    ///
    /// The corresponding C functions are `krb5_get_profile`, `profile_get_values`, `profile_get_integer` and
    /// `profile_get_boolean`.
    static func locate(realm: String, context: Context) throws(KerberosError) -> RealmLocation {
        try location(of: realm, in: context, role: .kdc) { profile in
            let primaries = Set((values(profile, ["realms", realm, "primary_kdc"]) + values(profile, ["realms", realm, "master_kdc"]))
                .compactMap { KDCAddress(parsing: $0) }.map { HostPort(host: $0.host, port: $0.port) })
            var kdcs = values(profile, ["realms", realm, "kdc"]).compactMap { KDCAddress(parsing: $0) }
            for index in kdcs.indices where primaries.contains(HostPort(host: kdcs[index].host, port: kdcs[index].port)) {
                kdcs[index].isPrimary = true
            }
            return kdcs
        }
    }

    /// RFC 3244's port, MIT's `DEFAULT_KPASSWD_PORT`.
    static let kpasswdPort = 464

    /// Locates `realm`'s kpasswd servers as MIT's `krb5_change_password` does: `kpasswd_server` (port 464 unless
    /// given), else the `admin_server` hosts on port 464, else (the location says so) the `_kpasswd` SRV records when
    /// `dns_lookup_kdc` is on.
    ///
    /// The corresponding C functions are those of ``locate(realm:context:)``.
    static func locatePasswordServers(realm: String, context: Context) throws(KerberosError) -> RealmLocation {
        try location(of: realm, in: context, role: .passwordChange) { profile in
            let servers = values(profile, ["realms", realm, "kpasswd_server"]).compactMap { KDCAddress(parsing: $0, defaultPort: kpasswdPort) }
            guard servers.isEmpty else { return servers }
            return values(profile, ["realms", realm, "admin_server"]).compactMap { KDCAddress(parsing: $0) }
                .map { KDCAddress(host: $0.host, port: kpasswdPort, transport: .any, isPrimary: false) }
        }
    }

    /// The location with the servers `listed` reads from the profile; when it lists none, a location to be found
    /// in DNS (`dns_lookup_kdc`, on by default) or `KRB5_REALM_CANT_RESOLVE`. `udp_preference_limit` applies to both.
    private static func location(of realm: String, in context: Context, role: ServerRole,
                                 listed: (profile_t) -> [KDCAddress]) throws(KerberosError) -> RealmLocation {
        var profile: profile_t?
        try context.check(krb5_get_profile(context.raw, &profile))
        guard let profile else { throw KerberosError(code: Int32(KRB5_REALM_UNKNOWN), message: "No profile", reason: .invalidRequest) }
        defer { profile_release(profile) }
        let servers = listed(profile)
        let inDNS = servers.isEmpty && boolean(profile, "libdefaults", "dns_lookup_kdc", default: true)
        if servers.isEmpty && !inDNS { throw cannotFind(role, realm: realm) }
        var limit = Int32(defaultUDPPreferenceLimit)
        _ = profile_get_integer(profile, "libdefaults", "udp_preference_limit", nil, Int32(defaultUDPPreferenceLimit), &limit)
        return RealmLocation(realm: realm, kdcs: servers, udpPreferenceLimit: min(Int(limit), hardUDPLimit), inDNS: inDNS)
    }

    /// `KRB5_REALM_CANT_RESOLVE`: no server of `role` is listed for the realm, nor found in DNS.
    static func cannotFind(_ role: ServerRole, realm: String) -> KerberosError {
        KerberosError(code: Int32(KRB5_REALM_CANT_RESOLVE), message: "Cannot find \(role.noun) for realm \"\(realm)\"", reason: .kdcUnreachable)
    }

    private struct HostPort: Hashable {
        var host: String
        var port: Int
    }

    /// Every value of a relation; empty when the section or relation is missing.
    static func values(_ profile: profile_t, _ path: [String]) -> [String] {
        var cStrings = path.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        cStrings.append(nil)
        var list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let code = cStrings.withUnsafeBufferPointer { names in
            names.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: names.count) {
                profile_get_values(profile, $0, &list)
            }
        }
        guard code == 0, let list else { return [] }
        defer { profile_free_list(list) }
        var result: [String] = []
        var index = 0
        while let value = list[index] {
            result.append(String(cString: value))
            index += 1
        }
        return result
    }

    static func boolean(_ profile: profile_t, _ section: String, _ name: String, default value: Bool) -> Bool {
        var result: Int32 = value ? 1 : 0
        _ = profile_get_boolean(profile, section, name, nil, value ? 1 : 0, &result)
        return result != 0
    }
}

extension String {
    func trimmingWhitespace() -> Substring {
        var text = Substring(self)
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return text
    }
}
