import Foundation
import Kerberos
import Logging
import LoginProtocol
import LoginService
import TestRealm
import Testing
import VerifyDaemon

extension DaemonFixture {
    /// Runs `body` with a daemon in process against a realm that is not MIT's, stopped however `body` ends:
    /// verification with nofail against the realm's host keytab and service principal (AD: the WS1$ keytab and its
    /// host/ SPN), no armor.
    static func with(_ external: ExternalRealm, configure: (inout DaemonConfiguration) -> Void = { _ in },
                     _ body: (DaemonFixture) async throws -> Void) async throws {
        var configuration = configuration(krb5: external.configFile, keytab: external.hostKeytab, serverPrincipal: external.hostPrincipal, armor: .none)
        configure(&configuration)
        try await start(configuration, realm: TestRealm(directory: external.directory)).run(body)
    }
}

@Suite("krb5-verifyd against Active Directory (Samba AD DC)", .onTestThreads)
struct ActiveDirectoryDaemonTests {
    let ad: ExternalRealm
    init() throws { ad = try ExternalRealm.activeDirectory() }

    @Test("Cyrus testsaslauthd: OK for the right password, NO for a wrong one, verified against the WS1$ keytab's host/ SPN")
    func testsaslauthd() async throws {
        try await DaemonFixture.with(ad) { fixture throws in
            let ok = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", ad["USER"], "-p", ad["USER_PASSWORD"], "-s", "imap"])
            #expect(ok.output.contains(#"0: OK "Success.""#), "\(ok.output)")
            let no = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", ad["USER"], "-p", "Not-the-Passw0rd"])
            #expect(no.output.contains(#"0: NO "authentication failed""#), "\(no.output)")
            let realm = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", ad["USER"], "-r", ad.realm, "-p", ad["USER_PASSWORD"]])
            #expect(realm.output.contains("OK"), "\(realm.output)")
        }
    }

    @Test("ALICE logs in; with canonicalize the result and the log carry alice@AD.EXAMPLE")
    func caseInsensitive() async throws {
        let upper = ad["USER"].uppercased()
        try await DaemonFixture.with(ad) { plain throws in
            #expect(try plain.sasl(upper, ad["USER_PASSWORD"]) == .ok)
            let asked = try plain.converse(upper, password: ad["USER_PASSWORD"]).result()
            #expect(asked.ok && asked.verified, "\(asked)")
            #expect(asked.principal == "\(upper)@\(ad.realm)")
        }

        try await DaemonFixture.with(ad, configure: { $0.login.canonicalize = true }) { fixture throws in
            #expect(try fixture.sasl(upper, ad["USER_PASSWORD"]) == .ok)
            #expect(try fixture.sasl(upper, ad["USER_PASSWORD"]) == .ok, "a later login, with the learnt etype info")
            let result = try fixture.converse(upper, password: ad["USER_PASSWORD"]).result()
            #expect(result.ok && result.verified, "\(result)")
            #expect(result.principal == "\(ad["USER"])@\(ad.realm)")
            #expect(fixture.logs.text.contains("\(ad["USER"])@\(ad.realm)"), "the log names the canonical principal")
        }
    }

    /// The AS-REQ and TGS-REQ lines the DC's KDC logged for `user` so far.
    private func kdcRequests(_ user: String) throws -> (asRequests: Int, tgsRequests: Int) {
        let lines = try String(contentsOfFile: ad["KDC_LOG"], encoding: .utf8).split(separator: "\n")
        return (lines.filter { $0.contains("AS-REQ \(user)@\(ad.realm) from ") }.count,
                lines.filter { $0.contains("TGS-REQ \(user)@\(ad.realm) from ") }.count)
    }

    @Test("a password-only login is one AS exchange once the etype info is learnt (the DC's explicit 4096 iterations included), with no TGS exchange")
    func oneExchange() async throws {
        let user = try ad.addUser(prefix: "one", password: "One-Passw0rd1")
        // TCP from the start: otherwise every AS exchange with the DC is a UDP attempt answered RESPONSE_TOO_BIG, then TCP.
        let tcp = ad.directory + "/krb5-tcp-\(getpid()).conf"
        try "[libdefaults]\n udp_preference_limit = 1\n".write(toFile: tcp, atomically: true, encoding: .utf8)
        try await DaemonFixture.with(ad, configure: { $0.login.krb5 = .files(tcp, ad.configFile) }) { fixture throws in
            #expect(try fixture.sasl(user, "One-Passw0rd1") == .ok, "the first login learns the etype info")
            let before = try kdcRequests(user)
            #expect(before.asRequests >= 2)
            #expect(try fixture.sasl(user, "One-Passw0rd1") == .ok)
            let after = try kdcRequests(user)
            #expect(after.asRequests - before.asRequests == 1, "\(before) → \(after)")
            #expect(after.tgsRequests == before.tgsRequests, "the verification ticket comes from the AS")
        }
    }

    @Test("a renamed account: the first login and later ones follow the DC's salt (old sAMAccountName), also after the salt changes")
    func renamedAccount() async throws {
        let created = try ad.addUser(prefix: "rn", password: "Renamed-Passw0rd1")
        let renamed = created + "r"
        try ad.admin("user", "rename", created, "--samaccountname=\(renamed)")
        try await DaemonFixture.with(ad) { fixture throws in
            #expect(try fixture.sasl(renamed, "Renamed-Passw0rd1") == .ok, "first login: the etype info learnt from the DC")
            #expect(try fixture.sasl(renamed, "Renamed-Passw0rd1") == .ok, "a later login with the learnt salt, key made in process")
            #expect(try fixture.sasl(renamed, "Not-the-Passw0rd1") == .no("authentication failed"))
            // A new password is salted with the new name: the learnt salt is stale, and the login must still work.
            try ad.setPassword(renamed, "Changed-Passw0rd2")
            #expect(try fixture.sasl(renamed, "Changed-Passw0rd2") == .ok)
            #expect(try fixture.sasl(renamed, "Changed-Passw0rd2") == .ok)
            #expect(try fixture.sasl(renamed, "Renamed-Passw0rd1") == .no("authentication failed"))
        }
    }

    @Test("the shared renamed account logs in through both listeners, also with learned_preauth off")
    func renamedShared() async throws {
        for learned in [true, false] {
            try await DaemonFixture.with(ad, configure: { $0.login.learnedPreauth = learned }) { fixture throws in
                #expect(try fixture.sasl(ad["RENAMED_USER"], ad["RENAMED_PASSWORD"]) == .ok)
                #expect(try fixture.converse(ad["RENAMED_USER"], password: ad["RENAMED_PASSWORD"]).result().ok)
            }
        }
    }

    @Test("a UPN with a foreign suffix logs in with enterprise_names; the result is the account's canonical name")
    func enterpriseUPN() async throws {
        try await DaemonFixture.with(ad, configure: { $0.login.enterpriseNames = true }) { fixture throws in
            #expect(try fixture.sasl(ad["UPN"], ad["UPN_PASSWORD"]) == .ok)
            #expect(try fixture.sasl(ad["UPN"], ad["UPN_PASSWORD"]) == .ok, "a later login, with the learnt etype info")
            #expect(try fixture.sasl(ad["UPN"], "Not-the-Passw0rd1") == .no("authentication failed"))
            let result = try fixture.converse(ad["UPN"], password: ad["UPN_PASSWORD"]).result()
            #expect(result.ok && result.verified, "\(result)")
            #expect(result.principal == "\(ad["UPN_USER"])@\(ad.realm)")
            #expect(fixture.logs.text.contains("\(ad["UPN_USER"])@\(ad.realm)"))
            // Plain names and realm-qualified names are unaffected by the option.
            #expect(try fixture.sasl(ad["USER"], ad["USER_PASSWORD"]) == .ok)
            #expect(try fixture.sasl("\(ad["USER"])@\(ad.realm)", ad["USER_PASSWORD"]) == .ok)
        }

        try await DaemonFixture.with(ad) { without throws in
            #expect(try without.sasl(ad["UPN"], ad["UPN_PASSWORD"]) != .ok, "without enterprise names the suffix is taken for a realm")
        }
    }

    @Test("must change at next logon: saslauthd says password expired; the conversation changes it through kpasswd to the DC")
    func mustChange() async throws {
        let user = try ad.addUser(prefix: "dchg", password: "Old-Passw0rd1", options: ["must-change"])
        try await DaemonFixture.with(ad) { fixture throws in
            #expect(try fixture.sasl(user, "Old-Passw0rd1") == .no("password expired"))
            let conversation = try fixture.converse(user, password: "Old-Passw0rd1")
            guard case .questions(let id, let questions) = try conversation.next() else { Issue.record("no questions"); return }
            #expect(questions.contains { if case .newPassword = $0 { true } else { false } })
            conversation.answer(id, LoginAnswers(newPassword: Secret("New-Passw0rd-9"), newPasswordAgain: Secret("New-Passw0rd-9")))
            let result = try conversation.result()
            #expect(result.ok && result.verified, "\(result)")
            #expect(try fixture.sasl(user, "New-Passw0rd-9") == .ok)
            #expect(try fixture.sasl(user, "Old-Passw0rd1") == .no("authentication failed"))
        }
    }

    @Test("a new password the DC's policy refuses fails the conversation with the DC's reason")
    func weakNewPassword() async throws {
        let user = try ad.addUser(prefix: "dweak", password: "Old-Passw0rd1", options: ["must-change"])
        try await DaemonFixture.with(ad) { fixture throws in
            let conversation = try fixture.converse(user, password: "Old-Passw0rd1")
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            conversation.answer(id, LoginAnswers(newPassword: Secret("weak"), newPasswordAgain: Secret("weak")))
            let result = try conversation.result()
            #expect(!result.ok, "\(result)")
            #expect(try fixture.sasl(user, "weak") != .ok)
        }
    }

    @Test("disabled and expired accounts: account disabled on both listeners")
    func disabledAndExpired() async throws {
        try await DaemonFixture.with(ad) { fixture throws in
            for user in ["DISABLED", "EXPIRED"] {
                #expect(try fixture.sasl(ad["\(user)_USER"], ad["\(user)_PASSWORD"]) == .no("account disabled"), "\(user)")
                let result = try fixture.converse(ad["\(user)_USER"], password: ad["\(user)_PASSWORD"]).result()
                #expect(result.failure == .accountDisabled, "\(user): \(result)")
            }
        }
    }

    @Test("RC4 etype info (a client limited to rc4-hmac): StringToKey does not make the key, MIT's path does, first and later logins")
    func rc4() async throws {
        let rc4 = ad.directory + "/krb5-rc4-\(getpid()).conf"
        try "[libdefaults]\n default_tkt_enctypes = rc4-hmac\n".write(toFile: rc4, atomically: true, encoding: .utf8)
        let context = try Context(.files(rc4, ad.configFile))
        let info = try context.encryptionInfo(for: Principal(parsing: ad["USER"], in: context))
        #expect(info.encryptionType == .rc4HMAC)
        try await DaemonFixture.with(ad, configure: { $0.login.krb5 = .files(rc4, ad.configFile) }) { fixture throws in
            #expect(try fixture.sasl(ad["USER"], ad["USER_PASSWORD"]) == .ok, "first login: etype info learnt")
            #expect(try fixture.sasl(ad["USER"], ad["USER_PASSWORD"]) == .ok, "later login: RC4 key made by MIT with the learnt info")
            #expect(try fixture.sasl(ad["USER"], "Not-the-Passw0rd1") == .no("authentication failed"))
        }
    }

    /// MIT's own path under FAST (learned_preauth off); ``armoredOneExchange()`` covers the one-exchange path.
    @Test("keytab armor (FAST required) from the WS1$ keytab, which also holds the host/ SPN: password, wrong password and must-change logins")
    func keytabArmor() async throws {
        let user = try ad.addUser(prefix: "darm", password: "Old-Passw0rd1", options: ["must-change"])
        try await DaemonFixture.with(ad, configure: { configuration in
            configuration.login.armor = .keytab
            configuration.login.fastRequired = true
            configuration.login.learnedPreauth = false
        }) { fixture throws in
            #expect(try fixture.sasl(ad["USER"], ad["USER_PASSWORD"]) == .ok)
            #expect(try fixture.sasl(ad["USER"], "Not-the-Passw0rd1") == .no("authentication failed"))
            let result = try fixture.converse(ad["USER"], password: ad["USER_PASSWORD"]).result()
            #expect(result.ok && result.verified, "\(result)")
            let conversation = try fixture.converse(user, password: "Old-Passw0rd1")
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            conversation.answer(id, LoginAnswers(newPassword: Secret("New-Passw0rd-8"), newPasswordAgain: Secret("New-Passw0rd-8")))
            let changed = try conversation.result()
            #expect(changed.ok && changed.verified, "the password changed inside FAST: \(changed)")
            #expect(try fixture.sasl(user, "New-Passw0rd-8") == .ok)
        }
    }

    @Test("keytab armor with learned_preauth: after the first login each password login is one armored AS exchange (an encrypted challenge, which the DC takes where it refuses PA-ENC-TIMESTAMP)")
    func armoredOneExchange() async throws {
        let user = try ad.addUser(prefix: "aone", password: "Armored-Passw0rd1")
        let tcp = ad.directory + "/krb5-tcp-armor-\(getpid()).conf"
        try "[libdefaults]\n udp_preference_limit = 1\n".write(toFile: tcp, atomically: true, encoding: .utf8)
        try await DaemonFixture.with(ad, configure: { configuration in
            configuration.login.krb5 = .files(tcp, ad.configFile)
            configuration.login.armor = .keytab
            configuration.login.fastRequired = true
        }) { fixture throws in
            #expect(try fixture.sasl(user, "Armored-Passw0rd1") == .ok, "the first login learns the etype info under FAST")
            for _ in 0..<2 {
                let before = try kdcRequests(user)
                #expect(try fixture.sasl(user, "Armored-Passw0rd1") == .ok)
                let after = try kdcRequests(user)
                #expect(after.asRequests - before.asRequests == 1, "one AS exchange: \(before) → \(after)")
            }
            #expect(try fixture.sasl(user, "Not-the-Passw0rd1") == .no("authentication failed"))
            let result = try fixture.converse(user, password: "Armored-Passw0rd1").result()
            #expect(result.ok && result.verified, "\(result)")
            #expect(!fixture.logs.text.contains("KDC_ERR_POLICY") && !fixture.logs.text.contains("policy rejects"), "no request refused by policy")
        }
    }

    @Test("the throttle counts ALICE, Alice and alice as one principal: case variants share the failure budget")
    func throttleFoldsCase() async throws {
        let user = try ad.addUser(prefix: "thr", password: "Throttle-Passw0rd1")
        try await DaemonFixture.with(ad, configure: { $0.throttleFailures = 3 }) { fixture throws in
            // Each from another address, so only the principal's throttle can refuse.
            for (index, spelling) in [user, user.uppercased(), user.prefix(1).uppercased() + user.dropFirst()].enumerated() {
                #expect(try fixture.sasl(spelling, "Not-the-Passw0rd1", address: "192.0.2.\(10 + index)") == .no("authentication failed"))
            }
            #expect(!fixture.logs.text.contains("refused without asking the KDC"), "three failures reached the KDC")
            let mixed = String(user.enumerated().map { $0.offset % 2 == 0 ? Character($0.element.uppercased()) : $0.element })
            #expect(try fixture.sasl(mixed, "Throttle-Passw0rd1", address: "192.0.2.20") != .ok, "a fourth spelling is throttled too")
            #expect(fixture.logs.text.contains("refused without asking the KDC: throttled"), "refused by the principal's throttle")
        }
    }

    @Test("verification fails closed against a keytab without the SPN's key (nofail)")
    func verificationNofail() async throws {
        let empty = ad.directory + "/no-such.keytab"
        try await DaemonFixture.with(ad, configure: { $0.login.keytab = empty }) { fixture throws in
            #expect(try fixture.sasl(ad["USER"], ad["USER_PASSWORD"]) != .ok)
            let result = try fixture.converse(ad["USER"], password: ad["USER_PASSWORD"]).result()
            #expect(result.failure == .verificationFailed, "\(result)")
        }
    }
}

@Suite("krb5-verifyd against a Heimdal KDC", .onTestThreads)
struct HeimdalDaemonTests {
    let heimdal: ExternalRealm
    init() throws { heimdal = try ExternalRealm.heimdal() }

    @Test("saslauthd and conversation logins, verified; wrong password and disabled principal refused")
    func basics() async throws {
        try await DaemonFixture.with(heimdal) { fixture throws in
            let ok = try TestRealm.run(["testsaslauthd", "-f", fixture.saslSocket, "-u", heimdal["USER"], "-p", heimdal["USER_PASSWORD"]])
            #expect(ok.output.contains(#"0: OK "Success.""#), "\(ok.output)")
            #expect(try fixture.sasl(heimdal["USER"], heimdal["USER_PASSWORD"]) == .ok, "a later login, with the learnt etype info")
            #expect(try fixture.sasl(heimdal["USER"], "Not-the-Passw0rd") == .no("authentication failed"))
            #expect(try fixture.sasl(heimdal["DISABLED_USER"], heimdal["DISABLED_PASSWORD"]) == .no("account disabled"))
            let result = try fixture.converse(heimdal["USER"], password: heimdal["USER_PASSWORD"]).result()
            #expect(result.ok && result.verified, "\(result)")
            #expect(result.principal == "\(heimdal["USER"])@\(heimdal.realm)")
        }
    }
}
