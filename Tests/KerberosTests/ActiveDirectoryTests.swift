import Foundation
import Kerberos
import TestRealm
import Testing

/// The library against a Samba AD DC (`Docker/ad/ad-realm.sh`): MIT's client code, Samba's Heimdal KDC.
@Suite("Active Directory (Samba AD DC): the library", .onTestThreads)
struct ActiveDirectoryTests {
    let ad: ExternalRealm
    init() throws { ad = try ExternalRealm.activeDirectory() }

    private func login(_ name: String, _ password: String, in context: Context, parse: Principal.ParseOptions = [],
                       canonicalize: Bool? = nil) throws -> Credentials {
        var options = InitialCredentialsOptions()
        options.canonicalize = canonicalize
        return try context.initialCredentials(for: Principal(parsing: name, in: context, options: parse), password: Secret(password), options: options)
    }

    private func verify(_ credentials: Credentials, in context: Context) throws {
        try context.verify(credentials, options: VerificationOptions(
            server: try Principal(parsing: ad.hostPrincipal, in: context), keytab: try Keytab(resolving: ad.hostKeytab, in: context), nofail: true))
    }

    @Test("a password login gets a TGT, verified with nofail against the WS1$ keytab's host/ SPN")
    func plainLogin() throws {
        let context = try ad.context()
        let credentials = try login(ad["USER"], ad["USER_PASSWORD"], in: context)
        #expect(try credentials.client.name() == "\(ad["USER"])@\(ad.realm)")
        #expect(credentials.isTicketGrantingTicket)
        try verify(credentials, in: context)
    }

    @Test("a wrong password fails with bad-password")
    func wrongPassword() throws {
        let context = try ad.context()
        expectReason(.badPassword) { try login(ad["USER"], "Not-the-Passw0rd", in: context) }
    }

    @Test("the DC's etype info: AES256, salt REALM + sAMAccountName, the default 4096 iterations spelt out")
    func encryptionInfo() throws {
        let context = try ad.context()
        let info = try context.encryptionInfo(for: Principal(parsing: ad["USER"], in: context))
        #expect(info.encryptionType == .aes256CTSHMACSHA196)
        #expect(String(decoding: info.salt, as: UTF8.self) == "\(ad.realm)\(ad["USER"])")
        #expect(info.parameters == [0, 0, 0x10, 0])
    }

    @Test("names are case-insensitive: ALICE logs in; canonicalization gives the DC's own spelling")
    func caseInsensitive() throws {
        let context = try ad.context()
        let upper = ad["USER"].uppercased()
        let asked = try login(upper, ad["USER_PASSWORD"], in: context)
        #expect(try asked.client.name() == "\(upper)@\(ad.realm)", "without canonicalization the ticket keeps the case asked for")
        try verify(asked, in: context)
        let canonical = try login(upper, ad["USER_PASSWORD"], in: context, canonicalize: true)
        #expect(try canonical.client.name() == "\(ad["USER"])@\(ad.realm)")
        try verify(canonical, in: context)
    }

    @Test("a renamed account keeps the salt of its old sAMAccountName, and logs in")
    func renamedAccount() throws {
        let context = try ad.context()
        let info = try context.encryptionInfo(for: Principal(parsing: ad["RENAMED_USER"], in: context))
        #expect(String(decoding: info.salt, as: UTF8.self) == "\(ad.realm)\(ad["RENAMED_OLD_NAME"])")
        let credentials = try login(ad["RENAMED_USER"], ad["RENAMED_PASSWORD"], in: context)
        #expect(try credentials.client.name() == "\(ad["RENAMED_USER"])@\(ad.realm)")
        try verify(credentials, in: context)
        // The old name still finds the account through its UPN (bob@ad.example, which a rename leaves alone);
        // canonicalization names the account as it is now.
        let old = try login(ad["RENAMED_OLD_NAME"], ad["RENAMED_PASSWORD"], in: context, canonicalize: true)
        #expect(try old.client.name() == "\(ad["RENAMED_USER"])@\(ad.realm)")
    }

    @Test("a UPN with a suffix that is not the realm logs in as an enterprise name, canonicalized to the account")
    func enterpriseUPN() throws {
        let context = try ad.context()
        let principal = try Principal(parsing: ad["UPN"], in: context, options: .enterprise)
        #expect(principal.nameType == .enterprise, "KRB5_NT_ENTERPRISE_PRINCIPAL")
        #expect(principal.realm == ad.realm)
        #expect(principal.components == [ad["UPN"]])
        let credentials = try login(ad["UPN"], ad["UPN_PASSWORD"], in: context, parse: .enterprise, canonicalize: true)
        #expect(try credentials.client.name() == "\(ad["UPN_USER"])@\(ad.realm)")
        try verify(credentials, in: context)
        // Without the enterprise flag the suffix is taken for a realm, which has no KDC.
        let plain = try Principal(parsing: ad["UPN"], in: context)
        #expect(plain.realm == ad["UPN_SUFFIX"].uppercased() || plain.realm == ad["UPN_SUFFIX"])
    }

    @Test("must change at next logon: password-expired without a prompter; the prompter's new password goes through kpasswd to the DC")
    func mustChange() throws {
        let name = try ad.addUser(prefix: "chg", password: "Old-Passw0rd1", options: ["must-change"])
        let context = try ad.context()
        expectReason(.passwordExpired) { try login(name, "Old-Passw0rd1", in: context) }
        var kinds: [Prompt.Kind] = []
        var options = InitialCredentialsOptions()
        options.prompter = Prompter { round in
            kinds += round.prompts.map(\.kind)
            return round.prompts.map { _ in Secret("New-Passw0rd2") }
        }
        let user = try Principal(parsing: name, in: context)
        let credentials = try context.initialCredentials(for: user, password: Secret("Old-Passw0rd1"), options: options)
        #expect(kinds == [.newPassword, .newPasswordAgain])
        try verify(credentials, in: context)
        expectReason(.badPassword) { try login(name, "Old-Passw0rd1", in: context) }
        _ = try login(name, "New-Passw0rd2", in: context)
    }

    @Test("disabled and expired accounts are revoked (account-disabled); a wrong password for them says only bad-password")
    func disabledAndExpired() throws {
        let context = try ad.context()
        for user in ["DISABLED", "EXPIRED"] {
            let error = #expect(throws: KerberosError.self) { try login(ad["\(user)_USER"], ad["\(user)_PASSWORD"], in: context) }
            #expect(error?.reason == .accountDisabled, "\(user): \(String(describing: error))")
            #expect(error?.message.contains("revoked") == true, "\(user): \(String(describing: error))")
            expectReason(.badPassword) { try login(ad["\(user)_USER"], "Not-the-Passw0rd", in: context) }
        }
    }

    @Test("a keytab login uses the computer account WS1$; a host/ SPN is no client name to AD")
    func keytabLogin() throws {
        let context = try ad.context()
        let keytab = try Keytab(resolving: ad.hostKeytab, in: context)
        let computer = try Principal(parsing: ad["COMPUTER_PRINCIPAL"], in: context)
        let credentials = try context.initialCredentials(for: computer, keytab: keytab)
        #expect(try credentials.client.name() == ad["COMPUTER_PRINCIPAL"])
        try verify(credentials, in: context)
        let spn = try Principal(parsing: ad.hostPrincipal, in: context)
        expectReason(.unknownPrincipal) { try context.initialCredentials(for: spn, keytab: keytab) }
    }

    @Test("the keytab armors a FAST login (armor from WS1$)")
    func keytabArmor() throws {
        let context = try ad.context()
        var options = InitialCredentialsOptions()
        options.armor = .keytab(try Keytab(resolving: ad.hostKeytab, in: context), principal: try Principal(parsing: ad["COMPUTER_PRINCIPAL"], in: context))
        options.fastRequired = true
        let credentials = try context.initialCredentials(for: Principal(parsing: ad["USER"], in: context), password: Secret(ad["USER_PASSWORD"]), options: options)
        try verify(credentials, in: context)
    }
}

/// The library against Debian's Heimdal KDC (`Docker/ad/heimdal-realm.sh`).
@Suite("Heimdal KDC: the library", .onTestThreads)
struct HeimdalTests {
    let heimdal: ExternalRealm
    init() throws { heimdal = try ExternalRealm.heimdal() }

    private func login(_ name: String, _ password: String, in context: Context) throws -> Credentials {
        try context.initialCredentials(for: Principal(parsing: name, in: context), password: Secret(password))
    }

    @Test("a password login, verified with nofail against the host keytab")
    func passwordLogin() throws {
        let context = try heimdal.context()
        let credentials = try login(heimdal["USER"], heimdal["USER_PASSWORD"], in: context)
        #expect(try credentials.client.name() == "\(heimdal["USER"])@\(heimdal.realm)")
        #expect(credentials.flags.contains([.initial, .preAuthenticated]))
        try context.verify(credentials, options: VerificationOptions(
            server: try Principal(parsing: heimdal.hostPrincipal, in: context),
            keytab: try Keytab(resolving: heimdal.hostKeytab, in: context), nofail: true))
    }

    @Test("a wrong password fails with bad-password; an unknown user, and names in another case, with unknown-principal")
    func failures() throws {
        let context = try heimdal.context()
        expectReason(.badPassword) { try login(heimdal["USER"], "Not-the-Passw0rd", in: context) }
        expectReason(.unknownPrincipal) { try login("nobody-such-user", "x", in: context) }
        expectReason(.unknownPrincipal) { try login(heimdal["USER"].uppercased(), heimdal["USER_PASSWORD"], in: context) }
    }

    @Test("a disabled principal fails with account-disabled")
    func disabled() throws {
        let context = try heimdal.context()
        expectReason(.accountDisabled) { try login(heimdal["DISABLED_USER"], heimdal["DISABLED_PASSWORD"], in: context) }
    }

    @Test("the etype info Heimdal sends: AES256 with the default salt")
    func encryptionInfo() throws {
        let context = try heimdal.context()
        let info = try context.encryptionInfo(for: Principal(parsing: heimdal["USER"], in: context))
        #expect(info.encryptionType == .aes256CTSHMACSHA196)
        #expect(String(decoding: info.salt, as: UTF8.self) == "\(heimdal.realm)\(heimdal["USER"])")
    }
}
