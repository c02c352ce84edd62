import Foundation
import Kerberos
import LoginProtocol
import LoginService
import TestRealm
import Testing
@testable import VerifyDaemon

/// One daemon serving several realms: settings per realm, and keytab armor as Active Directory needs it.
@Suite("Several realms in one daemon", .onTestThreads)
struct MultiRealmTests {
    @Test("[realms.\"NAME\"] tables allow those realms and give them settings of their own; unknown keys are named")
    func realmTables() throws {
        var configuration = DaemonConfiguration()
        try configuration.load(toml: """
        sasl_socket = "/tmp/a"
        keytab = "/etc/krb5.keytab"
        [realms."AD.EXAMPLE"]
        keytab = "/etc/krb5-ad.keytab"
        server_principal = "host/mail.ad.example@AD.EXAMPLE"
        armor = "keytab"
        armor_principal = "MAIL$@AD.EXAMPLE"
        [realms."EXAMPLE.ORG"]
        """)
        #expect(configuration.login.realms == ["AD.EXAMPLE", "EXAMPLE.ORG"])
        let ad = configuration.login.applying(realm: "AD.EXAMPLE")
        #expect(ad.keytab == "/etc/krb5-ad.keytab" && ad.serverPrincipal == "host/mail.ad.example@AD.EXAMPLE")
        #expect(ad.armor == .keytab && ad.armorPrincipal == "MAIL$@AD.EXAMPLE")
        #expect(configuration.login.applying(realm: "EXAMPLE.ORG").keytab == "/etc/krb5.keytab")
        #expect(throws: ConfigurationError("configuration: unknown key \"keytabs\" in realms.X")) {
            var other = DaemonConfiguration()
            try other.load(toml: "sasl_socket = \"/tmp/a\"\n[realms.X]\nkeytabs = \"/k\"\n")
        }
        #expect(throws: ConfigurationError("configuration: realms.X.armor must be anonymous, keytab or none")) {
            var other = DaemonConfiguration()
            try other.load(toml: "sasl_socket = \"/tmp/a\"\n[realms.X]\narmor = \"yes\"\n")
        }
    }

    @Test("a realm's own keytab and server principal verify its logins; other realms keep the general ones")
    func perRealmVerification() async throws {
        // The general keytab is stale: only the realm's own settings can verify.
        let configure: (inout DaemonConfiguration, TestRealm) -> Void = { configuration, realm in
            configuration.login.keytab = realm["STALE_KEYTAB"]
            configuration.login.armor = .none
            configuration.login.realmSettings[realm.realm] = .init(keytab: realm["HOST_KEYTAB"], serverPrincipal: realm["LOCALHOST_PRINCIPAL"])
        }
        try await DaemonFixture.with(configure: configure) { fixture throws in
            let realm = fixture.realm
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok)
            let other = "\(realm["OTHER_USER"])@\(realm["OTHER_REALM"])"
            #expect(try fixture.sasl(other, realm["OTHER_USER_PASSWORD"]) == .no("verification failed"))
        }
    }

    @Test("keytab armor uses the keytab's computer account NAME$ when there is one, else its first entry")
    func computerAccountArmor() async throws {
        let realm = try TestRealm.shared()
        let computer = "ws\(UInt32.random(in: 0...UInt32.max))$"
        try realm.kadmin("addprinc", "-randkey", computer)
        let keytab = FileManager.default.temporaryDirectory.appendingPathComponent("armor-\(UUID().uuidString).keytab").path
        defer { try? FileManager.default.removeItem(atPath: keytab) }
        // The host key first (its existing key: -norandkey), then the computer account.
        try realm.kadmin("ktadd", "-norandkey", "-k", keytab, realm["LOCALHOST_PRINCIPAL"])
        try realm.kadmin("ktadd", "-k", keytab, computer)
        try await DaemonFixture.with(configure: { configuration, realm in
            configuration.login = LoginConfiguration(krb5: .files(realm.configFile), keytab: keytab,
                                                     serverPrincipal: realm["LOCALHOST_PRINCIPAL"], armor: .keytab, fastRequired: true)
            configuration.login.loginTimeout = TestRealm.loginTimeout
        }) { fixture in
            let skip = try realm.kdcLog().count
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"]) == .ok)
            let armorRequests = try realm.kdcLog().dropFirst(skip).filter { $0.contains("ISSUE") && $0.contains("\(computer)@\(realm.realm) for krbtgt/") }
            #expect(armorRequests.count == 1, "the armor TGT is the computer account's")
        }
    }
}
