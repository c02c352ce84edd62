package import CKrb5

/// A credential cache (ccache): where tickets live between programs, such as `FILE:/tmp/krb5cc_1000`,
/// `KEYRING:persistent:1000` or a process-private `MEMORY:` cache.
///
/// The corresponding C type is `krb5_ccache`; caches may be shared between threads by name, but
/// this handle belongs to its context's thread.
public final class CredentialCache {
    let context: Context
    package let raw: krb5_ccache

    init(takingOwnershipOf raw: krb5_ccache, context: Context) {
        self.raw = raw
        self.context = context
    }

    /// Resolves a cache by name (`TYPE:residual`), without creating it.
    ///
    /// The corresponding C function is `krb5_cc_resolve`.
    public convenience init(resolving name: String, in context: Context) throws(KerberosError) {
        var cache: krb5_ccache?
        try context.check(krb5_cc_resolve(context.raw, name, &cache), reason: .invalidRequest)
        self.init(takingOwnershipOf: cache!, context: context)
    }

    /// The default cache (`KRB5CCNAME` or the configuration's `default_ccache_name`).
    ///
    /// The corresponding C function is `krb5_cc_default`.
    public static func `default`(in context: Context) throws(KerberosError) -> CredentialCache {
        var cache: krb5_ccache?
        try context.check(krb5_cc_default(context.raw, &cache))
        return CredentialCache(takingOwnershipOf: cache!, context: context)
    }

    /// A new cache of `type` with a unique name, private to this process for `MEMORY`.
    ///
    /// The corresponding C function is `krb5_cc_new_unique`.
    public static func newUnique(type: String = "MEMORY", in context: Context) throws(KerberosError) -> CredentialCache {
        var cache: krb5_ccache?
        try context.check(krb5_cc_new_unique(context.raw, type, nil, &cache))
        return CredentialCache(takingOwnershipOf: cache!, context: context)
    }

    /// Closes the handle; the cache itself stays (see ``destroy()``).
    deinit {
        if !destroyed { krb5_cc_close(context.raw, raw) }
    }

    private var destroyed = false

    /// The full name, `TYPE:residual`.
    ///
    /// The corresponding C functions are `krb5_cc_get_type` and `krb5_cc_get_name`.
    public var name: String {
        let type = krb5_cc_get_type(context.raw, raw).map { String(cString: $0) } ?? "FILE"
        let residual = krb5_cc_get_name(context.raw, raw).map { String(cString: $0) } ?? ""
        return "\(type):\(residual)"
    }

    /// Empties the cache and records `principal` as its owner.
    ///
    /// The corresponding C function is `krb5_cc_initialize`.
    public func initialize(for principal: Principal) throws(KerberosError) {
        try context.check(krb5_cc_initialize(context.raw, raw, principal.raw))
    }

    /// Adds credentials to the cache.
    ///
    /// The corresponding C function is `krb5_cc_store_cred`.
    public func store(_ credentials: Credentials) throws(KerberosError) {
        try context.check(krb5_cc_store_cred(context.raw, raw, &credentials.raw))
    }

    /// The cache's principal.
    ///
    /// The corresponding C function is `krb5_cc_get_principal`.
    public func principal() throws(KerberosError) -> Principal {
        var principal: krb5_principal?
        try context.check(krb5_cc_get_principal(context.raw, raw, &principal))
        return Principal(takingOwnershipOf: principal!, context: context)
    }

    /// The credentials in the cache, in order, as `klist` lists them (configuration entries skipped).
    ///
    /// The corresponding C functions are `krb5_cc_start_seq_get`, `krb5_cc_next_cred` and `krb5_cc_end_seq_get`.
    public func credentials() throws(KerberosError) -> [Credentials] {
        var cursor: krb5_cc_cursor?
        try context.check(krb5_cc_start_seq_get(context.raw, raw, &cursor))
        defer { krb5_cc_end_seq_get(context.raw, raw, &cursor) }
        var result: [Credentials] = []
        while true {
            var creds = krb5_creds()
            let code = krb5_cc_next_cred(context.raw, raw, &cursor, &creds)
            if code == KRB5_CC_END { break }
            try context.check(code)
            if krb5_is_config_principal(context.raw, creds.server) != 0 {
                krb5_free_cred_contents(context.raw, &creds)
                continue
            }
            result.append(Credentials(takingOwnershipOf: creds, context: context))
        }
        return result
    }

    /// Destroys the cache and its contents; the handle is closed too.
    ///
    /// The corresponding C function is `krb5_cc_destroy`.
    public func destroy() throws(KerberosError) {
        guard !destroyed else { return }
        destroyed = true
        try context.check(krb5_cc_destroy(context.raw, raw))
    }
}
