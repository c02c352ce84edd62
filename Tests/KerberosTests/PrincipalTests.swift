import Foundation
import Kerberos
import Testing

/// A context over a small configuration file, needing no KDC.
func offlineContext(realm: String = "OFFLINE.TEST") throws -> Context {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-offline-\(realm).conf").path
    try "[libdefaults]\n default_realm = \(realm)\n dns_lookup_kdc = false\n".write(toFile: path, atomically: true, encoding: .utf8)
    return try Context(.files(path))
}

@Suite("Principal, CredentialCache and Keytab without a KDC")
struct PrincipalTests {
    @Test("parsing adds the default realm and splits components")
    func parse() throws {
        let context = try offlineContext()
        let principal = try Principal(parsing: "host/mail.example.org", in: context)
        #expect(principal.name() == "host/mail.example.org@OFFLINE.TEST")
        #expect(principal.realm == "OFFLINE.TEST")
        #expect(principal.components == ["host", "mail.example.org"])
        #expect(principal.name(.noRealm) == "host/mail.example.org")
        #expect(principal.name(.short) == "host/mail.example.org")
    }

    @Test("parse flags: require-realm, no-realm and enterprise")
    func parseFlags() throws {
        let context = try offlineContext()
        #expect(throws: KerberosError.self) { try Principal(parsing: "alice", in: context, options: .requireRealm) }
        #expect(throws: KerberosError.self) { try Principal(parsing: "alice@OTHER", in: context, options: .noRealm) }
        let enterprise = try Principal(parsing: "alice@example.com", in: context, options: .enterprise)
        #expect(enterprise.components == ["alice@example.com"])
        #expect(enterprise.realm == "OFFLINE.TEST")
        #expect(try Principal(parsing: "a@OTHER", in: context).matches(Principal(parsing: "a@OTHER", in: context)))
    }

    @Test("the anonymous principal")
    func anonymous() throws {
        let context = try offlineContext()
        let anonymous = try Principal.anonymous(realm: nil, in: context)
        #expect(anonymous.name() == "WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS")
        #expect(anonymous.isAnonymous)
        #expect(try !Principal(parsing: "alice", in: context).isAnonymous)
    }

    @Test("a new MEMORY cache is initialised, reports its principal, lists nothing and is destroyed")
    func memoryCache() throws {
        let context = try offlineContext()
        let cache = try CredentialCache.newUnique(in: context)
        #expect(cache.name.hasPrefix("MEMORY:"))
        let alice = try Principal(parsing: "alice", in: context)
        try cache.initialize(for: alice)
        #expect(try cache.principal().name() == "alice@OFFLINE.TEST")
        #expect(try cache.credentials().isEmpty)
        let name = cache.name
        try cache.destroy()
        let again = try CredentialCache(resolving: name, in: context)
        #expect(throws: KerberosError.self) { try again.principal() }
    }

    @Test("a keytab that does not exist has no entries; a bad cache type is an error")
    func keytabAndBadNames() throws {
        let context = try offlineContext()
        let keytab = try Keytab(resolving: "FILE:/nonexistent/krb5.keytab", in: context)
        #expect(keytab.name == "FILE:/nonexistent/krb5.keytab")
        #expect(try keytab.entries().isEmpty)
        #expect(throws: KerberosError.self) { try CredentialCache(resolving: "NOSUCHTYPE:x", in: context) }
    }

    @Test("encryption type names round-trip through krb5")
    func enctypes() {
        #expect(EncryptionType(name: "aes256-cts") == .aes256CTSHMACSHA196)
        #expect(EncryptionType.aes128CTSHMACSHA196.description == "aes128-cts-hmac-sha1-96")
        #expect(EncryptionType(name: "no-such-enctype") == nil)
        #expect(TicketFlags([.forwardable, .renewable, .initial]).description == "FRI")
    }

    @Test("a configuration file that does not parse is a clear error")
    func badConfiguration() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-bad.conf").path
        try "[libdefaults\n default_realm = X\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: KerberosError.self) { try Context(.files(path)) }
    }
}
