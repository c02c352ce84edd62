import COpenSSL
import Kerberos

/// The AES-SHA1 string-to-key of RFC 3962 in process, with OpenSSL's libcrypto doing the PBKDF2:
/// the same key `krb5_c_string_to_key` makes, several times faster than libk5crypto's built-in SHA-1.
///
/// Used only for password-only logins with learnt etype info; any other enctype, or parameters it does
/// not handle, returns nil and the login takes MIT's own path.
enum StringToKey {
    /// MIT's default iteration count for the AES-SHA1 types (RFC 3962 section 4).
    static let defaultIterations: UInt32 = 4096
    /// The iteration counts libk5crypto accepts (it refuses fewer than the default and 2^24 or more).
    static let acceptedIterations: Range<UInt32> = 4096..<16_777_216
    /// The 128-bit n-fold of "kerberos" (RFC 3961 section A.1): the constant of the final DK step.
    private static let kerberosConstant: [UInt8] = [0x6b, 0x65, 0x72, 0x62, 0x65, 0x72, 0x6f, 0x73,
                                                    0x7b, 0x9b, 0x5b, 0x2b, 0x93, 0x13, 0x2b, 0x93]

    /// The key for `password` as the KDC's etype info describes it, or nil when this enctype or these
    /// parameters are not handled here.
    static func key(password: Secret, info: EncryptionInfo) -> Secret? {
        let length: Int
        switch info.encryptionType {
        case .aes128CTSHMACSHA196: length = 16
        case .aes256CTSHMACSHA196: length = 32
        default: return nil
        }
        let iterations: UInt32
        switch info.parameters.count {
        case 0: iterations = defaultIterations
        case 4: iterations = info.parameters.reduce(0) { $0 << 8 | UInt32($1) }
        default: return nil
        }
        guard acceptedIterations.contains(iterations) else { return nil }
        return try? key(password: password, salt: info.salt, iterations: iterations, length: length)
    }

    /// tkey = PBKDF2-HMAC-SHA1(password, salt, iterations, length); key = DK(tkey, "kerberos"), where DK
    /// chains AES encryptions of the constant under tkey until `length` bytes are made (RFC 3961 5.1).
    static func key(password: Secret, salt: [UInt8], iterations: UInt32, length: Int) throws(StringToKeyError) -> Secret {
        precondition(length == 16 || length == 32)
        var tkey = [UInt8](repeating: 0, count: length)
        var block = kerberosConstant
        var output: [UInt8] = []
        output.reserveCapacity(32)
        defer {
            tkey.withUnsafeMutableBytes { Secret.wipe($0) }
            block.withUnsafeMutableBytes { Secret.wipe($0) }
            output.withUnsafeMutableBytes { Secret.wipe($0) }
        }
        let derived = password.withUnsafeBytes { bytes in
            copenssl_pbkdf2_sha1(bytes.baseAddress, bytes.count, salt, salt.count, iterations, &tkey, length)
        }
        guard derived == 1 else { throw StringToKeyError() }
        while output.count < length {
            guard copenssl_aes_encrypt_block(tkey, length, &block) == 1 else { throw StringToKeyError() }
            output += block
        }
        return Secret(copying: output.prefix(length))
    }
}

/// libcrypto refused the PBKDF2 or the AES block (out of memory, or a FIPS provider that forbids them).
struct StringToKeyError: Error {}
