import COpenSSL
package import Kerberos
import KerberosEngine

/// HMAC-SHA-256 of a principal name, a zero byte and a password, under a key drawn at start-up and held only
/// in memory (OpenSSL's `EVP_MAC`): what the result cache and the daemon's password verifiers keep instead of
/// passwords.
///
/// The keyed context is made once and copied (`EVP_MAC_CTX_dup`) for each message, so the key's inner and
/// outer blocks are absorbed once; name and password go into the MAC straight from their storage, so no
/// buffer holding the password is made, and OpenSSL cleanses each copy when it frees it.
package final class PasswordDigester: @unchecked Sendable {
    /// A digest as four words, compared without an early exit.
    package struct Digest: Sendable {
        var words: (UInt64, UInt64, UInt64, UInt64)

        package init(bytes: UnsafeRawBufferPointer) {
            precondition(bytes.count == 32)
            words = (bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                     bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self), bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }

        /// The digest's 32 bytes in a ``Secret``, wiped when it goes (the daemon's password verifiers keep these).
        package var secret: Secret { withUnsafeBytes(of: words) { Secret(copying: $0) } }

        package func matches(_ other: Digest) -> Bool {
            ((words.0 ^ other.words.0) | (words.1 ^ other.words.1) | (words.2 ^ other.words.2) | (words.3 ^ other.words.3)) == 0
        }
    }

    /// `EVP_MAC_CTX *`, keyed in init and only read afterwards (`EVP_MAC_CTX_dup` takes a const context),
    /// which is what makes the class `Sendable`.
    private let keyed: OpaquePointer

    /// A digester under a fresh random 256-bit key (`RAND_priv_bytes`).
    package convenience init() {
        var key = [UInt8](repeating: 0, count: 32)
        precondition(RAND_priv_bytes(&key, 32) == 1, "OpenSSL could not draw a random key")
        self.init(key: key)
        key.withUnsafeMutableBytes { Secret.wipe($0) }
    }

    /// A digester under `key` (the tests use RFC 4231's).
    package init(key: [UInt8]) {
        guard let context = copenssl_hmac_sha256(key, key.count) else { preconditionFailure("OpenSSL has no HMAC-SHA-256") }
        keyed = context
    }

    deinit { EVP_MAC_CTX_free(keyed) }

    /// HMAC(key, principal ‖ 0 ‖ password).
    package func digest(_ principal: String, _ password: Secret) -> Digest {
        guard let context = EVP_MAC_CTX_dup(keyed) else { preconditionFailure("OpenSSL could not copy an HMAC context") }
        defer { EVP_MAC_CTX_free(context) }
        var name = principal
        name.withUTF8 { _ = EVP_MAC_update(context, $0.baseAddress, $0.count) }
        var zero: UInt8 = 0
        _ = EVP_MAC_update(context, &zero, 1)
        password.withUnsafeBytes { _ = EVP_MAC_update(context, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count) }
        var output = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &output) { buffer in
            var length = 0
            precondition(EVP_MAC_final(context, buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), &length, 32) == 1 && length == 32)
            return Digest(bytes: UnsafeRawBufferPointer(buffer))
        }
    }
}
