import Kerberos
import CKrb5
import Testing
@testable import LoginService

/// What logins learn of principals' keys, without a KDC.
@Suite("Learnt etype info (unit)")
struct LearntPreauthTests {
    private static let aes256 = EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: Array("REALMalice".utf8), parameters: [])

    private static func changed(_ index: Int) -> EncryptionInfo {
        EncryptionInfo(encryptionType: .aes256CTSHMACSHA196, salt: Array("REALMsalt\(index)".utf8), parameters: [])
    }

    @Test("a KDC whose etype info keeps changing gets one re-learn per login, not a loop")
    func oneRelearnPerLogin() throws {
        var learns = 0, attempts = 0
        #expect(throws: KerberosError.self) {
            try LearntPreauth.withOneRelearn(
                known: Self.aes256,
                learn: { learns += 1; return Self.changed(learns) },
                attempt: { _ -> Int in attempts += 1; throw KerberosError(code: Int32(KRB5KDC_ERR_PREAUTH_FAILED), message: "wrong", reason: .badPassword) })
        }
        #expect(learns == 1 && attempts == 2)
    }

    @Test("unchanged etype info after a refusal means a wrong password: no second attempt")
    func unchangedMeansWrongPassword() throws {
        var attempts = 0
        #expect(throws: KerberosError.self) {
            try LearntPreauth.withOneRelearn(known: Self.aes256, learn: { Self.aes256 }, attempt: { _ -> Int in
                attempts += 1
                throw KerberosError(code: Int32(KRB5KDC_ERR_PREAUTH_FAILED), message: "wrong", reason: .badPassword)
            })
        }
        #expect(attempts == 1)
    }

    @Test("a changed salt is learnt again and the login succeeds with it")
    func changedSaltSucceeds() throws {
        let result = try LearntPreauth.withOneRelearn(known: Self.aes256, learn: { Self.changed(1) }, attempt: { info -> String in
            guard info == Self.changed(1) else { throw KerberosError(code: Int32(KRB5KDC_ERR_PREAUTH_FAILED), message: "wrong", reason: .badPassword) }
            return "ok"
        })
        #expect(result == "ok")
    }

    @Test("etype info learnt without FAST expires; armored info stays")
    func unarmoredExpires() {
        let learnt = LearntPreauth(unarmoredLifetime: .seconds(300))
        let now = ContinuousClock.now
        learnt.remember(Self.aes256, for: "plain@R", armored: false, now: now)
        learnt.remember(Self.aes256, for: "armored@R", armored: true, now: now)
        #expect(learnt.encryptionInfo(for: "plain@R", now: now + .seconds(299)) == Self.aes256)
        #expect(learnt.encryptionInfo(for: "plain@R", now: now + .seconds(301)) == nil)
        #expect(learnt.encryptionInfo(for: "armored@R", now: now + .seconds(86_400)) == Self.aes256)
    }
}
