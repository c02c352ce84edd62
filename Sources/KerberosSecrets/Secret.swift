#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A password, one-time code or PIN held in memory that is wiped when the last reference goes away.
///
/// Secrets never become long-lived `String`s inside this package. The bytes live in one heap
/// allocation, are overwritten with `explicit_bzero` on `deinit`, and are handed to krb5 as a
/// NUL-terminated C string that is valid only for the duration of a call.
///
/// `description` never reveals the contents.
public final class Secret: @unchecked Sendable, CustomStringConvertible {
    // Invariant: `storage` is written only in the initialisers and `deinit`; shared reads are safe.
    private let storage: UnsafeMutableRawBufferPointer

    /// The number of bytes in the secret (without the trailing NUL).
    public let count: Int

    /// Copies `bytes` into wiped-on-release storage.
    public init(copying bytes: some Sequence<UInt8>) {
        var buffer = Array(bytes)
        self.count = buffer.count
        self.storage = .allocate(byteCount: buffer.count + 1, alignment: 1)
        buffer.withUnsafeBytes { source in
            if let base = source.baseAddress { self.storage.baseAddress!.copyMemory(from: base, byteCount: source.count) }
        }
        self.storage[buffer.count] = 0
        buffer.withUnsafeMutableBytes { Secret.wipe($0) }
    }

    /// Copies the UTF-8 of `string`. The caller's `String` itself cannot be wiped; prefer the byte initialisers
    /// when the secret arrives as bytes.
    public convenience init(_ string: String) {
        self.init(copying: string.utf8)
    }

    /// Copies `bytes` from raw memory.
    public init(copying bytes: UnsafeRawBufferPointer) {
        self.count = bytes.count
        self.storage = .allocate(byteCount: bytes.count + 1, alignment: 1)
        if let base = bytes.baseAddress { self.storage.baseAddress!.copyMemory(from: base, byteCount: bytes.count) }
        self.storage[bytes.count] = 0
    }

    deinit {
        Secret.wipe(storage)
        storage.deallocate()
    }

    /// Whether the secret has no bytes.
    public var isEmpty: Bool { count == 0 }

    /// Calls `body` with the secret's bytes (without the trailing NUL).
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    /// Calls `body` with a NUL-terminated pointer to the secret, valid only during the call.
    public func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try body(storage.baseAddress!.assumingMemoryBound(to: CChar.self))
    }

    /// Whether the secret contains a NUL byte (krb5 would silently truncate such a secret).
    public var containsNUL: Bool {
        withUnsafeBytes { $0.contains(0) }
    }

    /// Compares in time that depends only on the lengths.
    public func constantTimeEquals(_ other: Secret) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { a in
            other.withUnsafeBytes { b in
                var difference: UInt8 = 0
                for index in 0..<a.count { difference |= a[index] ^ b[index] }
                return difference == 0
            }
        }
    }

    /// `Secret(N bytes, redacted)`; never the contents.
    public var description: String { "Secret(\(count) bytes, redacted)" }

    /// Overwrites `buffer` with zeros in a way the optimiser may not remove (for this package's own buffers
    /// of secret bytes).
    package static func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        explicit_bzero(base, buffer.count)
    }
}
