internal import CKrb5

/// KDCs from DNS SRV records (RFC 4120 section 7.2.3.2): `_kerberos._udp.REALM` and `_kerberos._tcp.REALM`,
/// what MIT's `locate_kdc.c` asks when `dns_lookup_kdc` is on and krb5.conf lists no KDC; and kpasswd servers
/// from `_kpasswd._udp.REALM` and `_kpasswd._tcp.REALM`.
enum DNSServiceRecords {
    /// One SRV record.
    struct Record: Hashable, Sendable {
        var priority: UInt16
        var weight: UInt16
        var port: UInt16
        var target: String
    }

    /// The realm's KDCs, UDP records first, each list in priority order (higher weight first within a priority).
    ///
    /// The corresponding C function is `res_query`.
    /// > Warning: Blocks on DNS; runs on a worker thread, and the result is cached per realm.
    static func kdcs(realm: String) -> [KDCAddress] { servers("_kerberos", realm: realm) }

    /// The realm's kpasswd servers (`_kpasswd._udp.REALM`, `_kpasswd._tcp.REALM`), in the same order.
    ///
    /// > Warning: Blocks on DNS, as ``kdcs(realm:)`` does.
    static func passwordServers(realm: String) -> [KDCAddress] { servers("_kpasswd", realm: realm) }

    private static func servers(_ service: String, realm: String) -> [KDCAddress] {
        var result: [KDCAddress] = []
        for (label, transport) in [("\(service)._udp.", KDCAddress.Transport.any), ("\(service)._tcp.", .tcp)] {
            for record in query(label + realm, realm: realm) where record.target != "." && !record.target.isEmpty {
                let kdc = KDCAddress(host: record.target, port: Int(record.port), transport: transport, isPrimary: false)
                if transport == .tcp, let index = result.firstIndex(where: { $0.host == kdc.host && $0.port == kdc.port }) {
                    // Served on both: keep one entry that may use either.
                    result[index].transport = .any
                } else {
                    result.append(kdc)
                }
            }
        }
        return result
    }

    /// Nameservers that answer the SRV queries of one realm instead of resolv.conf's (`host`, `port`), by realm.
    private static let nameservers = Locked<[String: (host: String, port: Int)]>([:])

    /// Sends the SRV queries for `realm`'s KDCs to the IPv4 nameserver `host`:`port` instead of resolv.conf's; nil
    /// puts resolv.conf back. A test hook: the tests serve SRV records on loopback, where resolv.conf cannot point
    /// (it names no port). Other realms are not affected.
    package static func setNameserver(_ nameserver: (host: String, port: Int)?, forRealm realm: String) {
        nameservers.withLock { $0[realm] = nameserver }
    }

    /// The SRV records of `name`, sorted by priority then descending weight; empty on any failure.
    static func query(_ name: String, realm: String? = nil) -> [Record] {
        var answer = [UInt8](repeating: 0, count: 4096)
        let nameserver = realm.flatMap { realm in nameservers.withLock { $0[realm] } }
        let length = answer.withUnsafeMutableBufferPointer { buffer in
            if let nameserver {
                return ckrb5_res_query_at(name, 1 /* C_IN */, 33 /* T_SRV */, buffer.baseAddress, Int32(buffer.count), nameserver.host, Int32(nameserver.port))
            }
            return ckrb5_res_query(name, 1 /* C_IN */, 33 /* T_SRV */, buffer.baseAddress, Int32(buffer.count))
        }
        guard length > 0 else { return [] }
        return parse(Array(answer.prefix(Int(min(length, 4096)))))
    }

    /// Parses the SRV answers of a DNS response (RFC 1035 section 4.1, RFC 2782); nil-safe on malformed input.
    static func parse(_ message: [UInt8]) -> [Record] {
        var reader = Reader(message: message, offset: 12)
        guard message.count >= 12 else { return [] }
        let questions = Int(message[4]) << 8 | Int(message[5])
        let answers = Int(message[6]) << 8 | Int(message[7])
        var records: [Record] = []
        for _ in 0..<questions {
            guard reader.name() != nil, reader.skip(4) else { return [] }
        }
        for _ in 0..<answers {
            guard reader.name() != nil, let type = reader.uint16(), reader.skip(6), let rdLength = reader.uint16() else { break }
            let end = reader.offset + Int(rdLength)
            guard end <= message.count else { break }
            if type == 33, let priority = reader.uint16(), let weight = reader.uint16(), let port = reader.uint16(), let target = reader.name() {
                records.append(Record(priority: priority, weight: weight, port: port, target: target))
            }
            reader.offset = end
        }
        return records.sorted { ($0.priority, UInt16.max - $0.weight) < ($1.priority, UInt16.max - $1.weight) }
    }

    private struct Reader {
        let message: [UInt8]
        var offset: Int

        mutating func uint16() -> UInt16? {
            guard offset + 2 <= message.count else { return nil }
            defer { offset += 2 }
            return UInt16(message[offset]) << 8 | UInt16(message[offset + 1])
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
