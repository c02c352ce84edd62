import Hummingbird
import KerberosEngine
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The fields of an `application/x-www-form-urlencoded` body, each kept as a ``Secret`` (the password and the
/// one-time password never become a `String`); the body's bytes are wiped once parsed.
struct FormFields {
    /// The largest body read: a login form is a few hundred bytes.
    static let maxBody = 16 * 1024
    private var fields: [String: Secret] = [:]

    init(_ request: Request, context: some RequestContext) async throws {
        var body = try await request.body.collect(upTo: Self.maxBody)
        defer { body.withUnsafeMutableReadableBytes { Self.wipe($0) } }
        body.withUnsafeReadableBytes { bytes in
            for pair in bytes.split(separator: UInt8(ascii: "&")) {
                let parts = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = String(validating: Self.decoded(parts[0]), as: UTF8.self) else { continue }
                var value = parts.count > 1 ? Self.decoded(parts[1]) : []
                fields[name] = Secret(copying: value)
                value.withUnsafeMutableBytes { Self.wipe($0) }
            }
        }
    }

    /// A field as text (a user name); nil when absent or not UTF-8.
    func text(_ name: String) -> String? {
        fields[name].flatMap { secret in secret.withUnsafeBytes { String(validating: $0, as: UTF8.self) } }
    }

    /// A field as a secret; nil when absent.
    func secret(_ name: String) -> Secret? { fields[name] }

    /// Zeroes memory that held form fields (`explicit_bzero`: not optimised away).
    private static func wipe(_ bytes: UnsafeMutableRawBufferPointer) {
        if let base = bytes.baseAddress { explicit_bzero(base, bytes.count) }
    }

    /// Percent-decoding, with `+` for a space.
    private static func decoded(_ bytes: Slice<UnsafeRawBufferPointer>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "+") {
                output.append(UInt8(ascii: " "))
            } else if byte == UInt8(ascii: "%"), index + 2 < bytes.endIndex, let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2]) {
                output.append(high << 4 | low)
                index += 2
            } else {
                output.append(byte)
            }
            index += 1
        }
        return output
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
