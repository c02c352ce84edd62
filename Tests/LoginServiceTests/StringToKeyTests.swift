import Foundation
import CKrb5
import COpenSSL
import CStringToKey
import Glibc
import Kerberos
import KerberosEngine
@testable import LoginService
import Testing

/// ``StringToKey`` against RFC 3962's vectors and against libk5crypto itself.
@Suite("LoginService: the AES-SHA1 string-to-key in process")
struct StringToKeyTests {
    static func hex(_ secret: Secret) -> String { secret.withUnsafeBytes { $0.map { String(format: "%02x", $0) }.joined() } }

    typealias StringToKeyFunction = @convention(c) (krb5_context?, krb5_enctype, UnsafePointer<krb5_data>?, UnsafePointer<krb5_data>?,
                                                   UnsafePointer<krb5_data>?, UnsafeMutablePointer<krb5_keyblock>?) -> krb5_error_code

    /// libk5crypto's own `krb5_c_string_to_key_with_params` (the process's is CStringToKey's stand-in).
    static let libk5crypto: StringToKeyFunction = {
        let library = dlopen("libk5crypto.so.3", RTLD_NOW)
        return unsafeBitCast(dlsym(library, "krb5_c_string_to_key_with_params")!, to: StringToKeyFunction.self)
    }()

    /// `krb5_c_string_to_key_with_params`, libk5crypto's own derivation.
    static func mit(_ password: String, salt: String, enctype: EncryptionType, iterations: UInt32?) throws -> String {
        try derive(password, salt: salt, enctype: enctype, iterations: iterations, with: libk5crypto)
    }

    static func derive(_ password: String, salt: String, enctype: EncryptionType, iterations: UInt32?, with function: StringToKeyFunction) throws -> String {
        var context: krb5_context?
        #expect(krb5_init_context(&context) == 0)
        defer { krb5_free_context(context) }
        var password = Array(password.utf8), salt = Array(salt.utf8)
        var params: [UInt8] = iterations.map { count in (0..<4).map { UInt8(truncatingIfNeeded: count >> (24 - 8 * UInt32($0))) } } ?? []
        var key = krb5_keyblock()
        let code = password.withUnsafeMutableBytes { p in salt.withUnsafeMutableBytes { s in params.withUnsafeMutableBytes { r in
            var pw = krb5_data(magic: 0, length: UInt32(p.count), data: p.baseAddress!.assumingMemoryBound(to: CChar.self))
            var sa = krb5_data(magic: 0, length: UInt32(s.count), data: s.baseAddress?.assumingMemoryBound(to: CChar.self))
            var pr = krb5_data(magic: 0, length: UInt32(r.count), data: r.baseAddress?.assumingMemoryBound(to: CChar.self))
            if r.isEmpty { return function(context, enctype.rawValue, &pw, &sa, nil, &key) }
            return function(context, enctype.rawValue, &pw, &sa, &pr, &key)
        } } }
        #expect(code == 0)
        defer { krb5_free_keyblock_contents(context, &key) }
        return UnsafeBufferPointer(start: key.contents, count: Int(key.length)).map { String(format: "%02x", $0) }.joined()
    }

    @Test("RFC 3962 appendix B: 1 and 1200 iterations, both key sizes")
    func rfcVectors() throws {
        let salt = Array("ATHENA.MIT.EDUraeburn".utf8)
        #expect(Self.hex(try StringToKey.key(password: Secret("password"), salt: salt, iterations: 1, length: 16)) == "42263c6e89f4fc28b8df68ee09799f15")
        #expect(Self.hex(try StringToKey.key(password: Secret("password"), salt: salt, iterations: 1, length: 32))
                == "fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161")
        #expect(Self.hex(try StringToKey.key(password: Secret("password"), salt: salt, iterations: 1200, length: 32))
                == "55a6ac740ad17b4846941051e1e8b0a7548d93b0ab30a8bc3ff16280382b8c2a")
    }

    @Test("zero iterations are refused, for a short password and for one longer than SHA-1's block")
    func zeroIterations() {
        for length in [8, 100] {
            #expect(throws: StringToKeyError.self) {
                try StringToKey.key(password: Secret(String(repeating: "x", count: length)), salt: [], iterations: 0, length: 16)
            }
        }
    }

    @Test("the same keys as libk5crypto for default and explicit iteration counts, odd passwords and salts")
    func matchesMIT() throws {
        let cases: [(String, String)] = [("alice-Passw0rd", "KRB5.TESTalice"), ("", "KRB5.TESTempty"), ("pässwörd ✓", "EXAMPLE.COMuser"),
                                         (String(repeating: "x", count: 200), "R"), ("p", ""),
                                         (String(repeating: "y", count: 64), "EXAMPLE.COMy"), (String(repeating: "z", count: 65), "EXAMPLE.COMz")]
        for (password, salt) in cases {
            for enctype in [EncryptionType.aes128CTSHMACSHA196, .aes256CTSHMACSHA196] {
                for iterations in [nil, 4096, 5000] as [UInt32?] {
                    let info = EncryptionInfo(encryptionType: enctype, salt: Array(salt.utf8),
                                              parameters: iterations.map { count in (0..<4).map { UInt8(truncatingIfNeeded: count >> (24 - 8 * UInt32($0))) } } ?? [])
                    let ours = try #require(StringToKey.key(password: Secret(password), info: info))
                    #expect(Self.hex(ours) == (try Self.mit(password, salt: salt, enctype: enctype, iterations: iterations)), "\(enctype) \(salt) \(iterations ?? 4096)")
                }
            }
        }
    }

    /// Both PBKDF2s of `CStringToKey` (the SHA-extensions one where the CPU has them, as release builds use it; the
    /// portable one) against libcrypto's `PKCS5_PBKDF2_HMAC_SHA1`, on random passwords (empty, up to and over
    /// SHA-1's 64-byte block), salts, iteration counts and output lengths (one and several blocks, odd lengths).
    @Test("the PBKDF2s give libcrypto's bytes for random passwords, salts, counts and lengths")
    func pbkdf2MatchesLibcrypto() {
        var random = SystemRandomNumberGenerator()
        for trial in 0..<400 {
            let password = (0..<Int.random(in: 0...150, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            let salt = (0..<Int.random(in: 0...80, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            let iterations = trial % 50 == 0 ? 4096 : UInt32.random(in: 1...24, using: &random)
            let length = [16, 32, 20, 40, 41, 1, 64][trial % 7]
            var expected = [UInt8](repeating: 0, count: length), portable = expected
            let made = password.withUnsafeBufferPointer { bytes in
                bytes.withMemoryRebound(to: CChar.self) {
                    PKCS5_PBKDF2_HMAC_SHA1($0.baseAddress, Int32(password.count), salt, Int32(salt.count), Int32(iterations), Int32(length), &expected)
                }
            }
            #expect(made == 1)
            #expect(s2k_pbkdf2_sha1_portable(password, password.count, salt, salt.count, iterations, &portable, length) == 1)
            #expect(portable == expected, "portable: \(password.count)-byte password, \(salt.count)-byte salt, \(iterations), \(length)")
            #if arch(x86_64)
            if s2k_cpu_has_sha_ni() != 0 {
                var extensions = [UInt8](repeating: 0, count: length)
                #expect(s2k_pbkdf2_sha1_ni(password, password.count, salt, salt.count, iterations, &extensions, length) == 1)
                #expect(extensions == expected, "SHA-NI: \(password.count)-byte password, \(salt.count)-byte salt, \(iterations), \(length)")
            }
            #endif
        }
    }

    @Test("other enctypes and unusable parameters are left to MIT")
    func declines() {
        let salt = Array("KRB5.TESTalice".utf8)
        #expect(StringToKey.key(password: Secret("x"), info: EncryptionInfo(encryptionType: .aes256CTSHMACSHA384192, salt: salt, parameters: [])) == nil)
        #expect(StringToKey.key(password: Secret("x"), info: EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: salt, parameters: [1, 2])) == nil)
        #expect(StringToKey.key(password: Secret("x"), info: EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: salt, parameters: [0, 0, 0x0f, 0xff])) == nil,
                "4095 iterations: libk5crypto refuses fewer than 4096, and so does this")
        #expect(StringToKey.key(password: Secret("x"), info: EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: salt, parameters: [1, 0, 0, 0])) == nil)
    }

    /// The process's `krb5_c_string_to_key_with_params` is CStringToKey's: it gives libk5crypto's keys for AES-SHA1,
    /// made by `s2k_aes_sha1_key` (counted on this thread), and passes other enctypes to libk5crypto.
    @Test("the process's krb5_c_string_to_key_with_params makes AES-SHA1 keys here and passes others to libk5crypto")
    func standIn() throws {
        typealias Global = StringToKeyFunction
        let global: Global = { context, enctype, string, salt, params, key in krb5_c_string_to_key_with_params(context, enctype, string, salt, params, key) }
        let before = s2k_counts_on_this_thread()
        for enctype in [EncryptionType.aes128CTSHMACSHA196, .aes256CTSHMACSHA196] {
            for iterations in [nil, 4096, 5000] as [UInt32?] {
                #expect(try Self.derive("pässwörd", salt: "AD.EXAMPLEbob", enctype: enctype, iterations: iterations, with: global)
                        == (try Self.mit("pässwörd", salt: "AD.EXAMPLEbob", enctype: enctype, iterations: iterations)))
            }
        }
        let afterAES = s2k_counts_on_this_thread()
        #expect(afterAES.fast - before.fast == 6)
        #expect(afterAES.libk5crypto == before.libk5crypto)
        #expect(try Self.derive("pässwörd", salt: "R", enctype: .aes256CTSHMACSHA384192, iterations: nil, with: global)
                == (try Self.mit("pässwörd", salt: "R", enctype: .aes256CTSHMACSHA384192, iterations: nil)))
        #expect(s2k_counts_on_this_thread().libk5crypto == afterAES.libk5crypto + 1)
    }
}
