package import NIOCore

/// The DNS messages of the engine (RFC 1035): queries for SRV records (RFC 2782) and host addresses (A, AAAA), and
/// what is taken from a name server's response. The asking is ``DNSResolver``'s.
///
/// A response is taken only when it repeats the question (ID, name without case, type, class IN) and its RCODE is
/// NOERROR or NXDOMAIN; only records owned by the asked name or its CNAME aliases are read. Everything read is
/// bounded: names at 255 bytes and 16 compression pointers (``DNSMessageReader``), 256 records per message, 16 SRV
/// targets, 8 addresses per host; the TTLs say how long an answer is kept, within ``minimumTTL`` and ``maximumTTL``.
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
    static let typeCNAME: UInt16 = 5

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

    /// The most SRV records of one answer that become servers, and the most servers a realm's SRV answers give: each
    /// server costs A and AAAA questions and sockets.
    package static let maximumServiceRecords = 16
    /// The most addresses one host name gives.
    package static let maximumAddresses = 8
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
        var reader = DNSMessageReader(message: message, offset: 12)
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
    private static func answers<Value: Sendable>(_ message: [UInt8], question: Question, _ decode: (inout DNSMessageReader) -> Value?) -> Answer<Value> {
        var result = Answer<Value>(values: [], ttl: maximumTTL)
        guard isResponse(message, to: question), isAnswer(message) else { return result }
        var reader = DNSMessageReader(message: message, offset: 12)
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
            var record = DNSMessageReader(message: message, offset: reader.offset, end: end)
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
}
