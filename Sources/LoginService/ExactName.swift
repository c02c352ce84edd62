/// A principal or realm name as krb5 compares it: its UTF-8 bytes.
///
/// Swift's `String` compares and hashes by canonical equivalence: `jose\u{301}` (NFD) equals `josé` (NFC), and
/// the KELVIN SIGN (U+212A) equals `K`. To krb5 and to the KDC those are different principals and realms. Every
/// table keyed on a name (resolved names, throttles, the result cache, password verifiers, the realm allow-list)
/// keys on this instead, so one spelling never stands for another.
public struct ExactName: Hashable, Sendable, CustomStringConvertible {
    /// The name's bytes, as typed or as `krb5_unparse_name` wrote them.
    public let bytes: [UInt8]

    /// The bytes of `name`'s UTF-8 form, unchanged (no normalization).
    public init(_ name: String) { bytes = Array(name.utf8) }

    /// A name from its bytes as they are.
    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// The name with the ASCII letters A–Z folded to lower case and every other byte kept: Active Directory's
    /// `ALICE` and `alice` become one key, while no two distinct non-ASCII spellings ever do (Unicode's
    /// `lowercased()` folds the KELVIN SIGN to `k`).
    public var asciiCaseFolded: ExactName {
        ExactName(bytes: bytes.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 })
    }

    /// The bytes read as UTF-8 (invalid sequences replaced), for logs and messages.
    public var description: String { String(decoding: bytes, as: UTF8.self) }
}
