/// Reads a DNS message; every read is bounded by the message (or a record's end).
struct DNSMessageReader {
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
                guard wireLength <= DNSServiceRecords.maximumNameLength, position + 1 + length <= (jumped ? message.count : end) else { return nil }
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
