import Kerberos
import KerberosEngine
public import LoginProtocol

/// The checks every login name passes before any KDC is contacted, on every front end: the name is
/// parsed as krb5 parses it (the configured realm added when it names none), `WELLKNOWN/ANONYMOUS` is
/// refused, and so is any realm outside the allow-list.
///
/// The canonical spelling, `name@REALM` as `krb5_unparse_name` writes it, is what the daemon's throttle
/// and the result cache key on: `alice`, `a\lice` and `alice@REALM` are one principal to krb5, and one
/// key here.
struct LoginNames: Sendable {
    /// The realms whose principals may log in.
    let allowedRealms: Set<String>
    /// ``allowedRealms`` as bytes, which the check compares: to `Set<String>`, `\u{212A}RB5.TEST` (KELVIN SIGN)
    /// is `KRB5.TEST`, to krb5 it is another realm.
    private let allowedRealmBytes: Set<ExactName>
    /// The realm added to names that have none (nil: krb5's default realm).
    let realm: String?
    /// `user@suffix` names are enterprise names (``LoginConfiguration/enterpriseNames``).
    let enterpriseNames: Bool

    /// The allow-list ``LoginConfiguration/realms``, or when that is nil the default realm, the
    /// configured realm and every realm named in krb5.conf's `[realms]` section.
    init(configuration: LoginConfiguration, context: Context) throws(KerberosError) {
        realm = configuration.realm
        enterpriseNames = configuration.enterpriseNames
        var realms: [String]
        if let listed = configuration.realms {
            realms = listed
        } else {
            realms = try context.configuredRealms()
            if let realm = try? context.defaultRealm() { realms.append(realm) }
            if let realm = configuration.realm { realms.append(realm) }
        }
        allowedRealms = Set(realms)
        allowedRealmBytes = Set(realms.map(ExactName.init))
    }

    /// The principal `name` stands for, or the refusal that ends the login before any KDC exchange.
    func client(_ name: String, in context: Context) throws(LoginRefusal) -> Principal {
        guard !name.isEmpty else {
            throw LoginRefusal(.failed(.invalidRequest, "The principal is empty", principal: name))
        }
        let principal: Principal
        do throws(KerberosError) {
            if enterpriseNames, let enterprise = try enterprisePrincipal(name, in: context) {
                principal = enterprise
            } else if let realm, !Self.hasRealm(name) {
                principal = try Principal(parsing: "\(name)@\(realm)", in: context)
            } else {
                principal = try Principal(parsing: name, in: context)
            }
        } catch {
            throw LoginRefusal(.failed(.invalidRequest, "Not a principal name: \(error.message)", principal: name))
        }
        if principal.isAnonymous {
            // Anonymous PKINIT proves nothing about a person; MIT's KDC would hand out such a ticket.
            throw LoginRefusal(.failed(.badCredentials, "Anonymous logins are refused", principal: name))
        }
        guard allowedRealmBytes.contains(ExactName(principal.realm)) else {
            throw LoginRefusal(.failed(.unknownPrincipal, "Realm \(principal.realm) is not one this service logs in to", principal: name))
        }
        return principal
    }

    /// `user@suffix` (or `user@suffix@REALM`) as an NT-ENTERPRISE name in the configured or default realm;
    /// nil for a name without `@`, with other escapes, or whose suffix is the realm itself: those stay ordinary
    /// names. `user\@suffix@REALM`, the form `krb5_unparse_name` gives an enterprise name (and ``LoginService/resolve(_:)``
    /// hands back), is the same name.
    private func enterprisePrincipal(_ typed: String, in context: Context) throws(KerberosError) -> Principal? {
        let name = typed.replacing("\\@", with: "@")
        let parts = name.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty, !name.contains("\\") else { return nil }
        if parts.count == 2, let realm = realm ?? (try? context.defaultRealm()),
           ExactName(String(parts[1])).asciiCaseFolded == ExactName(realm).asciiCaseFolded { return nil }
        var qualified = name
        if parts.count == 2, let realm { qualified += "@\(realm)" }
        return try Principal(parsing: qualified, in: context, options: .enterprise)
    }
}

/// What a login name stands for, or why it is refused before any KDC exchange (``LoginService/resolve(_:)``).
public enum ResolvedName: Sendable {
    /// The canonical principal name, `name@REALM` as `krb5_unparse_name` writes it.
    case principal(String)
    /// Refused: the answer to give.
    case refused(LoginResult)
}

/// A login refused before, or instead of, a KDC exchange; carries the answer to give.
struct LoginRefusal: Error {
    let result: LoginResult
    init(_ result: LoginResult) { self.result = result }
}
