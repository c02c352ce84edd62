package import CKrb5
public import KerberosSecrets
#if canImport(Glibc)
import Glibc
#endif

/// A ticket with its session key: what the KDC issued, as stored in a credential cache.
///
/// Owns a `krb5_creds` structure, whose contents are freed with `krb5_free_cred_contents`.
/// It is a class because copying the C struct would double-free its pointers.
public final class Credentials {
    let context: Context
    package var raw: krb5_creds

    /// Takes ownership of the contents of `raw` (its principals, key, ticket and addresses).
    init(takingOwnershipOf raw: krb5_creds, context: Context) {
        self.raw = raw
        self.context = context
    }

    deinit {
        krb5_free_cred_contents(context.raw, &raw)
    }

    /// The client principal, such as `alice@EXAMPLE.ORG`: a copy that shares this ticket's context.
    ///
    /// The corresponding C function is `krb5_copy_principal`.
    public var client: Principal {
        get throws(KerberosError) {
            guard let client = raw.client else {
                throw KerberosError(code: Int32(KRB5_NO_TKT_SUPPLIED), message: "The credentials have no client", reason: .invalidRequest)
            }
            return try Principal(copying: client, context: context)
        }
    }
    /// A FILE credential cache (format version 4) holding these credentials alone, their client as its
    /// principal: the bytes a PAM module writes into a session's cache file.
    ///
    /// The corresponding C function is `krb5_marshal_credentials`.
    public func fileCacheImage() throws(KerberosError) -> Secret {
        var marshalled: UnsafeMutablePointer<krb5_data>?
        try context.check(krb5_marshal_credentials(context.raw, &raw, &marshalled))
        guard let marshalled else { throw KerberosError(code: Int32(KRB5_CC_FORMAT), message: "No marshalled credentials", reason: .invalidRequest) }
        defer {
            if let data = marshalled.pointee.data { explicit_bzero(data, Int(marshalled.pointee.length)) }
            krb5_free_data(context.raw, marshalled)
        }
        let bytes = UnsafeRawBufferPointer(start: marshalled.pointee.data, count: Int(marshalled.pointee.length))
        // The credentials begin with their client principal, encoded as the cache's default principal is.
        guard let principalLength = Self.principalLength(bytes) else {
            throw KerberosError(code: Int32(KRB5_CC_FORMAT), message: "Malformed marshalled credentials", reason: .invalidRequest)
        }
        var image: [UInt8] = [0x05, 0x04, 0x00, 0x00]
        image.reserveCapacity(4 + principalLength + bytes.count)
        image.append(contentsOf: bytes[..<principalLength])
        image.append(contentsOf: bytes)
        defer { image.withUnsafeMutableBytes { if let base = $0.baseAddress { explicit_bzero(base, $0.count) } } }
        return Secret(copying: image)
    }

    /// The length of a principal in a version 4 cache's encoding: name type, component count, realm, components.
    static func principalLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var offset = 0
        func counted() -> Int? {
            guard bytes.count - offset >= 4 else { return nil }
            let value = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            offset += 4
            return value
        }
        guard counted() != nil, let components = counted(), components <= 64 else { return nil }
        for _ in 0...components {
            guard let length = counted(), length <= bytes.count - offset else { return nil }
            offset += length
        }
        return offset
    }

    /// The client principal's name; empty when there is none.
    package var clientName: String { raw.client.flatMap { try? Principal.unparse($0, in: context) } ?? "" }
    /// The service principal's name, such as `krbtgt/EXAMPLE.ORG@EXAMPLE.ORG`; empty when there is none.
    public var server: String { raw.server.flatMap { try? Principal.unparse($0, in: context) } ?? "" }

    /// Whether this is a ticket for `server`: the same realm and components, as krb5 compares them (byte for
    /// byte, where Swift's `String` equality would merge canonically equivalent names).
    ///
    /// The corresponding C function is `krb5_principal_compare`.
    public func isTicket(for server: Principal) -> Bool {
        guard let ticketServer = raw.server else { return false }
        return krb5_principal_compare(context.raw, ticketServer, server.raw) != 0
    }

    /// When the initial authentication happened.
    public var authTime: KerberosTime { KerberosTime(krb5Timestamp: raw.times.authtime) }
    /// When the ticket becomes valid (the auth time unless post-dated).
    public var startTime: KerberosTime { KerberosTime(krb5TimestampIfSet: raw.times.starttime) ?? authTime }
    /// When the ticket expires.
    public var endTime: KerberosTime { KerberosTime(krb5Timestamp: raw.times.endtime) }
    /// Until when the ticket can be renewed, if it is renewable.
    public var renewTill: KerberosTime? { KerberosTime(krb5TimestampIfSet: raw.times.renew_till) }

    /// The ticket flags.
    public var flags: TicketFlags { TicketFlags(rawValue: UInt32(bitPattern: raw.ticket_flags)) }

    /// The encryption type of the session key.
    public var sessionKeyType: EncryptionType { EncryptionType(rawValue: raw.keyblock.enctype) }

    /// How many client addresses the ticket is bound to; 0 for an addressless ticket.
    public var addressCount: Int {
        guard let addresses = raw.addresses else { return 0 }
        var count = 0
        while addresses[count] != nil { count += 1 }
        return count
    }

    /// Whether the ticket is a ticket-granting ticket (`krbtgt/…`).
    public var isTicketGrantingTicket: Bool {
        guard let server = raw.server else { return false }
        return Principal.component(server, 0) == "krbtgt"
    }
}

/// Ticket flags (`TKT_FLG_*`).
public struct TicketFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    /// The `TKT_FLG_*` bits, as krb5 keeps them in `krb5_creds.ticket_flags`.
    public let rawValue: UInt32
    /// Flags from raw `TKT_FLG_*` bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// May be forwarded to another host (`TKT_FLG_FORWARDABLE`).
    public static let forwardable = TicketFlags(rawValue: UInt32(TKT_FLG_FORWARDABLE))
    /// Was forwarded.
    public static let forwarded = TicketFlags(rawValue: UInt32(TKT_FLG_FORWARDED))
    /// May be used for proxy tickets.
    public static let proxiable = TicketFlags(rawValue: UInt32(TKT_FLG_PROXIABLE))
    /// Is a proxy ticket.
    public static let proxy = TicketFlags(rawValue: UInt32(TKT_FLG_PROXY))
    /// May be used to get post-dated tickets.
    public static let mayPostdate = TicketFlags(rawValue: UInt32(TKT_FLG_MAY_POSTDATE))
    /// Is post-dated.
    public static let postdated = TicketFlags(rawValue: UInt32(TKT_FLG_POSTDATED))
    /// Is not yet valid.
    public static let invalid = TicketFlags(rawValue: UInt32(TKT_FLG_INVALID))
    /// May be renewed until its renew-till time.
    public static let renewable = TicketFlags(rawValue: UInt32(TKT_FLG_RENEWABLE))
    /// Was issued by an AS exchange, not from a TGT.
    public static let initial = TicketFlags(rawValue: UInt32(TKT_FLG_INITIAL))
    /// The client pre-authenticated.
    public static let preAuthenticated = TicketFlags(rawValue: UInt32(TKT_FLG_PRE_AUTH))
    /// The client used hardware authentication.
    public static let hardwareAuthenticated = TicketFlags(rawValue: UInt32(TKT_FLG_HW_AUTH))
    /// The KDC checked the transited realms.
    public static let transitPolicyChecked = TicketFlags(rawValue: UInt32(TKT_FLG_TRANSIT_POLICY_CHECKED))
    /// The service is trusted for delegation.
    public static let okAsDelegate = TicketFlags(rawValue: UInt32(TKT_FLG_OK_AS_DELEGATE))
    /// The reply carried an encrypted PA reply (FAST).
    public static let encryptedPAReply = TicketFlags(rawValue: UInt32(TKT_FLG_ENC_PA_REP))
    /// Issued to an anonymous client.
    public static let anonymous = TicketFlags(rawValue: UInt32(TKT_FLG_ANONYMOUS))

    /// klist's letters: F forwardable, f forwarded, P proxiable, p proxy, D may-postdate, d postdated,
    /// i invalid, R renewable, I initial, A pre-authenticated, H hardware-authenticated,
    /// T transit-checked, O ok-as-delegate, a anonymous.
    public var description: String {
        let letters: [(TicketFlags, Character)] = [
            (.forwardable, "F"), (.forwarded, "f"), (.proxiable, "P"), (.proxy, "p"), (.mayPostdate, "D"),
            (.postdated, "d"), (.invalid, "i"), (.renewable, "R"), (.initial, "I"), (.preAuthenticated, "A"),
            (.hardwareAuthenticated, "H"), (.transitPolicyChecked, "T"), (.okAsDelegate, "O"), (.anonymous, "a"),
        ]
        return String(letters.filter { contains($0.0) }.map(\.1))
    }
}

/// A Kerberos encryption type, such as `aes256-cts-hmac-sha1-96`.
public struct EncryptionType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// krb5's number for the type (`krb5_enctype`, an `ENCTYPE_*` value).
    public let rawValue: Int32
    /// The type with krb5 number `rawValue`; numbers krb5 does not know are kept as given.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// No encryption type (`ENCTYPE_NULL`): what krb5 reports when it learnt none.
    public static let null = EncryptionType(rawValue: Int32(ENCTYPE_NULL))
    /// aes128-cts-hmac-sha1-96.
    public static let aes128CTSHMACSHA196 = EncryptionType(rawValue: Int32(ENCTYPE_AES128_CTS_HMAC_SHA1_96))
    /// aes256-cts-hmac-sha1-96.
    public static let aes256CTSHMACSHA196 = EncryptionType(rawValue: Int32(ENCTYPE_AES256_CTS_HMAC_SHA1_96))
    /// aes128-cts-hmac-sha256-128.
    public static let aes128CTSHMACSHA256128 = EncryptionType(rawValue: Int32(ENCTYPE_AES128_CTS_HMAC_SHA256_128))
    /// aes256-cts-hmac-sha384-192.
    public static let aes256CTSHMACSHA384192 = EncryptionType(rawValue: Int32(ENCTYPE_AES256_CTS_HMAC_SHA384_192))
    /// camellia128-cts-cmac.
    public static let camellia128CTSCMAC = EncryptionType(rawValue: Int32(ENCTYPE_CAMELLIA128_CTS_CMAC))
    /// camellia256-cts-cmac.
    public static let camellia256CTSCMAC = EncryptionType(rawValue: Int32(ENCTYPE_CAMELLIA256_CTS_CMAC))
    /// arcfour-hmac (deprecated).
    public static let rc4HMAC = EncryptionType(rawValue: Int32(ENCTYPE_ARCFOUR_HMAC))

    /// Parses a name krb5 knows, such as `aes256-cts` or `aes256-cts-hmac-sha1-96`.
    ///
    /// The corresponding C function is `krb5_string_to_enctype`.
    public init?(name: String) {
        var value: krb5_enctype = 0
        let code = name.withCString { krb5_string_to_enctype(UnsafeMutablePointer(mutating: $0), &value) }
        guard code == 0 else { return nil }
        self.rawValue = value
    }

    /// krb5's name for the type, such as `aes256-cts-hmac-sha1-96`.
    ///
    /// The corresponding C function is `krb5_enctype_to_name`.
    public var description: String {
        var buffer = [CChar](repeating: 0, count: 64)
        guard krb5_enctype_to_name(rawValue, 0, &buffer, buffer.count) == 0 else { return "enctype-\(rawValue)" }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
