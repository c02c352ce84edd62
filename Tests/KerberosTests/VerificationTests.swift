import Kerberos
import TestRealm
import Testing

/// MIT's matrix from `src/lib/krb5/krb/t_vfy_increds.py`, plus the forged-KDC case.
@Suite("Verification against the host keytab", .onTestThreads)
struct VerificationTests {
    let realm: TestRealm
    init() throws { realm = try TestRealm.shared() }

    private func login(_ context: Context, password: String? = nil) throws -> Credentials {
        let alice = try Principal(parsing: realm["USER"], in: context)
        return try context.initialCredentials(for: alice, password: Secret(password ?? realm["USER_PASSWORD"]))
    }

    private func options(_ context: Context, keytab: String, server: String? = nil, nofail: Bool = true) throws -> VerificationOptions {
        VerificationOptions(
            server: try server.map { try Principal(parsing: $0, in: context) },
            keytab: try Keytab(resolving: keytab, in: context),
            nofail: nofail)
    }

    @Test("the right keytab passes, with and without nofail, named server or any host key")
    func rightKeytab() throws {
        let context = try realm.context()
        for nofail in [true, false] {
            try context.verify(login(context), options: options(context, keytab: realm["HOST_KEYTAB"], server: realm["LOCALHOST_PRINCIPAL"], nofail: nofail))
        }
        try context.verify(login(context), options: options(context, keytab: realm["HOST_KEYTAB"]))
    }

    @Test("a ticket is for the server krb5 names byte for byte: krbtgt with a KELVIN SIGN in its realm, equal as a Swift String, is another server")
    func ticketServerComparedAsBytes() throws {
        let context = try realm.context()
        let ticket = try login(context)
        let krbtgt = "krbtgt/\(realm.realm)@\(realm.realm)"
        let kelvin = "krbtgt/\u{212A}\(realm.realm.dropFirst())@\(realm.realm)"
        #expect(realm.realm.hasPrefix("K") && kelvin == krbtgt, "what Swift's String does")
        #expect(ticket.isTicket(for: try Principal(parsing: krbtgt, in: context)))
        #expect(!ticket.isTicket(for: try Principal(parsing: kelvin, in: context)))
    }

    @Test("no keytab fails with nofail (the default) and passes without it")
    func missingKeytab() throws {
        let context = try realm.context()
        let missing = realm.directory + "/no-such.keytab"
        expectReason(.verificationFailed) {
            try context.verify(login(context), options: options(context, keytab: missing, server: realm["LOCALHOST_PRINCIPAL"]))
        }
        try context.verify(login(context), options: options(context, keytab: missing, server: realm["LOCALHOST_PRINCIPAL"], nofail: false))
    }

    @Test("an empty keytab fails with nofail and passes without it")
    func emptyKeytab() throws {
        let context = try realm.context()
        expectReason(.verificationFailed) {
            try context.verify(login(context), options: options(context, keytab: realm["EMPTY_KEYTAB"]))
        }
        try context.verify(login(context), options: options(context, keytab: realm["EMPTY_KEYTAB"], nofail: false))
    }

    @Test("a stale host key fails either way")
    func staleKey() throws {
        let context = try realm.context()
        for nofail in [true, false] {
            expectReason(.verificationFailed) {
                try context.verify(login(context), options: options(context, keytab: realm["STALE_KEYTAB"], server: realm["LOCALHOST_PRINCIPAL"], nofail: nofail))
            }
        }
    }

    @Test("a keytab for another service fails with nofail")
    func otherServiceKeytab() throws {
        let context = try realm.context()
        expectReason(.verificationFailed) {
            try context.verify(login(context), options: options(context, keytab: realm["OTHER_KEYTAB"], server: realm["LOCALHOST_PRINCIPAL"]))
        }
    }

    @Test("credentials from a rogue KDC of the same realm fail verification")
    func rogueKDC() throws {
        let rogue = try realm.rogueContext()
        let forged = try login(rogue, password: realm["ROGUE_PASSWORD"])
        #expect(try forged.client.name() == "\(realm["USER"])@\(realm.realm)", "the rogue KDC does hand out a TGT")
        expectReason(.verificationFailed) {
            try rogue.verify(forged, options: options(rogue, keytab: realm["HOST_KEYTAB"], server: realm["LOCALHOST_PRINCIPAL"]))
        }
        expectReason(.verificationFailed) {
            try rogue.verify(forged, options: options(rogue, keytab: realm["HOST_KEYTAB"]))
        }
    }
}
