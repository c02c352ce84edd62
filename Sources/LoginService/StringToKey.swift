import CStringToKey
import Kerberos
import KerberosEngine

/// The AES-SHA1 string-to-key of RFC 3962 in process (`CStringToKey`): the same key `krb5_c_string_to_key` makes,
/// 10–15 times faster than libk5crypto.
///
/// Used for logins with learnt etype info, whose key goes to krb5 in a MEMORY keytab; any other enctype, or
/// parameters it does not handle, returns nil and the login takes MIT's own path (whose key is made by the same C
/// function, through the stand-in for libk5crypto's).
enum StringToKey {
    /// MIT's default iteration count for the AES-SHA1 types (RFC 3962 section 4).
    static let defaultIterations: UInt32 = 4096
    /// The iteration counts libk5crypto accepts (it refuses fewer than the default and 2^24 or more).
    static let acceptedIterations: Range<UInt32> = 4096..<16_777_216

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

    /// The RFC 3962 key: DK(PBKDF2-HMAC-SHA1(password, salt, iterations), "kerberos") (`s2k_aes_sha1_key`, the one
    /// place password keys are made: MIT's own exchanges get theirs there too).
    static func key(password: Secret, salt: [UInt8], iterations: UInt32, length: Int) throws(StringToKeyError) -> Secret {
        precondition(length == 16 || length == 32)
        var key = [UInt8](repeating: 0, count: length)
        defer { key.withUnsafeMutableBytes { Secret.wipe($0) } }
        let made = password.withUnsafeBytes { bytes in
            s2k_aes_sha1_key(bytes.baseAddress, bytes.count, salt, salt.count, iterations, &key, length)
        }
        guard made == 1 else { throw StringToKeyError() }
        return Secret(copying: key)
    }
}

/// libcrypto refused the PBKDF2 or the AES block (zero iterations, out of memory, or a FIPS provider that forbids them).
struct StringToKeyError: Error {}
