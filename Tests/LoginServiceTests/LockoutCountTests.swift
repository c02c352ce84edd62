import Kerberos
import KerberosEngine
@testable import LoginService
import LoginProtocol
import TestRealm
import Testing

/// A wrong password counts once against the KDC's lockout (`maxfailure`), whichever path the login takes: a
/// refused key is followed by a question that counts nothing, and by a second attempt only when the principal's
/// key takes other parameters than the first attempt's.
@Suite("LoginService: a wrong password counts once at the KDC")
struct LockoutCountTests {
    static func failedAttempts(_ realm: TestRealm, _ user: String) throws -> String {
        let record = try realm.kadmin("getprinc", user)
        return record.split(separator: "\n").first { $0.contains("Failed password attempts") }.map(String.init) ?? record
    }

    static func lockedUser(_ realm: TestRealm, attributes: [String] = []) throws -> String {
        _ = try? realm.kadmin("addpol", "-maxfailure", "20", "countlock")
        return try realm.addPrincipal(prefix: "count", password: "Count-Passw0rd1", attributes: ["+requires_preauth", "-policy", "countlock"] + attributes)
    }

    static func service(_ realm: TestRealm, optimistic: Bool) throws -> LoginService {
        var configuration = LoginConfiguration(krb5: .files(realm.configFile), keytab: realm["HOST_KEYTAB"], serverPrincipal: realm["LOCALHOST_PRINCIPAL"],
                                               optimisticPreauth: optimistic, learnedPreauth: !optimistic)
        configuration.loginTimeout = TestRealm.loginTimeout
        return try LoginService(configuration: configuration, threads: 1)
    }

    @Test("optimistic preauth: a wrong password counts one failure")
    func optimistic() async throws {
        let realm = try TestRealm.shared()
        let user = try Self.lockedUser(realm)
        let service = try Self.service(realm, optimistic: true)
        let result = await service.verifyPassword(principal: user, password: Secret("Wrong-Passw0rd1"))
        #expect(result.failure == .badCredentials, "\(result)")
        let attempts = try Self.failedAttempts(realm, user)
        #expect(attempts.hasSuffix(": 1"), "\(attempts)")
        #expect(await service.verifyPassword(principal: user, password: Secret("Count-Passw0rd1")).ok)
        await service.shutdown()
    }

    @Test("optimistic preauth with a salt other than the default: the login succeeds on the second attempt, which the question allowed")
    func optimisticOtherSalt() async throws {
        let realm = try TestRealm.shared()
        let user = try Self.lockedUser(realm, attributes: ["-e", "aes256-cts:onlyrealm"])
        let service = try Self.service(realm, optimistic: true)
        #expect(await service.verifyPassword(principal: user, password: Secret("Count-Passw0rd1")).ok)
        await service.shutdown()
    }

    @Test("learnt etype info: after a good login, a wrong password counts one failure")
    func learnt() async throws {
        let realm = try TestRealm.shared()
        let user = try Self.lockedUser(realm)
        let service = try Self.service(realm, optimistic: false)
        #expect(await service.verifyPassword(principal: user, password: Secret("Count-Passw0rd1")).ok)
        let result = await service.verifyPassword(principal: user, password: Secret("Wrong-Passw0rd1"))
        #expect(result.failure == .badCredentials, "\(result)")
        let attempts = try Self.failedAttempts(realm, user)
        #expect(attempts.hasSuffix(": 1"), "\(attempts)")
        await service.shutdown()
    }
}
