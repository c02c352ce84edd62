import CKrb5
import Foundation
@testable import KerberosEngine
import Kerberos
import NIOCore
import NIOPosix
import TestRealm
import Testing

/// Issue #21, finding 6: a KDC's referral (`KDC_ERR_WRONG_REALM` to a canonicalized or enterprise name) leads only to
/// the realms ``KerberosClient/Configuration/referralRealms`` allows, and the location table stays bounded.
///
/// The referring KDC is ``ReferringKDC``, a loopback server for a realm `REFER.<REALM>` of the test's krb5.conf that
/// answers every request with a real KRB-ERROR `WRONG_REALM` naming the test realm's second realm, OTHER, whose real
/// MIT KDC then issues the ticket (the MIT KDC of 1.20 answers no client referrals itself: that needs principal
/// aliases of 1.22 or an LDAP directory).
@Suite("Referrals (WRONG_REALM)", .serialized, .onTestThreads)
struct ReferralTests {
    let realm: TestRealm
    init() throws { realm = try TestRealm.shared() }

    var otherRealm: String { realm["OTHER_REALM"] }
    var referringRealm: String { "REFER." + realm.realm }

    /// The realm's client configuration with `REFER.<REALM>` served by `port`.
    func config(referringPort: Int) throws -> String {
        var text = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        text = text.replacingOccurrences(of: "[realms]\n", with: "[realms]\n \(referringRealm) = {\n  kdc = 127.0.0.1:\(referringPort)\n }\n")
        let path = realm.directory + "/krb5-referral-\(getpid())-\(TestRealm.uniqueName("r")).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func logIn(_ client: KerberosClient) async throws(KerberosError) -> TicketInfo {
        var options = LoginOptions()
        options.canonicalize = true
        return try await client.initialCredentials(for: "\(realm["OTHER_USER"])@\(referringRealm)", password: Secret(realm["OTHER_USER_PASSWORD"]),
                                                   options: options)
    }

    @Test("a referral to an allowed realm is followed to its real KDC; one to a realm outside referralRealms fails before anything is sent there")
    func referralAllowList() async throws {
        let kdc = try ReferringKDC(to: otherRealm, client: realm["OTHER_USER"], serverRealm: referringRealm)
        defer { kdc.stop() }
        let path = try config(referringPort: kdc.port)

        // Allowed (and nil, MIT's behaviour): the ticket is OTHER's, from its real KDC.
        for allowed in [Set([referringRealm, otherRealm]), nil] {
            let client = try KerberosClient(configuration: .init(krb5: .files(path), threads: 1, loginTimeout: TestRealm.loginTimeout, referralRealms: allowed))
            let ticket = try await logIn(client)
            #expect(ticket.client == "\(realm["OTHER_USER"])@\(otherRealm)")
            #expect(client.locationCount == 2, "the referring realm and OTHER")
            await client.shutdown()
        }
        #expect(kdc.requests >= 2, "the referring KDC was asked")

        // Not allowed: the login fails naming the realm, and OTHER is never located nor asked.
        let client = try KerberosClient(configuration: .init(krb5: .files(path), threads: 1, loginTimeout: TestRealm.loginTimeout,
                                                             referralRealms: [realm.realm]))
        do throws(KerberosError) {
            _ = try await logIn(client)
            Issue.record("a referral outside the allowed realms was followed")
        } catch {
            #expect(error.reason == .unknownPrincipal, "\(error)")
            #expect(error.code == Int32(KRB5KDC_ERR_WRONG_REALM))
            #expect(error.message.contains(otherRealm), "\(error.message)")
        }
        #expect(client.locationCount == 1, "only the referring realm was located")
        await client.shutdown()
    }

    @Test("the location table keeps at most 256 locations, however many realms are asked for")
    func boundedLocations() async throws {
        var text = "[libdefaults]\n default_realm = R0.TEST\n dns_lookup_kdc = false\n[realms]\n"
        for index in 0..<300 { text += " R\(index).TEST = {\n  kdc = 127.0.0.1:\(1000 + index)\n }\n" }
        let path = realm.directory + "/krb5-many-\(getpid())-\(TestRealm.uniqueName("m")).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let client = try KerberosClient(configuration: .init(krb5: .files(path), threads: 1, loginTimeout: TestRealm.loginTimeout))
        for index in 0..<300 {
            _ = try await client.locate("R\(index).TEST")
            #expect(client.locationCount <= KerberosClient.maximumLocations)
        }
        #expect(client.locationCount > 0)
        await client.shutdown()
    }
}
