import Foundation
import Kerberos
import KerberosEngine
import TestRealm
import Testing

@Suite("Initial credentials against the live MIT KDC", .onTestThreads)
struct InitialCredentialsTests {
    let realm: TestRealm
    init() throws { realm = try TestRealm.shared() }

    @Test("a password login returns a TGT for the user")
    func passwordLogin() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        let credentials = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]))
        #expect(try credentials.client.name() == "\(realm["USER"])@\(realm.realm)")
        #expect(credentials.server == "krbtgt/\(realm.realm)@\(realm.realm)")
        #expect(credentials.isTicketGrantingTicket)
        #expect(credentials.flags.contains(.initial))
        #expect(!credentials.flags.contains(.preAuthenticated), "alice is made as addprinc makes users: no preauth")
        #expect(credentials.endTime > .now)
        let palice = try Principal(parsing: realm["PREAUTH_USER"], in: context)
        let preauthenticated = try context.initialCredentials(for: palice, password: Secret(realm["PREAUTH_PASSWORD"]))
        #expect(preauthenticated.flags.contains([.initial, .preAuthenticated]))
    }

    @Test("a wrong password fails with bad-password")
    func wrongPassword() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        expectReason(.badPassword) {
            try context.initialCredentials(for: alice, password: Secret("not the password"))
        }
    }

    @Test("an unknown user fails with unknown-principal")
    func unknownUser() throws {
        let context = try realm.context()
        let nobody = try Principal(parsing: "nobody-such-user", in: context)
        expectReason(.unknownPrincipal) {
            try context.initialCredentials(for: nobody, password: Secret("x"))
        }
    }

    @Test("a disabled user fails with account-disabled")
    func disabledUser() throws {
        let context = try realm.context()
        let user = try Principal(parsing: realm["DISABLED_USER"], in: context)
        expectReason(.accountDisabled) {
            try context.initialCredentials(for: user, password: Secret(realm["DISABLED_PASSWORD"]))
        }
    }

    @Test("options show in the ticket: lifetime clamped by the KDC, renewable, forwardable, proxiable, addressless")
    func optionsInTicket() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var options = InitialCredentialsOptions()
        options.ticketLifetime = .seconds(20 * 3600)
        options.renewLifetime = .seconds(2 * 86400)
        options.forwardable = true
        options.proxiable = true
        options.addresses = .addressless
        let credentials = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: options)
        let lifetime = credentials.endTime - credentials.startTime
        #expect(lifetime <= .seconds(10 * 3600 + 5), "the realm's max_life of 10 h clamps the 20 h request")
        #expect(lifetime > .seconds(9 * 3600))
        #expect(credentials.flags.contains([.forwardable, .proxiable, .renewable]))
        let renewTill = try #require(credentials.renewTill)
        #expect(abs(renewTill.secondsSince1970 - credentials.startTime.secondsSince1970 - 2 * 86400) < 10)
        #expect(credentials.addressCount == 0)

        var plain = InitialCredentialsOptions()
        plain.forwardable = false
        plain.proxiable = false
        plain.ticketLifetime = .seconds(3600)
        let short = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: plain)
        #expect(!short.flags.contains(.forwardable))
        #expect(!short.flags.contains(.proxiable))
        #expect(abs(short.endTime.secondsSince1970 - short.startTime.secondsSince1970 - 3600) < 5)
    }

    @Test("the etype list chooses the session key type")
    func etypeList() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var options = InitialCredentialsOptions()
        options.encryptionTypes = [.aes128CTSHMACSHA196]
        let credentials = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: options)
        #expect(credentials.sessionKeyType == .aes128CTSHMACSHA196)
    }

    @Test("optimistic preauth (preauth list) still logs in")
    func optimisticPreauth() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var options = InitialCredentialsOptions()
        options.preauthTypes = [.encryptedTimestamp]
        let credentials = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: options)
        #expect(credentials.flags.contains(.preAuthenticated))
    }

    @Test("the out-ccache holds the TGT and lists it like klist")
    func outCache() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        let cache = try CredentialCache.newUnique(in: context)
        var options = InitialCredentialsOptions()
        options.outCache = cache
        _ = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: options)
        #expect(try cache.principal().name() == "\(realm["USER"])@\(realm.realm)")
        let listed = try cache.credentials()
        #expect(listed.count == 1)
        #expect(listed.first?.server == "krbtgt/\(realm.realm)@\(realm.realm)")
        try cache.destroy()
    }

    @Test("a keytab login gets a TGT for the keytab's principal")
    func keytabLogin() throws {
        let context = try realm.context()
        let keytab = try Keytab(resolving: realm["CLIENT_KEYTAB"], in: context)
        #expect(try keytab.entries().contains { $0.principal.hasPrefix(realm["KEYTAB_CLIENT"] + "@") })
        let client = try Principal(parsing: realm["KEYTAB_CLIENT"], in: context)
        let credentials = try context.initialCredentials(for: client, keytab: keytab)
        #expect(try credentials.client.name() == "\(realm["KEYTAB_CLIENT"])@\(realm.realm)")
    }

    @Test("a prompter that throws cancels the login with its own error")
    func throwingPrompter() throws {
        struct UserWalkedAway: Error {}
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var options = InitialCredentialsOptions()
        options.prompter = Prompter { _ in throw UserWalkedAway() }
        #expect(throws: UserWalkedAway.self) {
            try context.initialCredentials(for: alice, password: nil, options: options)
        }
    }

    @Test("the prompter is asked for the password when none is given")
    func prompterPassword() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var seen: [Prompt] = []
        var options = InitialCredentialsOptions()
        let password = realm["USER_PASSWORD"]
        options.prompter = Prompter { round in
            seen += round.prompts
            return round.prompts.map { _ in Secret(password) }
        }
        _ = try context.initialCredentials(for: alice, password: nil, options: options)
        #expect(seen.count == 1)
        #expect(seen.first?.kind == .password)
        #expect(seen.first?.hidden == true)
        #expect(seen.first?.text.contains(realm["USER"]) == true)
    }

    @Test("an expired password is changed through the prompter; then the old one fails and the new one works")
    func expiredPasswordChange() throws {
        let name = try realm.addPrincipal(prefix: "expiring", password: "OldPassw0rd!", attributes: ["+needchange"])
        let context = try realm.context()
        let user = try Principal(parsing: name, in: context)
        var kinds: [Prompt.Kind] = []
        var options = InitialCredentialsOptions()
        options.prompter = Prompter { round in
            kinds += round.prompts.map(\.kind)
            return round.prompts.map { _ in Secret("NewPassw0rd!2") }
        }
        let credentials = try context.initialCredentials(for: user, password: Secret("OldPassw0rd!"), options: options)
        #expect(try credentials.client.name().hasPrefix(name + "@"))
        #expect(kinds == [.newPassword, .newPasswordAgain])
        expectReason(.badPassword) {
            try context.initialCredentials(for: user, password: Secret("OldPassw0rd!"))
        }
        _ = try context.initialCredentials(for: user, password: Secret("NewPassw0rd!2"))
    }

    @Test("an expired password without a prompter fails with password-expired")
    func expiredWithoutPrompter() throws {
        let name = try realm.addPrincipal(prefix: "expired", password: "OldPassw0rd!", attributes: ["+needchange"])
        let context = try realm.context()
        let user = try Principal(parsing: name, in: context)
        expectReason(.passwordExpired) {
            try context.initialCredentials(for: user, password: Secret("OldPassw0rd!"))
        }
    }

    @Test("the expire callback reports a password expiry the KDC announces")
    func expireCallback() throws {
        let name = try realm.addPrincipal(prefix: "pwexp", password: "Passw0rd!", attributes: ["-pwexpire", "3 days"])
        let context = try realm.context()
        let user = try Principal(parsing: name, in: context)
        var reported: PasswordExpiry?
        var options = InitialCredentialsOptions()
        options.expireCallback = { reported = $0 }
        _ = try context.initialCredentials(for: user, password: Secret("Passw0rd!"), options: options)
        let expiry = try #require(reported?.passwordExpiration)
        #expect(expiry > .now + .seconds(2 * 86400))
        #expect(expiry < .now + .seconds(4 * 86400))
    }

    @Test("an unreachable KDC fails with kdc-unreachable, quickly")
    func unreachableKDC() throws {
        let path = realm.directory + "/krb5-unreachable.conf"
        try """
        [libdefaults]
         default_realm = \(realm.realm)
         dns_lookup_kdc = false
        [realms]
         \(realm.realm) = {
          kdc = 127.0.0.1:9
         }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let context = try Context(.files(path))
        let alice = try Principal(parsing: realm["USER"], in: context)
        let start = Date()
        expectReason(.kdcUnreachable) {
            try context.initialCredentials(for: alice, password: Secret("x"))
        }
        #expect(Date().timeIntervalSince(start) < 15)
    }

    @Test("the async executor runs logins on its own threads")
    func executor() async throws {
        let executor = try KerberosExecutor(threads: 2, configuration: .files(realm.configFile))
        let user = realm["USER"]
        let password = realm["USER_PASSWORD"]
        let clients = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    try await executor.run { context in
                        let principal = try Principal(parsing: user, in: context)
                        return try context.initialCredentials(for: principal, password: Secret(password)).client.name()
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(clients.count == 6)
        #expect(Set(clients) == ["\(user)@\(realm.realm)"])
        await executor.shutdown()
        await #expect(throws: KerberosError.self) { try await executor.run { _ in 1 } }
    }
}

