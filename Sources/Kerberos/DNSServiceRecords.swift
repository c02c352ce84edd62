internal import CKrb5
internal import NIOCore
#if canImport(Glibc)
internal import Glibc
#endif

/// The DNS the engine needs, asked on its event loop so that no thread waits on a name server: SRV records for a
/// realm's KDCs (`_kerberos._udp.REALM`, `_kerberos._tcp.REALM`, RFC 4120 section 7.2.3.2) and kpasswd servers
/// (`_kpasswd._udp.REALM`, `_kpasswd._tcp.REALM`), what MIT's `locate_kdc.c` asks when `dns_lookup_kdc` is on and
/// krb5.conf lists none; and the addresses of a server's host name, from `/etc/hosts` then A and AAAA records, as
/// `getaddrinfo` finds them with `hosts: files dns`.
///
/// The name servers and search domains are resolv.conf's, read when a question is to be asked (rarely: locations are
/// cached), so a changed resolv.conf is followed as glibc follows it. Questions go over UDP with the failover, hedging and
/// retransmission of KDC messages (``KDCTransport``), under the login's deadline. A truncated answer is used as it
/// came (SRV and address answers for a realm fit a datagram).
enum DNSServiceRecords {
    /// One SRV record.
    struct Record: Hashable, Sendable {
        var priority: UInt16
        var weight: UInt16
        var port: UInt16
        var target: String
    }

    static let typeA: UInt16 = 1
    static let typeAAAA: UInt16 = 28
    static let typeSRV: UInt16 = 33

    /// The servers an SRV answer names, UDP records first, each list in priority order (higher weight first within
    /// a priority); a server listed for both keeps one entry that may use either.
    static func servers(udp: [Record], tcp: [Record]) -> [KDCAddress] {
        var result: [KDCAddress] = []
        for (records, transport) in [(udp, KDCAddress.Transport.any), (tcp, .tcp)] {
            for record in records where record.target != "." && !record.target.isEmpty {
                let kdc = KDCAddress(host: record.target, port: Int(record.port), transport: transport, isPrimary: false)
                if transport == .tcp, let index = result.firstIndex(where: { $0.host == kdc.host && $0.port == kdc.port }) {
                    result[index].transport = .any
                } else {
                    result.append(kdc)
                }
            }
        }
        return result
    }

    // MARK: Resolver settings

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

    /// Name servers that answer the SRV questions of one realm instead of resolv.conf's, by realm.
    private static let nameservers = Locked<[String: SocketAddress]>([:])

    /// Sends the SRV questions for `realm`'s servers to the IPv4 name server `host`:`port` instead of resolv.conf's;
    /// nil puts resolv.conf back. A test hook: the tests serve SRV records on loopback, where resolv.conf cannot
    /// point (it names no port). Other realms are not affected.
    package static func setNameserver(_ nameserver: (host: String, port: Int)?, forRealm realm: String) {
        let address = nameserver.flatMap { try? SocketAddress(ipAddress: $0.host, port: $0.port) }
        nameservers.withLock { $0[realm] = address }
    }

    /// The name server set for `realm` by ``setNameserver(_:forRealm:)``.
    static func nameserver(forRealm realm: String) -> SocketAddress? { nameservers.withLock { $0[realm] } }

    // MARK: Messages

    /// A query for `name` (`type`, class IN, recursion desired), or nil for a name DNS cannot carry.
    static func query(id: UInt16, name: String, type: UInt16) -> [UInt8]? {
        var message: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty, bytes.count < 64 else { return nil }
            message.append(UInt8(bytes.count))
            message += bytes
        }
        message.append(0)
        guard message.count - 12 <= 255 else { return nil }
        message += [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
        return message
    }

    /// Whether `message` is the answer to query `id` (the same ID, the response bit set).
    static func isAnswer(_ message: [UInt8], id: UInt16) -> Bool {
        message.count >= 12 && UInt16(message[0]) << 8 | UInt16(message[1]) == id && message[2] & 0x80 != 0
    }

    /// The SRV answers of a DNS response (RFC 1035 section 4.1, RFC 2782), sorted by priority then descending
    /// weight; empty for a malformed message.
    static func parse(_ message: [UInt8]) -> [Record] {
        var records: [Record] = []
        answers(message) { type, reader in
            if type == typeSRV, let priority = reader.uint16(), let weight = reader.uint16(), let port = reader.uint16(), let target = reader.name() {
                records.append(Record(priority: priority, weight: weight, port: port, target: target))
            }
        }
        return records.sorted { ($0.priority, UInt16.max - $0.weight) < ($1.priority, UInt16.max - $1.weight) }
    }

    /// The A and AAAA answers of a DNS response as socket addresses with `port`, in the answer's order.
    static func addresses(_ message: [UInt8], port: Int) -> [SocketAddress] {
        var result: [SocketAddress] = []
        answers(message) { type, reader in
            let length = type == typeA ? 4 : type == typeAAAA ? 16 : 0
            guard length > 0, let bytes = reader.bytes(length) else { return }
            let text: String
            if length == 4 {
                text = bytes.map(String.init).joined(separator: ".")
            } else {
                text = stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
            }
            if let address = try? SocketAddress(ipAddress: text, port: port) { result.append(address) }
        }
        return result
    }

    /// Calls `body` with each answer record's type and a reader at its data; stops at the first malformed record.
    private static func answers(_ message: [UInt8], _ body: (UInt16, inout Reader) -> Void) {
        guard message.count >= 12 else { return }
        var reader = Reader(message: message, offset: 12)
        let questions = Int(message[4]) << 8 | Int(message[5])
        let answers = Int(message[6]) << 8 | Int(message[7])
        for _ in 0..<questions {
            guard reader.name() != nil, reader.skip(4) else { return }
        }
        for _ in 0..<answers {
            guard reader.name() != nil, let type = reader.uint16(), reader.skip(6), let rdLength = reader.uint16() else { return }
            let end = reader.offset + Int(rdLength)
            guard end <= message.count else { return }
            var record = reader
            body(type, &record)
            reader.offset = end
        }
    }

    private struct Reader {
        let message: [UInt8]
        var offset: Int

        mutating func uint16() -> UInt16? {
            guard offset + 2 <= message.count else { return nil }
            defer { offset += 2 }
            return UInt16(message[offset]) << 8 | UInt16(message[offset + 1])
        }

        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard offset + count <= message.count else { return nil }
            defer { offset += count }
            return Array(message[offset..<(offset + count)])
        }

        mutating func skip(_ count: Int) -> Bool {
            guard offset + count <= message.count else { return false }
            offset += count
            return true
        }

        /// A possibly compressed domain name, without the trailing dot ("." for the root).
        mutating func name() -> String? {
            var labels: [String] = []
            var position = offset
            var jumped = false
            var hops = 0
            while true {
                guard position < message.count else { return nil }
                let length = Int(message[position])
                if length == 0 {
                    if !jumped { offset = position + 1 }
                    break
                }
                if length & 0xC0 == 0xC0 {
                    guard position + 1 < message.count, hops < 32 else { return nil }
                    if !jumped { offset = position + 2 }
                    position = (length & 0x3F) << 8 | Int(message[position + 1])
                    jumped = true
                    hops += 1
                    continue
                }
                guard position + 1 + length <= message.count else { return nil }
                labels.append(String(decoding: message[(position + 1)..<(position + 1 + length)], as: UTF8.self))
                position += 1 + length
            }
            return labels.isEmpty ? "." : labels.joined(separator: ".")
        }
    }
}

extension KerberosSession {
    /// The SRV records of `name`, asked of `realm`'s name servers on the event loop; empty when the name has none.
    func serviceRecords(_ name: String, realm: String) async throws(KerberosError) -> [DNSServiceRecords.Record] {
        let nameservers = DNSServiceRecords.nameserver(forRealm: realm).map { [$0] } ?? DNSServiceRecords.Settings.read().nameservers
        return DNSServiceRecords.parse(try await ask(name, type: DNSServiceRecords.typeSRV, nameservers: nameservers, realm: realm))
    }

    /// The servers of `realm` that the SRV records `_service._udp.REALM` and `_service._tcp.REALM` name.
    func serversFromDNS(_ service: String, realm: String) async throws(KerberosError) -> [KDCAddress] {
        DNSServiceRecords.servers(udp: try await serviceRecords("\(service)._udp.\(realm)", realm: realm),
                                  tcp: try await serviceRecords("\(service)._tcp.\(realm)", realm: realm))
    }

    /// The addresses of a server: its numeric address, else `/etc/hosts`, else A and AAAA records (for each name
    /// of ``DNSServiceRecords/candidates(_:search:)`` until one has some); empty when none is found.
    func addresses(of kdc: KDCAddress, realm: String) async throws(KerberosError) -> [SocketAddress] {
        if let address = try? SocketAddress(ipAddress: kdc.host, port: kdc.port) { return [address] }
        let fromFile = DNSServiceRecords.hostsFile(kdc.host, port: kdc.port)
        if !fromFile.isEmpty { return fromFile }
        let settings = DNSServiceRecords.Settings.read()
        for name in DNSServiceRecords.candidates(kdc.host, search: settings.search) {
            var found: [SocketAddress] = []
            for type in [DNSServiceRecords.typeA, DNSServiceRecords.typeAAAA] {
                found += DNSServiceRecords.addresses(try await ask(name, type: type, nameservers: settings.nameservers, realm: realm), port: kdc.port)
            }
            if !found.isEmpty { return found }
        }
        return []
    }

    /// One DNS question, sent to `nameservers` as a KDC message is sent to KDCs; the answer's bytes.
    private func ask(_ name: String, type: UInt16, nameservers: [SocketAddress], realm: String) async throws(KerberosError) -> [UInt8] {
        let id = UInt16.random(in: 0...UInt16.max)
        guard let query = DNSServiceRecords.query(id: id, name: name, type: type) else { return [] }
        let targets = nameservers.map { address in
            KDCTarget(kdc: KDCAddress(host: address.ipAddress ?? "", port: address.port ?? 53, transport: .udp, isPrimary: false),
                      address: address, key: "dns \(address)")
        }
        do {
            return try await transmit(Array(repeating: query, count: targets.count), to: targets, kind: .dns(id: id), udpPreferenceLimit: Int.max,
                                      tcpOnly: false, realm: realm).bytes
        } catch where error.code == Int32(KRB5_KDC_UNREACH) && error.reason == .kdcUnreachable && deadline > .now() {
            // Every name server refused: no answer, as res_query reports it.
            return []
        }
    }
}
