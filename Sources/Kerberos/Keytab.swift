public import KerberosSecrets
package import CKrb5
#if canImport(Glibc)
internal import Glibc
#endif

/// A key table: long-term keys of service principals, such as `/etc/krb5.keytab`.
///
/// The corresponding C type is `krb5_keytab`.
public final class Keytab {
    let context: Context
    package let raw: krb5_keytab

    /// Owns the keytab handle that `open` (`krb5_kt_resolve`, `krb5_kt_default`) stores through its argument;
    /// throws the call's error, with `reason` when given.
    private init(in context: Context, reason: KerberosError.Reason? = nil,
                 _ open: (UnsafeMutablePointer<krb5_keytab?>) -> krb5_error_code) throws(KerberosError) {
        var keytab: krb5_keytab?
        try context.check(open(&keytab), reason: reason)
        guard let keytab else { preconditionFailure("krb5 succeeded without a keytab handle") }
        self.raw = keytab
        self.context = context
    }

    /// Resolves a keytab by name (`FILE:/path`, `/path`, `MEMORY:name`); the file need not exist yet.
    ///
    /// The corresponding C function is `krb5_kt_resolve`.
    public convenience init(resolving name: String, in context: Context) throws(KerberosError) {
        try self.init(in: context, reason: .invalidRequest) { krb5_kt_resolve(context.raw, name, $0) }
    }

    /// The default keytab (`KRB5_KTNAME` or `default_keytab_name`, usually `/etc/krb5.keytab`).
    ///
    /// The corresponding C function is `krb5_kt_default`.
    public static func `default`(in context: Context) throws(KerberosError) -> Keytab {
        try Keytab(in: context) { krb5_kt_default(context.raw, $0) }
    }

    deinit {
        krb5_kt_close(context.raw, raw)
    }

    /// The full name, such as `FILE:/etc/krb5.keytab`.
    ///
    /// The corresponding C function is `krb5_kt_get_name`.
    public var name: String {
        var buffer = [CChar](repeating: 0, count: 1024)
        guard krb5_kt_get_name(context.raw, raw, &buffer, UInt32(buffer.count)) == 0 else { return "" }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// One key in a keytab.
    public struct Entry: Sendable, Hashable {
        /// The principal the key belongs to.
        public var principal: String
        /// The key version number.
        public var keyVersion: UInt32
        /// The key's encryption type.
        public var encryptionType: EncryptionType
        /// When the key was written, if recorded.
        public var timestamp: KerberosTime?
    }

    /// Every entry, as `klist -k` lists them. A keytab file that does not exist has none.
    ///
    /// The corresponding C functions are `krb5_kt_start_seq_get`, `krb5_kt_next_entry` and `krb5_kt_end_seq_get`.
    public func entries() throws(KerberosError) -> [Entry] {
        var cursor: krb5_kt_cursor?
        let start = krb5_kt_start_seq_get(context.raw, raw, &cursor)
        if start == ENOENT || start == KRB5_KT_END { return [] }
        try context.check(start)
        defer { krb5_kt_end_seq_get(context.raw, raw, &cursor) }
        var result: [Entry] = []
        while true {
            var entry = krb5_keytab_entry()
            let code = krb5_kt_next_entry(context.raw, raw, &entry, &cursor)
            if code == KRB5_KT_END { break }
            try context.check(code)
            defer { krb5_free_keytab_entry_contents(context.raw, &entry) }
            let principal = try Principal.unparse(entry.principal, in: context)
            result.append(Entry(
                principal: principal,
                keyVersion: entry.vno,
                encryptionType: EncryptionType(rawValue: entry.key.enctype),
                timestamp: KerberosTime(krb5TimestampIfSet: entry.timestamp)
            ))
        }
        return result
    }

    /// Adds `key` for `principal` (a keytab such as `MEMORY:name` that the caller owns); krb5 copies the key.
    ///
    /// The corresponding C function is `krb5_kt_add_entry`.
    public func add(principal: Principal, keyVersion: UInt32 = 0, encryptionType: EncryptionType, key: Secret) throws(KerberosError) {
        let code: krb5_error_code = key.withUnsafeBytes { bytes in
            var entry = krb5_keytab_entry()
            entry.principal = principal.raw
            entry.vno = keyVersion
            entry.key = krb5_keyblock(magic: 0, enctype: encryptionType.rawValue, length: UInt32(bytes.count),
                                      contents: UnsafeMutablePointer(mutating: bytes.baseAddress?.assumingMemoryBound(to: krb5_octet.self)))
            return krb5_kt_add_entry(context.raw, raw, &entry)
        }
        try context.check(code, reason: .invalidRequest)
    }

    /// Removes the key of `principal` with that version and type; krb5 wipes it as it frees it.
    ///
    /// The corresponding C function is `krb5_kt_remove_entry`.
    public func remove(principal: Principal, keyVersion: UInt32 = 0, encryptionType: EncryptionType) throws(KerberosError) {
        var entry = krb5_keytab_entry()
        entry.principal = principal.raw
        entry.vno = keyVersion
        entry.key.enctype = encryptionType.rawValue
        try context.check(krb5_kt_remove_entry(context.raw, raw, &entry), reason: .invalidRequest)
    }
}
