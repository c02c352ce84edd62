package import CKrb5

/// A krb5 library context: configuration, default realm and per-thread error state.
///
/// MIT krb5 allows a context to be used by one thread at a time (`doc/threads.txt`). `Context` is
/// therefore not `Sendable`: create one per thread, or let `KerberosExecutor` give each of its
/// dedicated threads its own. Objects made from a context (principals, caches, keytabs,
/// credentials) keep it alive and share its thread.
///
/// The corresponding C type is `krb5_context`.
public final class Context {
    package let raw: krb5_context

    /// Where a context reads its configuration.
    public struct Configuration: Sendable, Hashable {
        /// The profile files, in order; empty means krb5's default (`KRB5_CONFIG` or `/etc/krb5.conf`).
        public var files: [String]
        /// Ignore environment variables such as `KRB5_CONFIG`, `KRB5_KTNAME` and `KRB5CCNAME`,
        /// as privileged programs must (`KRB5_INIT_CONTEXT_SECURE`).
        public var secure: Bool

        /// Reads `files` in order (empty: krb5's default files); `secure` ignores the environment.
        public init(files: [String] = [], secure: Bool = false) {
            self.files = files
            self.secure = secure
        }

        /// krb5's default configuration, honouring the environment.
        public static let `default` = Configuration()

        /// Only the given files, ignoring `KRB5_CONFIG`.
        public static func files(_ paths: String...) -> Configuration { Configuration(files: paths) }
    }

    /// The configuration this context was created from.
    public let configuration: Configuration

    /// Objects kept for reuse on this context (see ``reusable(_:make:)``). They usually hold the
    /// context strongly, so the owner of a long-lived context empties this before letting it go.
    package var reusables: [String: AnyObject] = [:]

    /// The PKINIT identity MIT's PKINIT module has kept for this context, once one was set.
    var pkinitIdentity: String?

    /// Creates a context.
    ///
    /// The corresponding C functions are `krb5_init_context`, `krb5_init_secure_context`, and
    /// `profile_init_path` with `krb5_init_context_profile` when files are given.
    public init(_ configuration: Configuration = .default) throws(KerberosError) {
        var context: krb5_context?
        let code: krb5_error_code
        if configuration.files.isEmpty {
            code = configuration.secure ? krb5_init_secure_context(&context) : krb5_init_context(&context)
        } else {
            var profile: profile_t?
            let path = configuration.files.joined(separator: ":")
            let profileCode = Int32(truncatingIfNeeded: profile_init_path(path, &profile))
            guard profileCode == 0, let profile else {
                throw KerberosError(code: profileCode, context: nil, reason: .invalidRequest)
            }
            defer { profile_release(profile) }
            let flags = configuration.secure ? krb5_flags(KRB5_INIT_CONTEXT_SECURE) : 0
            code = krb5_init_context_profile(profile, flags, &context)
        }
        guard code == 0, let context else {
            throw KerberosError(code: code, context: nil, reason: .invalidRequest)
        }
        self.raw = context
        self.configuration = configuration
    }

    deinit {
        krb5_free_context(raw)
    }

    /// The default realm from the configuration.
    ///
    /// The corresponding C function is `krb5_get_default_realm`.
    public func defaultRealm() throws(KerberosError) -> String {
        var realm: UnsafeMutablePointer<CChar>?
        try check(krb5_get_default_realm(raw, &realm))
        defer { krb5_free_default_realm(raw, realm) }
        return String(cString: realm!)
    }

    /// The realms named in the configuration's `[realms]` section, in file order.
    ///
    /// The corresponding C functions are `krb5_get_profile` and `profile_get_subsection_names`.
    public func configuredRealms() throws(KerberosError) -> [String] {
        var profile: profile_t?
        try check(krb5_get_profile(raw, &profile))
        defer { profile_release(profile) }
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let code = withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: 2) { path in
            "realms".withCString { section in
                path[0] = section
                path[1] = nil
                return profile_get_subsection_names(profile, path.baseAddress, &names)
            }
        }
        // A configuration without a [realms] section is no error: it names no realm.
        if code == PROF_NO_SECTION || code == PROF_NO_RELATION { return [] }
        try check(krb5_error_code(truncatingIfNeeded: code))
        defer { profile_free_list(names) }
        var realms: [String] = []
        var index = 0
        while let name = names?[index] {
            realms.append(String(cString: name))
            index += 1
        }
        return realms
    }

    /// Throws a ``KerberosError`` with this context's message when `code` is not zero.
    package func check(_ code: krb5_error_code, reason: KerberosError.Reason? = nil, file: String = #fileID, line: Int = #line) throws(KerberosError) {
        if code != 0 {
            throw KerberosError(code: code, context: raw, reason: reason, file: file, line: line)
        }
    }

    /// Builds an error for `code` with this context's message.
    package func error(_ code: krb5_error_code, reason: KerberosError.Reason? = nil, file: String = #fileID, line: Int = #line) -> KerberosError {
        KerberosError(code: code, context: raw, reason: reason, file: file, line: line)
    }
}
