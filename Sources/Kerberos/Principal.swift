package import CKrb5

/// A Kerberos principal name such as `alice@EXAMPLE.ORG` or `host/mail.example.org@EXAMPLE.ORG`.
///
/// Two principals are equal when their realms and components are (`krb5_principal_compare`); the name
/// type does not take part, as in krb5.
///
/// The corresponding C type is `krb5_principal`.
public final class Principal: Hashable, CustomStringConvertible {
    let context: Context
    package let raw: krb5_principal

    /// How ``init(parsing:in:options:)`` treats realms and enterprise names.
    public struct ParseOptions: OptionSet, Sendable {
        /// The `KRB5_PRINCIPAL_PARSE_*` bits handed to `krb5_parse_name_flags`.
        public let rawValue: Int32
        /// Options from raw `KRB5_PRINCIPAL_PARSE_*` bits.
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// Fail if the name holds a realm (`KRB5_PRINCIPAL_PARSE_NO_REALM`).
        public static let noRealm = ParseOptions(rawValue: Int32(KRB5_PRINCIPAL_PARSE_NO_REALM))
        /// Fail if the name holds no realm (`KRB5_PRINCIPAL_PARSE_REQUIRE_REALM`).
        public static let requireRealm = ParseOptions(rawValue: Int32(KRB5_PRINCIPAL_PARSE_REQUIRE_REALM))
        /// Parse as a single-component enterprise name, `user@domain@REALM` (`KRB5_PRINCIPAL_PARSE_ENTERPRISE`).
        public static let enterprise = ParseOptions(rawValue: Int32(KRB5_PRINCIPAL_PARSE_ENTERPRISE))
        /// Ignore a realm in the name (`KRB5_PRINCIPAL_PARSE_IGNORE_REALM`).
        public static let ignoreRealm = ParseOptions(rawValue: Int32(KRB5_PRINCIPAL_PARSE_IGNORE_REALM))
        /// Do not add the default realm (`KRB5_PRINCIPAL_PARSE_NO_DEF_REALM`).
        public static let noDefaultRealm = ParseOptions(rawValue: Int32(KRB5_PRINCIPAL_PARSE_NO_DEF_REALM))
    }

    /// How ``name(_:)`` writes the principal.
    public struct UnparseOptions: OptionSet, Sendable {
        /// The `KRB5_PRINCIPAL_UNPARSE_*` bits handed to `krb5_unparse_name_flags`.
        public let rawValue: Int32
        /// Options from raw `KRB5_PRINCIPAL_UNPARSE_*` bits.
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// Omit the realm when it is the default realm (`KRB5_PRINCIPAL_UNPARSE_SHORT`).
        public static let short = UnparseOptions(rawValue: Int32(KRB5_PRINCIPAL_UNPARSE_SHORT))
        /// Always omit the realm (`KRB5_PRINCIPAL_UNPARSE_NO_REALM`).
        public static let noRealm = UnparseOptions(rawValue: Int32(KRB5_PRINCIPAL_UNPARSE_NO_REALM))
        /// Do not quote special characters (`KRB5_PRINCIPAL_UNPARSE_DISPLAY`).
        public static let display = UnparseOptions(rawValue: Int32(KRB5_PRINCIPAL_UNPARSE_DISPLAY))
    }

    /// Takes ownership of `raw`, which is freed with `krb5_free_principal` when this object goes away.
    init(takingOwnershipOf raw: krb5_principal, context: Context) {
        self.raw = raw
        self.context = context
    }

    /// Copies `raw`; the caller keeps ownership of its pointer.
    init(copying raw: krb5_const_principal, context: Context) throws(KerberosError) {
        var copy: krb5_principal?
        try context.check(krb5_copy_principal(context.raw, raw, &copy))
        self.raw = copy!
        self.context = context
    }

    /// Parses a principal name; the default realm is added when the name has none.
    ///
    /// The corresponding C function is `krb5_parse_name_flags`.
    public convenience init(parsing name: String, in context: Context, options: ParseOptions = []) throws(KerberosError) {
        var principal: krb5_principal?
        try context.check(krb5_parse_name_flags(context.raw, name, options.rawValue, &principal), reason: .invalidRequest)
        self.init(takingOwnershipOf: principal!, context: context)
    }

    /// The principal for a service on a host, such as `host/mail.example.org@REALM`.
    ///
    /// `hostname` nil means this host. With `canonicalize` false the name is used as given
    /// (`KRB5_NT_UNKNOWN`); otherwise krb5 applies its host-name canonicalisation rules
    /// (`KRB5_NT_SRV_HST`). The corresponding C function is `krb5_sname_to_principal`.
    /// > Note: With `canonicalize`, krb5 may look the host name up in DNS (`dns_canonicalize_hostname`).
    public static func service(_ service: String = "host", hostname: String? = nil, in context: Context, canonicalize: Bool = true) throws(KerberosError) -> Principal {
        var principal: krb5_principal?
        let type = canonicalize ? KRB5_NT_SRV_HST : KRB5_NT_UNKNOWN
        try context.check(krb5_sname_to_principal(context.raw, hostname, service, Int32(type), &principal))
        return Principal(takingOwnershipOf: principal!, context: context)
    }

    /// The anonymous principal `WELLKNOWN/ANONYMOUS@realm`; with `realm` nil, the fully
    /// anonymous `WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS`.
    ///
    /// The name is parsed with `krb5_parse_name_flags` and given the name type `KRB5_NT_WELLKNOWN`.
    public static func anonymous(realm: String?, in context: Context) throws(KerberosError) -> Principal {
        let realmName = realm ?? KRB5_ANONYMOUS_REALMSTR
        let principal = try Principal(parsing: "\(KRB5_WELLKNOWN_NAMESTR)/\(KRB5_ANONYMOUS_PRINCSTR)@\(realmName)", in: context)
        principal.raw.pointee.type = Int32(KRB5_NT_WELLKNOWN)
        return principal
    }

    deinit {
        krb5_free_principal(context.raw, raw)
    }

    /// The name in krb5's string form.
    ///
    /// The corresponding C function is `krb5_unparse_name_flags`.
    public func name(_ options: UnparseOptions = []) -> String {
        (try? Principal.unparse(raw, options: options, in: context)) ?? "<unprintable principal>"
    }

    /// The full name with realm, such as `alice@EXAMPLE.ORG`.
    public var description: String { name() }

    /// The realm.
    public var realm: String { String(krb5Data: raw.pointee.realm) }

    /// The name components: `["host", "mail.example.org"]` for `host/mail.example.org@R`.
    public var components: [String] {
        (0..<Int(raw.pointee.length)).map { String(krb5Data: raw.pointee.data[$0]) }
    }

    /// The name type, such as ``NameType/principal`` or ``NameType/serviceHost``.
    public var nameType: NameType { NameType(rawValue: raw.pointee.type) }

    /// Whether the name components are `WELLKNOWN/ANONYMOUS`, in any realm (compared in Swift, no C call).
    public var isAnonymous: Bool {
        components == [KRB5_WELLKNOWN_NAMESTR, KRB5_ANONYMOUS_PRINCSTR]
    }

    /// Whether both name the same principal.
    ///
    /// The corresponding C function is `krb5_principal_compare`.
    public func matches(_ other: Principal) -> Bool {
        krb5_principal_compare(context.raw, raw, other.raw) != 0
    }

    /// Whether both name the same principal: the same realm and components (``matches(_:)``).
    public static func == (lhs: Principal, rhs: Principal) -> Bool {
        lhs === rhs || lhs.matches(rhs)
    }

    /// Hashes the realm and the components, the parts ``==(_:_:)`` compares.
    public func hash(into hasher: inout Hasher) {
        func combine(_ data: krb5_data) {
            hasher.combine(data.buffer.count)
            hasher.combine(bytes: data.buffer)
        }
        combine(raw.pointee.realm)
        for index in 0..<Int(raw.pointee.length) { combine(raw.pointee.data[index]) }
    }

    /// The kind of name a principal is (`krb5_principal.type`, a `KRB5_NT_*` number).
    public enum NameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        /// The type is not known (`KRB5_NT_UNKNOWN`).
        case unknown
        /// A user or a service named without a host (`KRB5_NT_PRINCIPAL`).
        case principal
        /// A service and another component, such as `krbtgt/REALM` (`KRB5_NT_SRV_INST`).
        case serviceInstance
        /// A service on a host, such as `host/mail.example.org` (`KRB5_NT_SRV_HST`).
        case serviceHost
        /// A service on a host with further components (`KRB5_NT_SRV_XHST`).
        case serviceExtendedHost
        /// A unique ID (`KRB5_NT_UID`).
        case uid
        /// An X.500 distinguished name (`KRB5_NT_X500_PRINCIPAL`).
        case x500
        /// An SMTP address (`KRB5_NT_SMTP_NAME`).
        case smtpName
        /// An enterprise name, `user@domain` as one component (`KRB5_NT_ENTERPRISE_PRINCIPAL`).
        case enterprise
        /// A well-known name such as `WELLKNOWN/ANONYMOUS` (`KRB5_NT_WELLKNOWN`).
        case wellKnown
        /// A number without a case here (such as Microsoft's negative types); ``init(rawValue:)`` never makes
        /// `.other` for a number that has a case.
        case other(Int32)

        private static let cases: [NameType] = [
            .unknown, .principal, .serviceInstance, .serviceHost, .serviceExtendedHost, .uid, .x500, .smtpName, .enterprise, .wellKnown,
        ]

        /// The type with `KRB5_NT_*` number `rawValue`.
        public init(rawValue: Int32) {
            self = Self.cases.first { $0.rawValue == rawValue } ?? .other(rawValue)
        }

        /// The `KRB5_NT_*` number.
        public var rawValue: Int32 {
            switch self {
            case .unknown: Int32(KRB5_NT_UNKNOWN)
            case .principal: Int32(KRB5_NT_PRINCIPAL)
            case .serviceInstance: Int32(KRB5_NT_SRV_INST)
            case .serviceHost: Int32(KRB5_NT_SRV_HST)
            case .serviceExtendedHost: Int32(KRB5_NT_SRV_XHST)
            case .uid: Int32(KRB5_NT_UID)
            case .x500: Int32(KRB5_NT_X500_PRINCIPAL)
            case .smtpName: Int32(KRB5_NT_SMTP_NAME)
            case .enterprise: Int32(KRB5_NT_ENTERPRISE_PRINCIPAL)
            case .wellKnown: Int32(KRB5_NT_WELLKNOWN)
            case .other(let value): value
            }
        }

        /// Equal when the numbers are.
        public static func == (lhs: NameType, rhs: NameType) -> Bool { lhs.rawValue == rhs.rawValue }

        /// Hashes the number.
        public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

        /// krb5's constant name without its prefix, such as `PRINCIPAL` or `SRV_HST`; the number for others.
        public var description: String {
            switch self {
            case .unknown: "UNKNOWN"
            case .principal: "PRINCIPAL"
            case .serviceInstance: "SRV_INST"
            case .serviceHost: "SRV_HST"
            case .serviceExtendedHost: "SRV_XHST"
            case .uid: "UID"
            case .x500: "X500_PRINCIPAL"
            case .smtpName: "SMTP_NAME"
            case .enterprise: "ENTERPRISE_PRINCIPAL"
            case .wellKnown: "WELLKNOWN"
            case .other(let value): "\(value)"
            }
        }
    }
}
