internal import CKrb5
internal import NIOCore
#if canImport(Glibc)
internal import Glibc
#endif

/// What the engine's DNS questions need besides the messages (``DNSServiceRecords``): which name servers to ask and
/// which names, from resolv.conf (read when a question is to be asked, which is rare: locations are cached, so a
/// changed resolv.conf is followed as glibc follows it), and `/etc/hosts`, read before any A or AAAA question as
/// `getaddrinfo` does with `hosts: files dns`.
///
/// The questions themselves go on the event loop, so that no thread waits on a name server: SRV records for a realm's
/// KDCs (`_kerberos._udp.REALM`, `_kerberos._tcp.REALM`, RFC 4120 section 7.2.3.2) and kpasswd servers
/// (`_kpasswd._udp.REALM`, `_kpasswd._tcp.REALM`), what MIT's `locate_kdc.c` asks when `dns_lookup_kdc` is on and
/// krb5.conf lists none, and a server's A and AAAA records. They go over UDP with the failover, hedging and
/// retransmission of KDC messages (``KDCTransport``), under the login's deadline; a truncated answer is asked again
/// over TCP of the same server. ``KerberosClient/Configuration/nameservers`` replaces resolv.conf's name servers.
enum DNSResolver {
    /// The most search domains tried (glibc's `MAXDNSRCH`).
    static let maximumSearchDomains = 6

    /// What resolv.conf says: the name servers (glibc's default, 127.0.0.1, when it names none) and the search domains.
    struct Settings: Sendable {
        var nameservers: [SocketAddress]
        var search: [String]

        /// Reads `path` (resolv.conf's syntax: `nameserver`, `search`, `domain`; at most three name servers, as glibc).
        static func read(_ path: String = "/etc/resolv.conf") -> Settings {
            var nameservers: [SocketAddress] = []
            var search: [String] = []
            for line in readLines(path) {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
                guard let keyword = fields.first else { continue }
                switch keyword {
                case "nameserver" where fields.count >= 2 && nameservers.count < 3:
                    if let address = try? SocketAddress(ipAddress: fields[1], port: 53) { nameservers.append(address) }
                case "search":
                    search = Array(fields.dropFirst())
                case "domain" where fields.count >= 2:
                    search = [fields[1]]
                default:
                    break
                }
            }
            if nameservers.isEmpty, let local = try? SocketAddress(ipAddress: "127.0.0.1", port: 53) { nameservers = [local] }
            return Settings(nameservers: nameservers, search: search)
        }
    }

    /// The addresses `/etc/hosts` (at `path`) gives `host`, in the file's order; empty when it names none.
    static func hostsFile(_ host: String, port: Int, path: String = "/etc/hosts") -> [SocketAddress] {
        let wanted = host.lowercased()
        var result: [SocketAddress] = []
        for line in readLines(path) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields.dropFirst().contains(where: { $0.lowercased() == wanted }),
                  let address = try? SocketAddress(ipAddress: String(fields[0]), port: port) else { continue }
            result.append(address)
        }
        return result
    }

    /// The lines of a small configuration file, comments (`#`, `;`) removed; empty when it cannot be read.
    private static func readLines(_ path: String) -> [Substring] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes += buffer[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
            let text = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first?
                .split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            return text.allSatisfy(\.isWhitespace) ? nil : text
        }
    }

    /// The names to ask for `host`, as glibc's resolver with `ndots:1` orders them: a name with a dot as given
    /// first, then with each search domain; a single label with the search domains first.
    static func candidates(_ host: String, search: [String]) -> [String] {
        let searched = search.map { host + "." + $0 }
        return host.contains(".") ? [host] + searched : searched + [host]
    }
}

extension KerberosClient {
    /// A name server the client asks instead of resolv.conf's (``Configuration/nameservers``): an IPv4 or IPv6
    /// address and a port.
    public struct NameServer: Sendable, Hashable, CustomStringConvertible {
        /// The numeric address, as given.
        public let ipAddress: String
        /// The UDP and TCP port (53 unless given).
        public let port: Int
        let address: SocketAddress

        /// The name server at `ipAddress` (numeric, such as `192.0.2.53` or `2001:db8::53`) and `port`.
        ///
        /// Throws `KerberosError.Reason.invalidRequest` when `ipAddress` is not a numeric address or `port` is
        /// outside 1–65535.
        public init(_ ipAddress: String, port: Int = 53) throws(KerberosError) {
            guard (1...65_535).contains(port), let address = try? SocketAddress(ipAddress: ipAddress, port: port) else {
                throw KerberosError(code: Int32(KRB5_CONFIG_BADFORMAT), message: "The name server \"\(ipAddress)\" port \(port) is not an IP address and a port from 1 to 65535",
                                    reason: .invalidRequest)
            }
            self.ipAddress = ipAddress
            self.port = port
            self.address = address
        }

        /// The address and port, such as `192.0.2.53:53` or `[2001:db8::53]:53`.
        public var description: String { ipAddress.contains(":") ? "[\(ipAddress)]:\(port)" : "\(ipAddress):\(port)" }
    }
}

extension KerberosSession {
    /// resolv.conf's settings, with the client's ``KerberosClient/Configuration/nameservers`` in place of its name
    /// servers when set.
    func resolverSettings() -> DNSResolver.Settings {
        var settings = DNSResolver.Settings.read()
        if let configured = client.configuration.nameservers { settings.nameservers = configured.map(\.address) }
        return settings
    }

    /// The SRV records of `name`, asked of the name servers on the event loop; none when the name has none.
    func serviceRecords(_ name: String, realm: String) async throws(KerberosError) -> DNSServiceRecords.Answer<DNSServiceRecords.Record> {
        let (reply, question) = try await ask(name, type: DNSServiceRecords.typeSRV, nameservers: resolverSettings().nameservers, realm: realm)
        return DNSServiceRecords.serviceRecords(reply, question: question)
    }

    /// The servers of `realm` that the SRV records `_service._udp.REALM` and `_service._tcp.REALM` name (at most
    /// ``DNSServiceRecords/maximumServiceRecords``), and how long the answers may be kept.
    func serversFromDNS(_ service: String, realm: String) async throws(KerberosError) -> DNSServiceRecords.Answer<KDCAddress> {
        let udp = try await serviceRecords("\(service)._udp.\(realm)", realm: realm)
        let tcp = try await serviceRecords("\(service)._tcp.\(realm)", realm: realm)
        return DNSServiceRecords.Answer(values: Array(DNSServiceRecords.servers(udp: udp.values, tcp: tcp.values).prefix(DNSServiceRecords.maximumServiceRecords)),
                                        ttl: min(udp.ttl, tcp.ttl))
    }

    /// The addresses of a server: its numeric address, else `/etc/hosts`, else A and AAAA records (for each name
    /// of ``DNSResolver/candidates(_:search:)`` until one has some); none when none is found. The TTL is
    /// ``DNSServiceRecords/maximumTTL`` unless DNS said less.
    func addresses(of kdc: KDCAddress, realm: String) async throws(KerberosError) -> DNSServiceRecords.Answer<SocketAddress> {
        if let address = try? SocketAddress(ipAddress: kdc.host, port: kdc.port) { return .init(values: [address], ttl: DNSServiceRecords.maximumTTL) }
        let fromFile = DNSResolver.hostsFile(kdc.host, port: kdc.port)
        if !fromFile.isEmpty { return .init(values: Array(fromFile.prefix(DNSServiceRecords.maximumAddresses)), ttl: DNSServiceRecords.maximumTTL) }
        let settings = resolverSettings()
        var ttl = DNSServiceRecords.maximumTTL
        for name in DNSResolver.candidates(kdc.host, search: Array(settings.search.prefix(DNSResolver.maximumSearchDomains))) {
            var found: [SocketAddress] = []
            for type in [DNSServiceRecords.typeA, DNSServiceRecords.typeAAAA] {
                let (reply, question) = try await ask(name, type: type, nameservers: settings.nameservers, realm: realm)
                let answer = DNSServiceRecords.addresses(reply, question: question, port: kdc.port)
                found += answer.values
                ttl = min(ttl, answer.ttl)
            }
            if !found.isEmpty { return .init(values: Array(found.prefix(DNSServiceRecords.maximumAddresses)), ttl: ttl) }
        }
        return .init(values: [], ttl: ttl)
    }

    /// One DNS question, sent to `nameservers` as a KDC message is sent to KDCs (UDP, then TCP to the same server
    /// when the answer comes truncated); the answer's bytes (empty when no server answered) and the question.
    private func ask(_ name: String, type: UInt16, nameservers: [SocketAddress], realm: String) async throws(KerberosError) -> ([UInt8], DNSServiceRecords.Question) {
        let question = DNSServiceRecords.Question(id: UInt16.random(in: 0...UInt16.max), name: name, type: type)
        guard !nameservers.isEmpty, let query = DNSServiceRecords.query(id: question.id, name: name, type: type) else { return ([], question) }
        let targets = nameservers.map { address in
            KDCTarget(kdc: KDCAddress(host: address.ipAddress ?? "", port: address.port ?? 53, transport: .any, isPrimary: false),
                      address: address, key: "dns \(address)")
        }
        do {
            return (try await transmit(Array(repeating: query, count: targets.count), to: targets, kind: .dns(question), udpPreferenceLimit: Int.max,
                                       tcpOnly: false, realm: realm).bytes, question)
        } catch where error.code == Int32(KRB5_KDC_UNREACH) && error.reason == .kdcUnreachable && deadline > .now() {
            // Every name server refused or failed: no answer, as res_query reports it.
            return ([], question)
        }
    }
}
