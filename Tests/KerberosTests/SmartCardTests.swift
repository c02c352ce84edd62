import Foundation
import Kerberos
import TestRealm
import Testing

/// PKINIT with a SoftHSM2 token through PKCS#11. `SOFTHSM2_CONF` is process-wide, so these run serialized
/// and each test makes a token of its own.
@Suite("Smart card (SoftHSM2 over PKCS#11)", .serialized, .onTestThreads)
struct SmartCardTests {
    let realm: TestRealm
    init() throws {
        realm = try TestRealm.shared()
        setenv("SOFTHSM2_CONF", realm["SOFTHSM2_CONF"], 1)
        setenv("PINLOCK_DIR", realm["PINLOCK_DIR"], 1)
    }

    /// A fresh context (MIT's PKINIT keeps one identity per context) armed with `identity`.
    private func login(identity: String, pin: String, log: RoundLog) throws -> Credentials {
        let context = try realm.context()
        var options = InitialCredentialsOptions()
        options.preauthOptions = [("X509_user_identity", identity)]
        options.responder = log.pkinitResponder(answering: pin)
        return try context.initialCredentials(for: Principal(parsing: realm["PKINIT_USER"], in: context), password: nil, options: options)
    }

    @Test("the right PIN through the responder logs the certificate's user in")
    func rightPIN() throws {
        let log = RoundLog()
        let credentials = try login(identity: realm["PKCS11_IDENTITY"], pin: realm["TOKEN_PIN"], log: log)
        #expect(try credentials.client.name().hasPrefix(realm["PKINIT_USER"] + "@"))
        let identities = try #require(log.pkinitIdentities.first)
        #expect(identities.count == 1)
        #expect(identities.first?.identity.hasPrefix("PKCS11:") == true)
        #expect(identities.first?.flags.isEmpty == true)
    }

    /// SoftHSM2 marks the token CKF_USER_PIN_COUNT_LOW after a wrong PIN but has no lockout, so it never
    /// reports FINAL_TRY or LOCKED; the library maps those bits the same way (see `PKINITIdentity.Flags`).
    @Test("a wrong PIN fails, and the next challenge carries the token's count-low flag")
    func wrongPINFlags() throws {
        let label = "card\(getpid() % 10000)\(Int.random(in: 100...999))"
        let identity = try realm.newToken(label: label, pin: "246810")
        var seen: [PKINITIdentity.Flags] = []
        for _ in 0..<3 {
            let log = RoundLog()
            expectReason(.badPassword) { try login(identity: identity, pin: "000000", log: log) }
            seen.append(log.pkinitIdentities.first?.first?.flags ?? [])
        }
        #expect(seen[0].isEmpty, "a fresh token has no PIN flags")
        #expect(seen[1].contains(.pinCountLow) && seen[2].contains(.pinCountLow), "count-low after a wrong PIN")
        let log = RoundLog()
        _ = try login(identity: identity, pin: "246810", log: log)
        #expect(log.pkinitIdentities.first?.first?.flags.contains(.pinCountLow) == true, "still flagged when the right PIN is asked for")
        let after = RoundLog()
        _ = try login(identity: identity, pin: "246810", log: after)
        #expect(after.pkinitIdentities.first?.first?.flags.isEmpty == true, "a right PIN clears the flag")
    }

    /// Through a PKCS#11 wrapper that adds a three-try PIN limit to SoftHSM2 (Docker/kdc/pkcs11-pinlock.c).
    @Test("wrong PINs walk the token through count-low, final-try and locked; a locked token refuses the right PIN")
    func lockedToken() throws {
        let label = "lock\(getpid() % 10000)\(Int.random(in: 100...999))"
        let identity = try realm.newToken(label: label, pin: "135790")
            .replacingOccurrences(of: realm["PKCS11_MODULE"], with: realm["PKCS11_LOCKING_MODULE"])
        var seen: [PKINITIdentity.Flags] = []
        for _ in 0..<4 {
            let log = RoundLog()
            #expect(throws: KerberosError.self) { try login(identity: identity, pin: "000000", log: log) }
            seen.append(log.pkinitIdentities.first?.first?.flags ?? [])
        }
        #expect(seen[0].isEmpty)
        #expect(seen[1] == [.pinCountLow])
        #expect(seen[2] == [.pinCountLow, .pinFinalTry])
        #expect(seen[3].contains(.pinLocked))
        let log = RoundLog()
        #expect(throws: KerberosError.self) { try login(identity: identity, pin: "135790", log: log) }
        #expect(log.pkinitIdentities.first?.first?.flags.contains(.pinLocked) ?? true)
    }
}
