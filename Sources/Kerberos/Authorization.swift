import CKrb5

extension Principal {
    /// Whether this principal may log in as the local account `localUser`, by the host's rules.
    ///
    /// krb5's local-authorization modules decide: by default the account's `.k5login` file when it exists
    /// (the principal must be listed), and otherwise the realm's `auth_to_local` rules (the principal must
    /// map to `localUser`). An account that does not exist is never authorized.
    ///
    /// The corresponding C function is `krb5_kuserok`.
    public func isAuthorized(asLocalUser localUser: String) -> Bool {
        krb5_kuserok(context.raw, raw, localUser) != 0
    }

    /// The local account name this principal maps to under the realm's `auth_to_local` rules, or nil when
    /// no rule maps it.
    ///
    /// The corresponding C function is `krb5_aname_to_localname`.
    public func localName() -> String? {
        var buffer = [CChar](repeating: 0, count: 1024)
        let code = buffer.withUnsafeMutableBufferPointer { krb5_aname_to_localname(context.raw, raw, Int32($0.count), $0.baseAddress) }
        guard code == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
