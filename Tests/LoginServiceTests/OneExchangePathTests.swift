import Kerberos
import KerberosEngine
@testable import LoginService
import Testing

/// Which learnt etype info may take the one-exchange path (no KDC needed).
@Suite("LoginService: learnt etype info and the one-exchange path")
struct OneExchangePathTests {
    static let salt = Array("AD.EXAMPLEalice".utf8)

    @Test("AES with no parameters, or with the default 4096 spelt out as Active Directory sends it, takes the one-exchange path")
    func defaultParameters() {
        for type in [EncryptionType.aes256CTSHMACSHA196, .aes128CTSHMACSHA196] {
            #expect(EncryptionInfo(encryptionType: type, salt: Self.salt, parameters: []).allowsOptimisticPreauth)
            #expect(EncryptionInfo(encryptionType: type, salt: Self.salt, parameters: [0, 0, 0x10, 0]).allowsOptimisticPreauth)
        }
        #expect(EncryptionInfo(encryptionType: .aes256CTSHMACSHA384192, salt: Self.salt, parameters: [0, 0, 0x80, 0]).allowsOptimisticPreauth)
    }

    @Test("other iteration counts, unknown parameters and the null enctype take MIT's normal exchange")
    func otherParameters() {
        #expect(!EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: Self.salt, parameters: [0, 0, 0x20, 0]).allowsOptimisticPreauth)
        #expect(!EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: Self.salt, parameters: [0, 0, 0x10, 0, 1]).allowsOptimisticPreauth)
        #expect(!EncryptionInfo(encryptionType: .aes256CTSHMACSHA384192, salt: Self.salt, parameters: [0, 0, 0x10, 0]).allowsOptimisticPreauth)
        #expect(!EncryptionInfo(encryptionType: .null, salt: Self.salt, parameters: []).allowsOptimisticPreauth)
    }

    @Test("RC4 (no salt, no parameters) takes the optimistic path with MIT's own key, which StringToKey does not make")
    func rc4() {
        let info = EncryptionInfo(encryptionType: .rc4HMAC, salt: Self.salt, parameters: [])
        #expect(info.allowsOptimisticPreauth)
        #expect(StringToKey.key(password: Secret("Passw0rd"), info: info) == nil)
    }
}
