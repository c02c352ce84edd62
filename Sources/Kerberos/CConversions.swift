package import CKrb5

// The conversions from krb5's C values to Swift values, in one place: timestamps, counted data and
// principal names. Every type of the binding reads its C fields through these.

extension KerberosTime {
    /// A krb5 timestamp: unsigned 32-bit seconds since the epoch kept in an `Int32` (`krb5_timestamp`,
    /// valid until 2106). Zero is the epoch itself; see ``init(krb5TimestampIfSet:)`` for fields where
    /// zero means "not set".
    init(krb5Timestamp timestamp: krb5_timestamp) {
        self.init(secondsSince1970: Int64(UInt32(bitPattern: timestamp)))
    }

    /// A krb5 timestamp, or nil for zero, which krb5 uses for "not set" (a ticket's start and renew-till
    /// times, a keytab entry's time, the expiry times of the expire callback).
    init?(krb5TimestampIfSet timestamp: krb5_timestamp) {
        guard timestamp != 0 else { return nil }
        self.init(krb5Timestamp: timestamp)
    }
}

extension krb5_data {
    /// The bytes krb5 points to, valid as long as the data is.
    package var buffer: UnsafeRawBufferPointer {
        guard let data, length > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: data, count: Int(length))
    }
}

extension String {
    /// The bytes of `data` as UTF-8 (invalid sequences repaired); empty for empty data.
    init(krb5Data data: krb5_data) {
        self.init(decoding: data.buffer, as: UTF8.self)
    }
}

extension Principal {
    /// `principal` in krb5's string form.
    ///
    /// The corresponding C function is `krb5_unparse_name_flags`.
    static func unparse(_ principal: krb5_const_principal, options: UnparseOptions = [], in context: Context) throws(KerberosError) -> String {
        var text: UnsafeMutablePointer<CChar>?
        try context.check(krb5_unparse_name_flags(context.raw, principal, options.rawValue, &text))
        defer { krb5_free_unparsed_name(context.raw, text) }
        return text.map { String(cString: $0) } ?? ""
    }

    /// Component `index` of a raw principal, or nil when it has fewer components.
    static func component(_ principal: krb5_const_principal, _ index: Int) -> String? {
        guard index >= 0, index < Int(principal.pointee.length) else { return nil }
        return String(krb5Data: principal.pointee.data[index])
    }
}
