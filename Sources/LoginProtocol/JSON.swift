public import KerberosSecrets

/// A parsed JSON value (RFC 8259). Strings keep their decoded bytes in wiped memory, so a secret can
/// become a ``Secret`` without ever being a Swift `String`.
public indirect enum JSONValue: Sendable {
    /// An object's members in the order they appeared; duplicate names are rejected by the parser.
    case object([(key: String, value: JSONValue)])
    /// An array.
    case array([JSONValue])
    /// A string, its decoded bytes in wiped memory.
    case string(JSONString)
    /// A number, as a `Double`.
    case number(Double)
    /// `true` or `false`.
    case bool(Bool)
    /// `null`.
    case null

    /// The member named `key` of an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    var typeName: String {
        switch self {
        case .object: "an object"
        case .array: "an array"
        case .string: "a string"
        case .number: "a number"
        case .bool: "a boolean"
        case .null: "null"
        }
    }
}

/// The decoded bytes of a JSON string, wiped when released.
public final class JSONString: Sendable {
    private let secret: Secret
    init(_ secret: Secret) { self.secret = secret }
    /// The string as text (for fields that are not secret).
    public var text: String { secret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
    /// The string as a ``Secret``.
    public var asSecret: Secret { secret }
}

/// A strict JSON parser over bytes: RFC 8259 with UTF-8 validation, no trailing garbage, a depth limit.
public struct JSONParser {
    /// The deepest nesting of objects and arrays accepted; deeper input is an error.
    public static let maximumDepth = 32

    /// Objects with up to this many members check for duplicate names by scanning (no allocation); larger
    /// ones switch to a set of the names seen, so the check stays linear in the line's length.
    static let linearScanMembers = 16

    /// Parses one complete JSON text.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> JSONValue {
        try parseCounting(bytes).value
    }

    /// Parses, and tells how many member names the duplicate check compared or looked up (for the tests:
    /// a count of work, where a timing would be flaky).
    static func parseCounting(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> (value: JSONValue, nameChecks: Int) {
        var parser = JSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("unexpected bytes after the JSON value") }
        return (value, parser.nameChecks)
    }

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private var nameChecks = 0

    private init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private func error(_ what: String) -> ProtocolError { ProtocolError("invalid JSON at byte \(position): \(what)") }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0a || byte == 0x0d { position += 1 }
    }

    private mutating func expect(_ literal: String) throws(ProtocolError) {
        for byte in literal.utf8 {
            guard current == byte else { throw error("expected \(literal)") }
            position += 1
        }
    }

    private mutating func value(depth: Int) throws(ProtocolError) -> JSONValue {
        guard depth < Self.maximumDepth else { throw error("nested deeper than \(Self.maximumDepth)") }
        guard let byte = current else { throw error("unexpected end of input") }
        switch byte {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(JSONString(try string()))
        case UInt8(ascii: "t"): try expect("true"); return .bool(true)
        case UInt8(ascii: "f"): try expect("false"); return .bool(false)
        case UInt8(ascii: "n"): try expect("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw error("unexpected character")
        }
    }

    private mutating func object(depth: Int) throws(ProtocolError) -> JSONValue {
        position += 1
        var members: [(key: String, value: JSONValue)] = []
        // The names seen so far, once the object has more than a few: a linear scan of every earlier
        // name would make a line of n members cost n²/2 comparisons on the event loop (n ≈ 9,000 in a
        // 64 KiB line). `Set<String>` compares as `==` does (canonical equivalence), so the names
        // rejected are the same either way; its hashing is seeded per process, so crafted names cannot
        // collide on purpose.
        var seen: Set<String>? = nil
        skipWhitespace()
        if current == UInt8(ascii: "}") { position += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw error("expected a member name") }
            let key = try string().withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            let duplicate: Bool
            if seen == nil, members.count < Self.linearScanMembers {
                nameChecks += members.count
                duplicate = members.contains { $0.key == key }
            } else {
                if seen == nil {
                    nameChecks += members.count
                    seen = Set(members.lazy.map(\.key))
                }
                nameChecks += 1
                duplicate = !seen!.insert(key).inserted
            }
            guard !duplicate else { throw error("duplicate member \"\(key.prefix(40))\"") }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw error("expected ':'") }
            position += 1
            skipWhitespace()
            members.append((key, try value(depth: depth + 1)))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ",")?: position += 1
            case UInt8(ascii: "}")?: position += 1; return .object(members)
            default: throw error("expected ',' or '}'")
            }
        }
    }

    private mutating func array(depth: Int) throws(ProtocolError) -> JSONValue {
        position += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") { position += 1; return .array(elements) }
        while true {
            skipWhitespace()
            elements.append(try value(depth: depth + 1))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ",")?: position += 1
            case UInt8(ascii: "]")?: position += 1; return .array(elements)
            default: throw error("expected ',' or ']'")
            }
        }
    }

    private mutating func number() throws(ProtocolError) -> Double {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else { throw error("expected a digit") }
        if first == UInt8(ascii: "0") { position += 1 } else { digits() }
        if current == UInt8(ascii: ".") {
            position += 1
            guard let next = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(next) else { throw error("expected a digit after '.'") }
            digits()
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard let next = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(next) else { throw error("expected an exponent") }
            digits()
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { throw error("number out of range") }
        return value
    }

    private mutating func digits() {
        while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { position += 1 }
    }

    /// Decodes a string literal into wiped storage, validating UTF-8 and escapes.
    private mutating func string() throws(ProtocolError) -> Secret {
        position += 1
        var output = [UInt8]()
        output.reserveCapacity(32)
        defer { output.withUnsafeMutableBytes { Secret.wipe($0) } }
        while true {
            guard let byte = current else { throw error("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                return Secret(copying: output)
            case UInt8(ascii: "\\"):
                position += 1
                guard let escape = current else { throw error("unterminated escape") }
                position += 1
                switch escape {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(escape)
                case UInt8(ascii: "b"): output.append(0x08)
                case UInt8(ascii: "f"): output.append(0x0c)
                case UInt8(ascii: "n"): output.append(0x0a)
                case UInt8(ascii: "r"): output.append(0x0d)
                case UInt8(ascii: "t"): output.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard current == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") else {
                            throw error("lone high surrogate")
                        }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid low surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw error("lone low surrogate")
                    }
                    output.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
                default:
                    throw error("invalid escape")
                }
            case 0x00...0x1f:
                throw error("control character in string")
            case 0x80...0xff:
                let length = try utf8SequenceLength()
                output.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[position..<position + length]))
                position += length
            default:
                output.append(byte)
                position += 1
            }
        }
    }

    private mutating func hex4() throws(ProtocolError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    /// The length of the valid UTF-8 sequence starting at `position` (RFC 3629: no overlongs, no surrogates).
    private func utf8SequenceLength() throws(ProtocolError) -> Int {
        let lead = bytes[position]
        let length: Int
        let minimum: UInt32
        switch lead {
        case 0xC2...0xDF: (length, minimum) = (2, 0x80)
        case 0xE0...0xEF: (length, minimum) = (3, 0x800)
        case 0xF0...0xF4: (length, minimum) = (4, 0x10000)
        default: throw error("invalid UTF-8")
        }
        guard position + length <= bytes.count else { throw error("truncated UTF-8") }
        var scalar = UInt32(lead) & (0xFF >> (length + 1))
        for index in 1..<length {
            let next = bytes[position + index]
            guard next & 0xC0 == 0x80 else { throw error("invalid UTF-8") }
            scalar = scalar << 6 | UInt32(next & 0x3F)
        }
        guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else { throw error("invalid UTF-8") }
        return length
    }
}

/// Builds one JSON object as bytes; secrets are escaped straight from their storage. Callers wipe
/// lines that carry secrets once they are sent.
public struct JSONWriter {
    private(set) var bytes: [UInt8] = [UInt8(ascii: "{")]
    private var first = true

    /// An empty object.
    public init() {}

    private mutating func key(_ name: String) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        first = false
        Self.appendString(Array(name.utf8), to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    /// Adds a member with a string value.
    public mutating func string(_ name: String, _ value: String) {
        key(name)
        Self.appendString(Array(value.utf8), to: &bytes)
    }

    /// Adds a member whose string value is escaped straight from the secret's storage.
    public mutating func secret(_ name: String, _ value: Secret) {
        key(name)
        value.withUnsafeBytes { Self.appendString($0, to: &bytes) }
    }

    /// Adds a member with an integer value.
    public mutating func int(_ name: String, _ value: Int) {
        key(name)
        bytes.append(contentsOf: Array(String(value).utf8))
    }

    /// Adds a member with a boolean value.
    public mutating func bool(_ name: String, _ value: Bool) {
        key(name)
        bytes.append(contentsOf: Array((value ? "true" : "false").utf8))
    }

    /// A member whose value is already-encoded JSON.
    public mutating func raw(_ name: String, _ json: [UInt8]) {
        key(name)
        bytes.append(contentsOf: json)
    }

    /// The finished object followed by a newline.
    public func line() -> [UInt8] {
        bytes + [UInt8(ascii: "}"), UInt8(ascii: "\n")]
    }

    /// The finished object without a newline.
    public func object() -> [UInt8] {
        bytes + [UInt8(ascii: "}")]
    }

    static func appendString(_ value: some Collection<UInt8>, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5c, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5c, 0x5c])
            case 0x0a: bytes.append(contentsOf: [0x5c, UInt8(ascii: "n")])
            case 0x0d: bytes.append(contentsOf: [0x5c, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5c, UInt8(ascii: "t")])
            case 0x00...0x1f:
                let hex = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [0x5c, UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xf)]])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// An encoded JSON array of already-encoded elements.
    public static func array(_ elements: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(ascii: "[")]
        for (index, element) in elements.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: element)
        }
        bytes.append(UInt8(ascii: "]"))
        return bytes
    }

    /// An encoded JSON string.
    public static func string(_ value: String) -> [UInt8] {
        var bytes: [UInt8] = []
        appendString(Array(value.utf8), to: &bytes)
        return bytes
    }
}
