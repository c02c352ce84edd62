import CStringToKey
import Foundation
import Kerberos
import KerberosEngine
@testable import LoginService
import LoginProtocol
import TestRealm
import Testing

/// Every password login makes its key once, with the fast string-to-key (`CStringToKey`), whatever the KDC asks
/// for: an AS-REP without preauth, PREAUTH_REQUIRED, FAST's encrypted challenge, Active Directory's and
/// Heimdal's salts. libk5crypto's string-to-key never runs for these AES-SHA1 keys.
@Suite("LoginService: one key per login, made by the fast string-to-key", .serialized)
struct KeyDerivationTests {
    /// Logs `principal` in three times on a service of one worker (the first login learns the etype info, the
    /// others use it) and returns the keys each login made on that worker.
    static func keysPerLogin(_ configuration: LoginConfiguration, principal: String, password: String) async throws -> [(fast: UInt64, libk5crypto: UInt64)] {
        var configuration = configuration
        configuration.loginTimeout = TestRealm.loginTimeout
        let service = try LoginService(configuration: configuration, threads: 1)
        var keys: [(fast: UInt64, libk5crypto: UInt64)] = []
        for _ in 0..<3 {
            let before = try await service.keysMadeOnNextWorker()
            let result = await service.verifyPassword(principal: principal, password: Secret(password))
            #expect(result.ok, "\(principal): \(result)")
            let after = try await service.keysMadeOnNextWorker()
            keys.append((after.fast - before.fast, after.libk5crypto - before.libk5crypto))
        }
        await service.shutdown()
        return keys
    }

    static func expectOneFastKeyEach(_ keys: [(fast: UInt64, libk5crypto: UInt64)], _ label: String) {
        for (index, made) in keys.enumerated() {
            #expect(made.fast == 1 && made.libk5crypto == 0, "\(label), login \(index + 1): \(made.fast) fast keys, \(made.libk5crypto) by libk5crypto")
        }
    }

    static func mit(armor: LoginConfiguration.ArmorSource) throws -> (TestRealm, LoginConfiguration) {
        let realm = try TestRealm.shared()
        return (realm, LoginConfiguration(krb5: .files(realm.configFile), keytab: realm["HOST_KEYTAB"], serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: armor))
    }

    @Test("MIT, a principal as addprinc makes it (no preauth: the key opens the AS-REP), unarmored and armored", arguments: [LoginConfiguration.ArmorSource.none, .anonymous])
    func withoutPreauth(armor: LoginConfiguration.ArmorSource) async throws {
        let (realm, configuration) = try Self.mit(armor: armor)
        Self.expectOneFastKeyEach(try await Self.keysPerLogin(configuration, principal: realm["USER"], password: realm["USER_PASSWORD"]), "no preauth, \(armor)")
    }

    @Test("MIT, a +requires_preauth principal (the key makes the timestamp, or FAST's encrypted challenge)", arguments: [LoginConfiguration.ArmorSource.none, .anonymous])
    func withPreauth(armor: LoginConfiguration.ArmorSource) async throws {
        let (realm, configuration) = try Self.mit(armor: armor)
        Self.expectOneFastKeyEach(try await Self.keysPerLogin(configuration, principal: realm["PREAUTH_USER"], password: realm["PREAUTH_PASSWORD"]), "preauth, \(armor)")
    }

    @Test("krb5-login's one login per process, on the calling thread: one fast key for either kind of principal")
    func oneShot() throws {
        let (realm, configuration) = try Self.mit(armor: .none)
        for (user, password) in [(realm["USER"], realm["USER_PASSWORD"]), (realm["PREAUTH_USER"], realm["PREAUTH_PASSWORD"])] {
            let made = Locked<(UInt64, UInt64)?>(nil)
            let thread = Thread {
                var configuration = configuration
                configuration.loginTimeout = TestRealm.loginTimeout
                let before = s2k_counts_on_this_thread()
                let context = try! Context(configuration.krb5)
                let step = LoginService.stepBlocking(LoginConversation(principal: user, password: Secret(password)), configuration: configuration, context: context)
                guard case .finished(let result, _) = step, result.ok else { return }
                let after = s2k_counts_on_this_thread()
                made.withLock { $0 = (after.fast - before.fast, after.libk5crypto - before.libk5crypto) }
            }
            thread.start()
            while !thread.isFinished { usleep(10_000) }
            let counts = try #require(made.withLock { $0 }, "\(user) did not log in")
            #expect(counts.0 == 1 && counts.1 == 0, "\(user): \(counts.0) fast keys, \(counts.1) by libk5crypto")
        }
    }

    @Test("Active Directory: its salt (realm and sAMAccountName, also a renamed account's old name) and explicit iteration count")
    func activeDirectory() async throws {
        let ad = try ExternalRealm.activeDirectory()
        let configuration = LoginConfiguration(krb5: .files(ad.configFile), keytab: ad.hostKeytab, serverPrincipal: ad.hostPrincipal, armor: .none)
        Self.expectOneFastKeyEach(try await Self.keysPerLogin(configuration, principal: ad["USER"], password: ad["USER_PASSWORD"]), "AD alice")
        Self.expectOneFastKeyEach(try await Self.keysPerLogin(configuration, principal: ad["RENAMED_USER"], password: ad["RENAMED_PASSWORD"]), "AD renamed")
    }

    @Test("Heimdal KDC")
    func heimdal() async throws {
        let heimdal = try ExternalRealm.heimdal()
        let configuration = LoginConfiguration(krb5: .files(heimdal.configFile), keytab: heimdal.hostKeytab, serverPrincipal: heimdal.hostPrincipal, armor: .none)
        Self.expectOneFastKeyEach(try await Self.keysPerLogin(configuration, principal: heimdal["USER"], password: heimdal["USER_PASSWORD"]), "Heimdal")
    }
}
