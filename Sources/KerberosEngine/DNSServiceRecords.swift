internal import CKrb5
package import NIOCore
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
/// retransmission of KDC messages (``KDCTransport``), under the login's deadline; a truncated answer is asked again
/// over TCP. A response is taken only when it repeats the question, and only records about the asked name count;
/// everything read is bounded (names, compression, record counts, SRV targets, addresses), and the TTLs say how long
/// the location is kept (within ``minimumTTL`` and ``maximumTTL``).
package enum DNSServiceRecords {
    /// One SRV record.
    package struct Record: Hashable, Sendable {
        package var priority: UInt16
        package var weight: UInt16
        package var port: UInt16
        package var target: String
    }

    package static let typeA: UInt16 = 1
    package static let typeAAAA: UInt16 = 28
    package static let typeSRV: UInt16 = 33

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

    /// The most SRV records of one answer that become servers, and the most servers a realm's SRV answers give: each
    /// server costs A and AAAA questions and sockets.
    package static let maximumServiceRecords = 16
    /// The most addresses one host name gives.
    package static let maximumAddresses = 8
    /// The most search domains tried (glibc's `MAXDNSRCH`).
    static let maximumSearchDomains = 6
    /// The most answer records read from one message; the rest are ignored.
    static let maximumAnswerRecords = 256
    /// RFC 1035 section 3.1: a name is at most 255 bytes on the wire.
    static let maximumNameLength = 255
    /// How long what DNS said is kept: its TTL, within these bounds (a TTL of 0 would send a question per login).
    package static let minimumTTL: UInt32 = 5
    package static let maximumTTL: UInt32 = 300

    /// One question: the ID it went with, the name and the type asked.
    package struct Question: Sendable, Equatable {
        package var id: UInt16
        package var name: String
        package var type: UInt16

        package init(id: UInt16, name: String, type: UInt16) {
            self.id = id
            self.name = name
            self.type = type
        }
    }

    /// RCODE 0, NOERROR.
    static let noError: UInt8 = 0
    /// RCODE 3, NXDOMAIN: the name does not exist, an answer with no records.
    static let nameError: UInt8 = 3

    /// A query for `name` (`type`, class IN, recursion desired), or nil for a name DNS cannot carry.
    package static func query(id: UInt16, name: String, type: UInt16) -> [UInt8]? {
        var message: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        let trimmed = name.hasSuffix(".") ? String(name.dropLast()) : name
        for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
            let bytes = Array(label.utf8)
            guard !bytes.isEmpty, bytes.count < 64 else { return nil }
            message.append(UInt8(bytes.count))
            message += bytes
        }
        message.append(0)
        guard message.count - 12 <= maximumNameLength else { return nil }
        message += [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
        return message
    }

    /// Whether `message` is a response to `question`: the same ID, the response bit set, a standard query, and
    /// exactly the question that was asked (name, compared without case, type and class IN). A response that says
    /// anything else is some other exchange's, or forged, and is ignored.
    package static func isResponse(_ message: [UInt8], to question: Question) -> Bool {
        guard message.count >= 12, UInt16(message[0]) << 8 | UInt16(message[1]) == question.id,
              message[2] & 0x80 != 0, message[2] & 0x78 == 0,  // QR, OPCODE QUERY
              message[4] == 0, message[5] == 1 else { return false }
        var reader = Reader(message: message, offset: 12)
        guard let name = reader.name(), let type = reader.uint16(), let questionClass = reader.uint16() else { return false }
        return type == question.type && questionClass == 1 && sameName(name, question.name)
    }

    /// Whether the TC bit is set: the answer did not fit the datagram and is to be asked again over TCP.
    package static func isTruncated(_ message: [UInt8]) -> Bool { message.count >= 12 && message[2] & 0x02 != 0 }

    /// The RCODE of a response.
    package static func responseCode(_ message: [UInt8]) -> UInt8 { message.count >= 12 ? message[3] & 0x0F : 0xFF }

    /// Whether the response answers the question, with records or with NXDOMAIN; any other RCODE (SERVFAIL,
    /// REFUSED, ...) means this server has no answer, and the next one is asked.
    package static func isAnswer(_ message: [UInt8]) -> Bool {
        let code = responseCode(message)
        return code == noError || code == nameError
    }

    /// Names compared as DNS compares them: ASCII letters without case, a trailing dot ignored.
    static func sameName(_ left: String, _ right: String) -> Bool {
        func canonical(_ name: String) -> [UInt8] {
            var bytes = Array(name.utf8)
            if bytes.last == UInt8(ascii: ".") && bytes.count > 1 { bytes.removeLast() }
            return bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
        }
        return canonical(left) == canonical(right)
    }

    /// Values of the answer records of a response to `question` with their TTL.
    package struct Answer<Value: Sendable>: Sendable {
        package var values: [Value]
        /// The smallest TTL of the records used, within ``minimumTTL`` and ``maximumTTL``; ``maximumTTL`` when none.
        package var ttl: UInt32
    }

    /// The SRV answers of a response to `question` (RFC 1035 section 4.1, RFC 2782), sorted by priority then
    /// descending weight, at most ``maximumServiceRecords``; none for a malformed message or one that answers
    /// something else.
    package static func serviceRecords(_ message: [UInt8], question: Question) -> Answer<Record> {
        var answer = answers(message, question: question) { reader -> Record? in
            guard let priority = reader.uint16(), let weight = reader.uint16(), let port = reader.uint16(), let target = reader.name() else { return nil }
            return Record(priority: priority, weight: weight, port: port, target: target)
        }
        answer.values = Array(answer.values.sorted { ($0.priority, UInt16.max - $0.weight) < ($1.priority, UInt16.max - $1.weight) }
            .prefix(maximumServiceRecords))
        return answer
    }

    /// The A or AAAA answers (as `question` asks) of a response as socket addresses with `port`, in the answer's
    /// order, at most ``maximumAddresses``.
    package static func addresses(_ message: [UInt8], question: Question, port: Int) -> Answer<SocketAddress> {
        let length = question.type == typeA ? 4 : question.type == typeAAAA ? 16 : 0
        var answer = answers(message, question: question) { reader -> SocketAddress? in
            guard length > 0, reader.remaining == length, let bytes = reader.bytes(length) else { return nil }
            let text: String
            if length == 4 {
                text = bytes.map(String.init).joined(separator: ".")
            } else {
                text = stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
            }
            return try? SocketAddress(ipAddress: text, port: port)
        }
        answer.values = Array(answer.values.prefix(maximumAddresses))
        return answer
    }

    /// The values `decode` reads from each answer record of `question`'s type and class IN whose owner is the
    /// question's name or, through CNAME records of the answer, an alias of it. Stops at the first malformed
    /// record; reads at most ``maximumAnswerRecords``.
    private static func answers<Value: Sendable>(_ message: [UInt8], question: Question, _ decode: (inout Reader) -> Value?) -> Answer<Value> {
        var result = Answer<Value>(values: [], ttl: maximumTTL)
        guard isResponse(message, to: question), isAnswer(message) else { return result }
        var reader = Reader(message: message, offset: 12)
        guard reader.name() != nil, reader.skip(4) else { return result }
        var owners = [question.name]
        var ttl = maximumTTL
        let count = min(Int(message[6]) << 8 | Int(message[7]), maximumAnswerRecords)
        for _ in 0..<count {
            guard let owner = reader.name(), let type = reader.uint16(), let recordClass = reader.uint16(), let recordTTL = reader.uint32(),
                  let length = reader.uint16() else { break }
            let end = reader.offset + Int(length)
            guard end <= message.count else { break }
            defer { reader.offset = end }
            guard recordClass == 1, owners.contains(where: { sameName($0, owner) }) else { continue }
            var record = Reader(message: message, offset: reader.offset, end: end)
            if type == typeCNAME, question.type != typeCNAME {
                if let alias = record.name(), owners.count < 8 { owners.append(alias) }
                continue
            }
            guard type == question.type, let value = decode(&record) else { continue }
            result.values.append(value)
            ttl = min(ttl, recordTTL)
        }
        result.ttl = min(max(ttl, minimumTTL), maximumTTL)
        return result
    }

    static let typeCNAME: UInt16 = 5

    /// Reads a DNS message; every read is bounded by the message (or a record's end).
    private struct Reader {
        let message: [UInt8]
        var offset: Int
        var end: Int

        init(message: [UInt8], offset: Int, end: Int? = nil) {
            self.message = message
            self.offset = offset
            self.end = end ?? message.count
        }

        /// The most compression pointers followed in one name.
        static let maximumPointers = 16

        var remaining: Int { end - offset }

        mutating func uint16() -> UInt16? {
            guard offset + 2 <= end else { return nil }
            defer { offset += 2 }
            return UInt16(message[offset]) << 8 | UInt16(message[offset + 1])
        }

        mutating func uint32() -> UInt32? {
            guard let high = uint16(), let low = uint16() else { return nil }
            return UInt32(high) << 16 | UInt32(low)
        }

        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard offset + count <= end else { return nil }
            defer { offset += count }
            return Array(message[offset..<(offset + count)])
        }

        mutating func skip(_ count: Int) -> Bool {
            guard offset + count <= end else { return false }
            offset += count
            return true
        }

        /// A possibly compressed domain name, without the trailing dot ("." for the root); nil when it is
        /// malformed, longer than 255 bytes, has more than ``maximumPointers`` compression pointers, or a pointer
        /// that does not point before every byte of the name read so far (so no byte is read twice: no loops).
        /// One name costs at most 255 label bytes and a few jumps, however the message is built.
        mutating func name() -> String? {
            var bytes: [UInt8] = []
            var position = offset
            var jumped = false
            var wireLength = 1
            var lowest = offset
            var pointers = 0
            while true {
                guard position < (jumped ? message.count : end) else { return nil }
                let length = Int(message[position])
                if length == 0 {
                    if !jumped { offset = position + 1 }
                    break
                }
                switch length & 0xC0 {
                case 0xC0:
                    guard position + 1 < (jumped ? message.count : end) else { return nil }
                    let target = (length & 0x3F) << 8 | Int(message[position + 1])
                    pointers += 1
                    guard target < lowest, pointers <= Self.maximumPointers else { return nil }
                    lowest = target
                    if !jumped { offset = position + 2 }
                    position = target
                    jumped = true
                case 0:
                    wireLength += 1 + length
                    guard wireLength <= maximumNameLength, position + 1 + length <= (jumped ? message.count : end) else { return nil }
                    if !bytes.isEmpty { bytes.append(UInt8(ascii: ".")) }
                    bytes += message[(position + 1)..<(position + 1 + length)]
                    position += 1 + length
                default:
                    return nil  // the extended label types of RFC 6891 are not used in answers
                }
            }
            return bytes.isEmpty ? "." : String(decoding: bytes, as: UTF8.self)
        }
    }
}

extension KerberosSession {
    /// The SRV records of `name`, asked of `realm`'s name servers on the event loop; none when the name has none.
    func serviceRecords(_ name: String, realm: String) async throws(KerberosError) -> DNSServiceRecords.Answer<DNSServiceRecords.Record> {
        let nameservers = DNSServiceRecords.nameserver(forRealm: realm).map { [$0] } ?? DNSServiceRecords.Settings.read().nameservers
        let (reply, question) = try await ask(name, type: DNSServiceRecords.typeSRV, nameservers: nameservers, realm: realm)
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
    /// of ``DNSServiceRecords/candidates(_:search:)`` until one has some); none when none is found. The TTL is
    /// ``DNSServiceRecords/maximumTTL`` unless DNS said less.
    func addresses(of kdc: KDCAddress, realm: String) async throws(KerberosError) -> DNSServiceRecords.Answer<SocketAddress> {
        if let address = try? SocketAddress(ipAddress: kdc.host, port: kdc.port) { return .init(values: [address], ttl: DNSServiceRecords.maximumTTL) }
        let fromFile = DNSServiceRecords.hostsFile(kdc.host, port: kdc.port)
        if !fromFile.isEmpty { return .init(values: Array(fromFile.prefix(DNSServiceRecords.maximumAddresses)), ttl: DNSServiceRecords.maximumTTL) }
        let settings = DNSServiceRecords.Settings.read()
        var ttl = DNSServiceRecords.maximumTTL
        for name in DNSServiceRecords.candidates(kdc.host, search: Array(settings.search.prefix(DNSServiceRecords.maximumSearchDomains))) {
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
        guard let query = DNSServiceRecords.query(id: question.id, name: name, type: type) else { return ([], question) }
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
