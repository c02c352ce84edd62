import Kerberos
import KerberosEngine
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
    func oneRelearnPerLogin() async throws {
        var learns = 0, attempts = 0
        await #expect(throws: KerberosError.self) {
            try await LearntPreauth.withOneRelearn(
                known: Self.aes256,
                learn: { () throws(KerberosError) in learns += 1; return Self.changed(learns) },
                attempt: { _ throws(KerberosError) -> Int in attempts += 1; throw KerberosError(code: -1, message: "wrong", reason: .badPassword) })
        }
        #expect(learns == 1 && attempts == 2)
    }

    @Test("unchanged etype info after a refusal means a wrong password: no second attempt")
    func unchangedMeansWrongPassword() async throws {
        var attempts = 0
        await #expect(throws: KerberosError.self) {
            try await LearntPreauth.withOneRelearn(known: Self.aes256, learn: { Self.aes256 }, attempt: { _ throws(KerberosError) -> Int in
                attempts += 1
                throw KerberosError(code: Int32(KRB5KDC_ERR_PREAUTH_FAILED), message: "wrong", reason: .badPassword)
            })
        }
        #expect(attempts == 1)
    }

    @Test("a changed salt is learnt again and the login succeeds with it")
    func changedSaltSucceeds() async throws {
        let result = try await LearntPreauth.withOneRelearn(known: Self.aes256, learn: { Self.changed(1) }, attempt: { info throws(KerberosError) -> String in
            guard info == Self.changed(1) else { throw KerberosError(code: -1, message: "wrong", reason: .badPassword) }
            return "ok"
        })
        #expect(result == "ok")
    }

    @Test("learnt etype info expires after its lifetime")
    func learntExpires() {
        let learnt = LearntPreauth(lifetime: .seconds(300))
        let now = ContinuousClock.now
        learnt.remember(Self.aes256, for: "plain@R", now: now)
        #expect(learnt.encryptionInfo(for: "plain@R", now: now + .seconds(299)) == Self.aes256)
        #expect(learnt.encryptionInfo(for: "plain@R", now: now + .seconds(301)) == nil)
    }

    @Test("known etype info is used without asking the KDC")
    func knownIsUsedWithoutAsking() async throws {
        var learns = 0
        let known = try await LearntPreauth.withOneRelearn(known: Self.aes256, learn: { () throws(KerberosError) in learns += 1; return Self.changed(1) },
                                                           attempt: { info throws(KerberosError) in info })
        #expect(known == Self.aes256 && learns == 0)
    }

    @Test("failures other than a refused key are not retried")
    func otherFailuresPassThrough() async {
        var learns = 0, attempts = 0
        await #expect(throws: KerberosError.self) {
            try await LearntPreauth.withOneRelearn(known: Self.aes256, learn: { () throws(KerberosError) in learns += 1; return Self.changed(1) },
                                                   attempt: { _ throws(KerberosError) -> Int in
                attempts += 1
                throw KerberosError(code: -1, message: "no KDC", reason: .kdcUnreachable)
            })
        }
        #expect(learns == 0 && attempts == 1)
    }

    @Test("principals whose optimistic preauth failed are remembered, and the table is bounded")
    func optimisticRefusals() {
        let learnt = LearntPreauth(capacity: 2)
        #expect(!learnt.refusesOptimistic("a@R"))
        learnt.refuseOptimistic("a@R")
        learnt.refuseOptimistic("b@R")
        #expect(learnt.refusesOptimistic("a@R") && learnt.refusesOptimistic("b@R"))
        learnt.refuseOptimistic("c@R")
        #expect(learnt.refusesOptimistic("c@R"))
        #expect(!learnt.refusesOptimistic("a@R") && !learnt.refusesOptimistic("b@R"), "forgotten wholesale at capacity")
    }

    @Test("the etype info table is bounded, and newer info replaces older for a principal")
    func encryptionInfoBounded() {
        let learnt = LearntPreauth(capacity: 2)
        learnt.remember(Self.aes256, for: "a@R")
        learnt.remember(Self.changed(1), for: "a@R")
        #expect(learnt.encryptionInfo(for: "a@R") == Self.changed(1))
        learnt.remember(Self.aes256, for: "b@R")
        learnt.remember(Self.aes256, for: "c@R")
        #expect(learnt.encryptionInfo(for: "a@R") == nil && learnt.encryptionInfo(for: "c@R") == Self.aes256)
    }

    @Test("a realm whose KDC refused the armored one-exchange request is remembered by realm")
    func armoredRefusals() {
        let learnt = LearntPreauth()
        #expect(!learnt.refusesArmoredOneExchange("AD.EXAMPLE"))
        learnt.refuseArmoredOneExchange("AD.EXAMPLE")
        #expect(learnt.refusesArmoredOneExchange("AD.EXAMPLE"))
        #expect(!learnt.refusesArmoredOneExchange("KRB5.TEST"))
    }

    @Test("learnt etype info is keyed by the name's bytes: a canonically equivalent spelling is another principal")
    func keyedByBytes() {
        let learnt = LearntPreauth()
        learnt.remember(Self.aes256, for: "jose\u{301}@R")
        #expect(learnt.encryptionInfo(for: "jose\u{301}@R") == Self.aes256)
        #expect(learnt.encryptionInfo(for: "jos\u{e9}@R") == nil, "NFC josé is not NFD jose\u{301}")
        learnt.refuseOptimistic("\u{212A}alice@R")
        #expect(!learnt.refusesOptimistic("Kalice@R"), "KELVIN SIGN is not K")
    }
}
