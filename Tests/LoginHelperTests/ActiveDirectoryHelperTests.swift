import Foundation
import TestRealm
import Testing

/// `krb5-login` as a process against a Samba AD DC: line and pam-exec modes as PAM stacks use them, and the
/// conversation mode for a password that must be changed.
@Suite("krb5-login against Active Directory (Samba AD DC)", .onTestThreads)
struct ActiveDirectoryHelperTests {
    let ad: ExternalRealm
    let binary = TestRealm.executable("krb5-login")
    init() throws { ad = try ExternalRealm.activeDirectory() }

    /// The realm's configuration, the WS1$ keytab and its host/ SPN for verification.
    var base: [String] {
        [binary] + ad.helperFlags()
    }

    func line(_ principal: String, _ password: String, _ extra: [String] = []) throws -> (status: Int32, output: String) {
        try TestRealm.run(base + extra, input: "\(principal)\n\(password)\n")
    }

    func pamExec(_ user: String, _ password: String, _ extra: [String] = []) throws -> (status: Int32, output: String) {
        // The AD test users have no local accounts, so krb5_kuserok would refuse them (as pam-krb5 would):
        // authorization is proven against real .k5login files in PAMExecTests; here only the login is.
        try TestRealm.run(base + ["--pam-exec", "--no-authorize"] + extra, environment: ["PAM_USER": user, "PAM_TYPE": "auth", "PAM_SERVICE": "login"],
                          inputBytes: Array(password.utf8) + [0])
    }

    /// The client principal of the TGT `krb5-login --ccache` left behind.
    func cachedPrincipal(_ run: (String) throws -> (status: Int32, output: String)) throws -> String? {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("krb5cc-ad-\(TestRealm.uniqueName("h"))").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try run("FILE:\(path)")
        guard result.status == 0 else { Issue.record("login failed: \(result.output)"); return nil }
        let klist = try TestRealm.run(["klist", "-c", "FILE:\(path)"], environment: ["KRB5_CONFIG": ad.configFile])
        return klist.output.split(separator: "\n").first { $0.hasPrefix("Default principal: ") }.map { String($0.dropFirst(19)) }
    }

    @Test("line mode: the plain user logs in (exit 0); a wrong password exits 1")
    func lineMode() throws {
        let ok = try line(ad["USER"], ad["USER_PASSWORD"])
        #expect(ok.status == 0, "\(ok.output)")
        let denied = try line(ad["USER"], "Not-the-Passw0rd1")
        #expect(denied.status == 1)
        #expect(denied.output.contains("bad-credentials"))
    }

    @Test("pam-exec mode: the plain user, ALICE, the renamed account; a wrong password exits 1")
    func pamExecMode() throws {
        #expect(try pamExec(ad["USER"], ad["USER_PASSWORD"]).status == 0)
        #expect(try pamExec(ad["USER"].uppercased(), ad["USER_PASSWORD"]).status == 0)
        #expect(try pamExec(ad["RENAMED_USER"], ad["RENAMED_PASSWORD"]).status == 0)
        #expect(try pamExec(ad["USER"], "Not-the-Passw0rd1").status == 1)
    }

    @Test("--canonicalize: ALICE's ticket is alice@AD.EXAMPLE; without it, ALICE@AD.EXAMPLE")
    func canonicalize() throws {
        let upper = ad["USER"].uppercased()
        let canonical = try cachedPrincipal { try line(upper, ad["USER_PASSWORD"], ["--canonicalize", "--ccache", $0]) }
        #expect(canonical == "\(ad["USER"])@\(ad.realm)")
        let asked = try cachedPrincipal { try line(upper, ad["USER_PASSWORD"], ["--ccache", $0]) }
        #expect(asked == "\(upper)@\(ad.realm)")
    }

    @Test("--enterprise-names: the UPN logs in, in line and pam-exec modes, as the account; without it, it cannot")
    func enterpriseUPN() throws {
        #expect(try line(ad["UPN"], ad["UPN_PASSWORD"], ["--enterprise-names"]).status == 0)
        #expect(try pamExec(ad["UPN"], ad["UPN_PASSWORD"], ["--enterprise-names"]).status == 0)
        #expect(try pamExec(ad["UPN"], "Not-the-Passw0rd1", ["--enterprise-names"]).status == 1)
        let principal = try cachedPrincipal { try line(ad["UPN"], ad["UPN_PASSWORD"], ["--enterprise-names", "--ccache", $0]) }
        #expect(principal == "\(ad["UPN_USER"])@\(ad.realm)")
        #expect(try line(ad["UPN"], ad["UPN_PASSWORD"]).status != 0)
    }

    @Test("disabled and expired accounts exit 1 with account-disabled")
    func disabledAndExpired() throws {
        for user in ["DISABLED", "EXPIRED"] {
            let result = try pamExec(ad["\(user)_USER"], ad["\(user)_PASSWORD"])
            #expect(result.status == 1, "\(user): \(result.output)")
            #expect(result.output.contains("account-disabled"), "\(user): \(result.output)")
        }
    }

    @Test("must change at next logon: pam-exec cannot answer and fails; the conversation mode changes it at the DC")
    func mustChange() throws {
        let user = try ad.addUser(prefix: "hchg", password: "Old-Passw0rd1", options: ["must-change"])
        let refused = try pamExec(user, "Old-Passw0rd1")
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("password has expired and must be changed"), "\(refused.output)")
        let input = """
        {"type":"login","principal":"\(user)","password":"Old-Passw0rd1"}
        {"type":"answers","id":1,"answers":{"new-password":"New-Passw0rd-7","new-password-again":"New-Passw0rd-7"}}

        """
        let changed = try TestRealm.run(base + ["--conversation"], input: input)
        #expect(changed.status == 0, "\(changed.output)")
        #expect(changed.output.contains(#""kind":"new-password""#))
        #expect(!changed.output.contains("New-Passw0rd-7"))
        #expect(try pamExec(user, "New-Passw0rd-7").status == 0)
        #expect(try pamExec(user, "Old-Passw0rd1").status == 1)
    }

    @Test("verification with nofail: a keytab without the SPN's key fails the login")
    func verificationNofail() throws {
        let result = try TestRealm.run([binary] + ad.helperFlags(keytab: ad.directory + "/no-such.keytab"), input: "\(ad["USER"])\n\(ad["USER_PASSWORD"])\n")
        #expect(result.status != 0)
        #expect(result.output.contains("verification-failed"), "\(result.output)")
    }
}
