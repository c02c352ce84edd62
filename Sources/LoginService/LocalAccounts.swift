import Kerberos
import KerberosSecrets
import Synchronization

/// The host's rules from principals to local accounts, read from the login's krb5 configuration: the account a
/// principal's name maps to (`auth_to_local`), and whether a verified principal may log in as an account (the
/// account's `.k5login`, else the mapping). The rules read only the loaded configuration, so an event loop may ask.
public final class LocalAccounts: Sendable {
    private let context: Mutex<Context>
    /// The names ``localName(of:)`` answered, bounded as ``LoginService``'s resolved names.
    private let known = Locked<[String: String?]>([:])
    private static let kept = LoginService.resolvedNamesKept.count

    /// The rules of `configuration`'s krb5 files; throws when they cannot be read.
    public init(configuration: LoginConfiguration) throws {
        context = Mutex(try Context(configuration.krb5))
    }

    /// The local account name `principal` maps to under the realm's `auth_to_local` rules (by default the name
    /// without the default realm), or nil when no rule maps it or the name does not parse.
    ///
    /// The corresponding C function is `krb5_aname_to_localname`.
    public func localName(of principal: String) -> String? {
        if let name = known.withLock({ $0[principal] }) { return name }
        let name = context.withLock { context -> String? in
            (try? Principal(parsing: principal, in: context))?.localName()
        }
        known.withLock { known in
            if known.count >= Self.kept { known.removeAll(keepingCapacity: true) }
            known[principal] = .some(name)
        }
        return name
    }

    /// Whether `principal`, already verified, may log in as the local account `user`: listed in the account's
    /// `.k5login` when it has one, else mapped to `user` by the `auth_to_local` rules. An account that does not
    /// exist is never authorized. Throws when `principal` does not parse.
    ///
    /// The corresponding C function is `krb5_kuserok`.
    public func authorizes(_ principal: String, asLocalUser user: String) throws -> Bool {
        try context.withLock { context in
            try Principal(parsing: principal, in: context).isAuthorized(asLocalUser: user)
        }
    }
}
