import Kerberos
import KerberosEngine

/// The service's FAST armor: each worker keeps one armor cache per realm (a realm's KDC accepts only its own
/// armor), fetched through the engine with anonymous PKINIT or the keytab and renewed a minute before its
/// ticket expires; the FAST fallback (a login goes on unarmored when no armor can be had, unless FAST is
/// required); and dropping a cache that may be what failed.
///
/// The only armor code the login service uses: requests name the worker's cache (``cache(realm:in:)``), never
/// an armor source for krb5 to fetch.
struct ArmorProvider {
    let session: KerberosSession
    let configuration: LoginConfiguration

    /// Makes sure the worker holds a valid armor cache for `client`'s realm; returns whether there is one.
    ///
    /// Throws when no armor can be had and the login may not go on without (``Armor/proceedsUnarmored(after:fastRequired:)``).
    func prepare(for client: Principal) async throws(KerberosError) -> Bool {
        guard configuration.armor != .none else { return false }
        let key = ArmorCache.key(client.realm)
        let context = try session.context()
        if let cached = Self.cached(key, in: context), cached.cache != nil, cached.expires - .now > .seconds(60) { return true }
        do {
            try await fetch(for: client)
            return true
        } catch {
            guard Armor.proceedsUnarmored(after: error, fastRequired: configuration.fastRequired) else { throw error }
            return false
        }
    }

    /// Drops the worker's armor for `realm` (it may be what failed), so the next login fetches a fresh one.
    func discard(realm: String) {
        (try? session.context())?.discardReusable(ArmorCache.key(realm))
    }

    /// The worker's armor cache for `realm`, on the worker, if there is one.
    static func cache(realm: String, in context: Context) -> CredentialCache? {
        cached(ArmorCache.key(realm), in: context)?.cache
    }

    private static func cached(_ key: String, in context: Context) -> ArmorCache? {
        context.reusable(key, make: { ArmorCache(cache: nil, expires: KerberosTime(secondsSince1970: 0)) }) as ArmorCache?
    }

    /// Gets an armor TGT into a new MEMORY cache (the binding's ``Armor/ticketRequest(for:login:in:)``: krb5 fills
    /// it, with the KDC's `fast_avail` entry) and keeps it as the worker's armor for `client`'s realm.
    private func fetch(for client: Principal) async throws(KerberosError) {
        let configuration = self.configuration
        let realm = client.realm
        let request = try session.onWorker { context in
            let armor: Armor
            switch configuration.armor {
            case .anonymous:
                armor = .anonymousPKINIT
            case .keytab, .none:
                let keytab = try VerificationTarget.keytab(configuration, context)
                armor = .keytab(keytab, principal: try Self.armorPrincipal(configuration, in: keytab, realm: realm, context: context))
            }
            var login = InitialCredentialsOptions()
            login.preauthOptions = configuration.preauthOptions.map { ($0.name, $0.value) }
            return try armor.ticketRequest(for: client, login: login, in: context)
        }
        guard let request else { return }
        let credentials = try await session.initialCredentials(request.setup)
        let context = try session.context()
        context.discardReusable(ArmorCache.key(realm))
        _ = context.reusable(ArmorCache.key(realm)) { ArmorCache(cache: request.cache, expires: credentials.endTime) }
    }

    /// Whose TGT armors logins of `realm` with keytab armor: ``LoginConfiguration/armorPrincipal``, else the
    /// keytab's computer account of that realm (`NAME$@REALM`: Active Directory refuses service principals
    /// as clients), else its first entry of that realm, else its first entry.
    private static func armorPrincipal(_ configuration: LoginConfiguration, in keytab: Keytab, realm: String, context: Context) throws -> Principal {
        if let name = configuration.armorPrincipal { return try Principal(parsing: name, in: context) }
        let principals = try keytab.entries().map(\.principal)
        let ofRealm = principals.filter { $0.hasSuffix("@\(realm)") }
        let computer = ofRealm.first { $0.dropLast(realm.utf8.count + 1).hasSuffix("$") }
        guard let name = computer ?? ofRealm.first ?? principals.first else {
            throw KerberosError(code: -1765328203, message: "Keytab \(keytab.name) has no entries", reason: .invalidRequest)  // KRB5_KT_NOTFOUND
        }
        return try Principal(parsing: name, in: context)
    }
}

/// A worker's FAST armor cache and when its ticket expires.
final class ArmorCache {
    /// The reusable's key for `realm`'s armor.
    static func key(_ realm: String) -> String { "login.armor.\(realm)" }
    let cache: CredentialCache?
    let expires: KerberosTime
    init(cache: CredentialCache?, expires: KerberosTime) {
        self.cache = cache
        self.expires = expires
    }
}
