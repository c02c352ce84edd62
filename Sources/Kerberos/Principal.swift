internal import CKrb5

/// A Kerberos principal name such as `alice@EXAMPLE.ORG` or `host/mail.example.org@EXAMPLE.ORG`.
///
/// The corresponding C type is `krb5_principal`.
public final class Principal: CustomStringConvertible {
    let context: Context
    let raw: krb5_principal

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
        var text: UnsafeMutablePointer<CChar>?
        guard krb5_unparse_name_flags(context.raw, raw, options.rawValue, &text) == 0, let text else {
            return "<unprintable principal>"
        }
        defer { krb5_free_unparsed_name(context.raw, text) }
        return String(cString: text)
    }

    /// The full name with realm, such as `alice@EXAMPLE.ORG`.
    public var description: String { name() }

    /// The realm.
    public var realm: String { string(raw.pointee.realm) }

    /// The name components: `["host", "mail.example.org"]` for `host/mail.example.org@R`.
    public var components: [String] {
        (0..<Int(raw.pointee.length)).map { string(raw.pointee.data[$0]) }
    }

    /// The name type (`KRB5_NT_PRINCIPAL` = 1, `KRB5_NT_SRV_HST` = 3, …).
    public var nameType: Int32 { raw.pointee.type }

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

    private func string(_ data: krb5_data) -> String {
        guard data.length > 0, let bytes = data.data else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: bytes, count: Int(data.length)), as: UTF8.self)
    }
}
