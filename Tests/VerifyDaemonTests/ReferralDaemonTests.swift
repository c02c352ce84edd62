import Foundation
import Kerberos
import LoginProtocol
import LoginService
import TestRealm
import Testing
@testable import VerifyDaemon

/// Issue #21, finding 6: the daemon's `realms` allow-list also bounds where a KDC's referral may send a login
/// (``KerberosClient/Configuration/referralRealms``, set by LoginService from the allow-list). A loopback KDC for
/// `REFER.<REALM>` answers every request with a KRB-ERROR `WRONG_REALM` naming the realm's second realm, OTHER
/// (``ReferringKDC``); OTHER's real MIT KDC issues the ticket when the referral is followed.
@Suite("Referrals and the daemon's realm allow-list", .serialized, .onTestThreads)
struct ReferralDaemonTests {
    @Test("with canonicalize, a referral to a realm in `realms` logs in at that realm's KDC; to a realm outside it the login is refused")
    func referralsFollowTheAllowList() async throws {
        let realm = try TestRealm.shared()
        let referring = "REFER." + realm.realm
        let kdc = try ReferringKDC(to: realm["OTHER_REALM"], client: realm["OTHER_USER"], serverRealm: referring)
        defer { kdc.stop() }
        var text = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        text = text.replacingOccurrences(of: "[realms]\n", with: "[realms]\n \(referring) = {\n  kdc = 127.0.0.1:\(kdc.port)\n }\n")
        let path = realm.directory + "/krb5-referral-daemon-\(getpid()).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }

        for (realms, allowed) in [([referring, realm.realm, realm["OTHER_REALM"]], true), ([referring, realm.realm], false)] {
            let before = kdc.requests
            try await DaemonFixture.with(configure: { configuration, _ in
                configuration.login.krb5 = .files(path)
                configuration.login.armor = .none
                configuration.login.canonicalize = true
                configuration.login.realms = realms
            }) { fixture throws in
                let reply = try fixture.sasl("\(realm["OTHER_USER"])@\(referring)", realm["OTHER_USER_PASSWORD"])
                #expect(kdc.requests > before, "the referring KDC was asked")
                if allowed {
                    #expect(reply == .ok, "\(reply)")
                } else {
                    #expect(reply != .ok, "\(reply)")
                    #expect(fixture.logs.text.contains("referred the login to realm \"\(realm["OTHER_REALM"])\""), "\(fixture.logs.text.suffix(2000))")
                }
            }
        }
    }
}
