public import Kerberos
import KerberosEngine

/// How every login is performed: where krb5's configuration is, how the exchange is armored, which
/// keytab verifies the result, and the ticket options.
public struct LoginConfiguration: Sendable {
    /// Where FAST armor comes from.
    public enum ArmorSource: String, Sendable, CaseIterable {
        /// No armor (OTP is then unavailable: the KDC only offers it inside FAST).
        case none
        /// Anonymous PKINIT (`kinit -n`); the KDC certificate is checked against `pkinit_anchors`.
        case anonymous
        /// A TGT for the verification keytab's service principal, as SSSD does.
        case keytab
    }

    /// krb5's configuration files (`KRB5_CONFIG` equivalent).
    public var krb5: Context.Configuration
    /// The keytab that verifies logins; nil means krb5's default keytab.
    public var keytab: String?
    /// The service principal to verify against; nil means `host/<this host>` as krb5 canonicalises it.
    public var serverPrincipal: String?
    /// The realm appended to names that have none; nil means the default realm.
    public var realm: String?
    /// The realms whose principals may log in; names of any other realm are refused before any KDC is
    /// contacted. nil means the default realm, ``realm``, and every realm named in krb5.conf's `[realms]`.
    public var realms: [String]?
    /// Settings of their own for logins of some realms (a keytab, server principal or armor that the
    /// general ones do not cover), by realm name. ``applying(realm:)`` puts them in place.
    public var realmSettings: [String: RealmSettings] = [:]
    /// FAST armor for each login.
    public var armor: ArmorSource
    /// The keytab principal whose TGT armors logins when ``armor`` is `.keytab`; nil picks the keytab's
    /// computer account (`NAME$@REALM`, as Active Directory requires) of the login's realm, else its first
    /// entry of that realm, else its first entry.
    public var armorPrincipal: String?
    /// Fail closed when the exchange cannot be protected by FAST.
    public var fastRequired: Bool
    /// Verify credentials against the keytab. Only a flag whose name says "insecure" may turn this off.
    public var verify: Bool
    /// Requested ticket lifetime; nil leaves krb5.conf's default.
    public var ticketLifetime: Duration?
    /// Requested renewable lifetime; nil leaves krb5.conf's default.
    public var renewLifetime: Duration?
    /// Request forwardable tickets; nil leaves krb5.conf's default.
    public var forwardable: Bool?
    /// Pre-authentication options such as `X509_user_identity` for smart-card logins.
    public var preauthOptions: [PreauthOption]
    /// A credential cache (`FILE:/tmp/krb5cc_1000`, `KEYRING:…`) to receive the verified TGT, as pam-krb5
    /// leaves one for the session; nil keeps nothing.
    public var outputCache: String?
    /// Send the encrypted timestamp in the first request (MIT's optimistic preauth), saving the KDC one
    /// AS exchange per password login. MIT does not fall back by itself when the principal's salt is not the
    /// default one; the login then retries the normal exchange once and remembers the principal. Trade-off:
    /// that first attempt, and every wrong password, counts as a failed pre-authentication at the KDC
    /// (twice for a wrong password on such a principal), which matters under lockout policies.
    public var optimisticPreauth: Bool
    /// Password-only logins (``LoginService/verifyPassword(principal:password:)``, the saslauthd listener)
    /// learn each principal's encryption type and salt from the KDC once (an AS-REQ without pre-authentication,
    /// which counts no failure; the answer is trusted for 5 minutes) and then send the encrypted timestamp made with them in the first request: one AS
    /// exchange instead of two. For the AES-SHA1 enctypes the key is made in process with OpenSSL's PBKDF2
    /// (about twice as fast as libk5crypto's) and handed to krb5 through a private MEMORY keytab. A wrong
    /// password still counts once at the KDC; when it fails the learnt info is checked again, so a changed
    /// salt or enctype costs one more exchange, never a wrong answer.
    public var learnedPreauth: Bool
    /// When no TGT is kept (no ``outputCache``) and logins are verified, ask the AS directly for a ticket
    /// to the verification service instead of a TGT (`in_tkt_service`), so `krb5_verify_init_creds` needs
    /// no TGS exchange. The proof is the same: only the real KDC can make a ticket the keytab decrypts.
    public var directVerificationTicket: Bool
    /// The bound on one login, from its start to its answer (SSSD's `krb5_auth_timeout`). When it passes without
    /// an answer from the KDCs, the login fails as kdc-unreachable and its exchange is abandoned.
    public var loginTimeout: Duration = LoginConfiguration.defaultLoginTimeout
    /// The default ``loginTimeout``: 6 s, SSSD's default, which leaves room for the KDC's own RADIUS round trips
    /// of an OTP login.
    public static let defaultLoginTimeout: Duration = .seconds(6)
    /// Names of the form `user@suffix` are enterprise names (`KRB5_NT_ENTERPRISE_PRINCIPAL`, what
    /// `kinit -E` sends): the whole `user@suffix` is one name component, asked for in ``realm`` (or the
    /// default realm), and the KDC, which must canonicalize, maps it to the account. Active Directory's
    /// UPN logins (`carol@example.com` where example.com is a UPN suffix, not a realm) need this. A name
    /// whose suffix is the realm itself (`alice@AD.EXAMPLE`, any case) and a name without `@` are parsed as
    /// before; `user@suffix@REALM` names the realm. Implies ``canonicalize``.
    public var enterpriseNames: Bool
    /// Ask the KDC to canonicalize the client name (`krb5_get_init_creds_opt_set_canonicalize`, `kinit -C`):
    /// results then carry the account's own name (`alice@AD.EXAMPLE` for a login as `ALICE`).
    public var canonicalize: Bool

    /// What may differ for the logins of one realm; nil keeps the general setting.
    public struct RealmSettings: Sendable, Hashable {
        /// The keytab that verifies this realm's logins (and holds its keytab armor).
        public var keytab: String?
        /// The service principal this realm's logins are verified against.
        public var serverPrincipal: String?
        /// FAST armor for this realm's logins.
        public var armor: ArmorSource?
        /// The keytab principal whose TGT armors this realm's logins.
        public var armorPrincipal: String?

        /// Settings with the given members.
        public init(keytab: String? = nil, serverPrincipal: String? = nil, armor: ArmorSource? = nil, armorPrincipal: String? = nil) {
            self.keytab = keytab
            self.serverPrincipal = serverPrincipal
            self.armor = armor
            self.armorPrincipal = armorPrincipal
        }
    }

    /// This configuration as it applies to logins of `realm`: that realm's ``realmSettings`` over the
    /// general ones.
    public func applying(realm: String) -> LoginConfiguration {
        guard let settings = realmSettings[realm] else { return self }
        var configuration = self
        if let keytab = settings.keytab { configuration.keytab = keytab }
        if let server = settings.serverPrincipal { configuration.serverPrincipal = server }
        if let armor = settings.armor { configuration.armor = armor }
        if let principal = settings.armorPrincipal { configuration.armorPrincipal = principal }
        return configuration
    }

    /// One `krb5_get_init_creds_opt_set_pa` name and value.
    public struct PreauthOption: Sendable, Hashable {
        /// The option's name, such as `X509_user_identity`.
        public var name: String
        /// Its value, such as `PKCS11:module_name=…`.
        public var value: String
        /// An option with the given name and value.
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    /// A configuration with the given members; the defaults verify against krb5's default keytab, unarmored,
    /// with the one-exchange shortcuts for password-only logins on.
    public init(
        krb5: Context.Configuration = .default, keytab: String? = nil, serverPrincipal: String? = nil, realm: String? = nil,
        armor: ArmorSource = .none, fastRequired: Bool = false, verify: Bool = true,
        ticketLifetime: Duration? = nil, renewLifetime: Duration? = nil, forwardable: Bool? = nil,
        preauthOptions: [PreauthOption] = [], outputCache: String? = nil, optimisticPreauth: Bool = false,
        learnedPreauth: Bool = true, directVerificationTicket: Bool = true, realms: [String]? = nil, armorPrincipal: String? = nil,
        enterpriseNames: Bool = false, canonicalize: Bool = false
    ) {
        self.realms = realms
        self.armorPrincipal = armorPrincipal
        self.outputCache = outputCache
        self.krb5 = krb5
        self.keytab = keytab
        self.serverPrincipal = serverPrincipal
        self.realm = realm
        self.armor = armor
        self.fastRequired = fastRequired
        self.verify = verify
        self.ticketLifetime = ticketLifetime
        self.renewLifetime = renewLifetime
        self.forwardable = forwardable
        self.preauthOptions = preauthOptions
        self.optimisticPreauth = optimisticPreauth
        self.learnedPreauth = learnedPreauth
        self.directVerificationTicket = directVerificationTicket
        self.enterpriseNames = enterpriseNames
        self.canonicalize = canonicalize
    }
}
