import KerberosSecrets
internal import CKrb5
#if canImport(Glibc)
internal import Glibc
#endif

/// What a kpasswd server answered (RFC 3244 section 2): its result code and its message.
package struct PasswordChangeResult: Sendable, Equatable {
    /// `KRB5_KPASSWD_SUCCESS` (0), `_MALFORMED` (1), `_HARDERROR` (2), `_AUTHERROR` (3), `_SOFTERROR` (4, the policy
    /// refused the password), `_ACCESSDENIED` (5), `_BAD_VERSION` (6), `_INITIAL_FLAG_NEEDED` (7).
    package var code: Int32
    /// MIT's text for the code (as `krb5_chpw_result_code_string` words it), such as "Password change rejected".
    package var codeText: String
    /// The server's message, an Active Directory policy turned into sentences (`krb5_chpw_message`); empty when none.
    package var message: String

    package var succeeded: Bool { code == 0 }
}

/// One password change through kpasswd (RFC 3244, protocol version 1: what MIT's `krb5_change_password` sends):
/// the request is built and the reply read here, on a worker; the engine sends it.
///
/// The corresponding C type is `krb5_auth_context`, freed with `krb5_auth_con_free`.
package final class PasswordChangeExchange {
    let context: Context
    private let authContext: krb5_auth_context
    /// The AP-REQ for `kadmin/changepw` with a fresh subkey, the same in the request to every server.
    private let apRequest: [UInt8]

    /// Makes the AP-REQ with a `kadmin/changepw` ticket.
    ///
    /// The corresponding C functions are `krb5_auth_con_init` and `krb5_mk_req_extended` (`AP_OPTS_USE_SUBKEY`).
    init(context: Context, ticket: Credentials) throws(KerberosError) {
        self.context = context
        var handle: krb5_auth_context?
        try context.check(krb5_auth_con_init(context.raw, &handle))
        guard let made = handle else { throw KerberosError(code: Int32(ENOMEM), message: "krb5_auth_con_init returned no context", reason: .other) }
        authContext = made
        var request = krb5_data()
        var creds = ticket.raw
        let code = krb5_mk_req_extended(context.raw, &handle, krb5_flags(AP_OPTS_USE_SUBKEY), nil, &creds, &request)
        guard code == 0 else {
            krb5_auth_con_free(context.raw, made)
            throw context.error(code)
        }
        apRequest = Array(request.buffer)
        krb5_free_data_contents(context.raw, &request)
    }

    deinit {
        krb5_auth_con_free(context.raw, authContext)
    }

    /// The request for a server reached from `localAddress` (this host's IPv4 or IPv6 address on the route to it,
    /// which the KRB-PRIV carries as its sender): length, version 1, the AP-REQ, and the new password in a KRB-PRIV.
    ///
    /// The corresponding C functions are `krb5_auth_con_setaddrs`, `krb5_auth_con_setflags`
    /// (`KRB5_AUTH_CONTEXT_DO_SEQUENCE`) and `krb5_mk_priv`.
    func request(newPassword: Secret, localAddress: [UInt8]) throws(KerberosError) -> [UInt8] {
        guard localAddress.count == 4 || localAddress.count == 16 else {
            throw KerberosError(code: Int32(KRB5_LOCAL_ADDR_REQUIRED), message: "No local address toward the kpasswd server", reason: .kdcUnreachable)
        }
        var sealed = krb5_data()
        let code: krb5_error_code = localAddress.withUnsafeBytes { address in
            var local = krb5_address(magic: 0, addrtype: localAddress.count == 4 ? krb5_addrtype(ADDRTYPE_INET) : krb5_addrtype(ADDRTYPE_INET6),
                                     length: UInt32(address.count), contents: UnsafeMutablePointer(mutating: address.baseAddress!.assumingMemoryBound(to: krb5_octet.self)))
            var code = krb5_auth_con_setaddrs(context.raw, authContext, &local, nil)
            if code == 0 { code = krb5_auth_con_setflags(context.raw, authContext, KRB5_AUTH_CONTEXT_DO_SEQUENCE) }
            guard code == 0 else { return code }
            return newPassword.withUnsafeBytes { password in
                var clear = krb5_data(magic: 0, length: UInt32(password.count),
                                      data: UnsafeMutablePointer(mutating: password.baseAddress?.assumingMemoryBound(to: CChar.self)))
                return krb5_mk_priv(context.raw, authContext, &clear, &sealed, nil)
            }
        }
        try context.check(code)
        defer { krb5_free_data_contents(context.raw, &sealed) }
        let length = 6 + apRequest.count + Int(sealed.length)
        guard length <= 0xFFFF, apRequest.count <= 0xFFFF else {
            throw KerberosError(code: Int32(KRB5KRB_ERR_FIELD_TOOLONG), message: "The kpasswd request is too long", reason: .invalidRequest)
        }
        var message: [UInt8] = [UInt8(length >> 8), UInt8(length & 0xFF), 0, 1, UInt8(apRequest.count >> 8), UInt8(apRequest.count & 0xFF)]
        message.reserveCapacity(length)
        message += apRequest
        message += sealed.buffer
        return message
    }

    /// Reads a server's reply: a KRB-ERROR (unframed, or framed after an empty AP-REP) carrying the result in its
    /// e-data, or an AP-REP and a KRB-PRIV with the result. A reply that is neither, or that does not decrypt, throws.
    ///
    /// The corresponding C functions are `krb5_rd_error`, `krb5_rd_rep`, `krb5_auth_con_getsendsubkey_k`,
    /// `krb5_auth_con_setrecvsubkey_k` (RFC 3244: the reply is sealed with the request's subkey), `krb5_rd_priv`,
    /// and `krb5_chpw_message`.
    func readReply(_ reply: [UInt8]) throws(KerberosError) -> PasswordChangeResult {
        let apReplyLength: Int
        switch try Self.readUnsealed(reply, context: context) {
        case .result(let result): return result
        case .sealed(let length): apReplyLength = length
        }

        var sendSubkey: krb5_key?
        try context.check(krb5_auth_con_getsendsubkey_k(context.raw, authContext, &sendSubkey))
        defer { krb5_k_free_key(context.raw, sendSubkey) }
        var clear = krb5_data()
        let code: krb5_error_code = reply.withUnsafeBytes { bytes in
            let base = UnsafeMutablePointer(mutating: bytes.baseAddress!.assumingMemoryBound(to: CChar.self))
            var apReply = krb5_data(magic: 0, length: UInt32(apReplyLength), data: base + 6)
            var part: UnsafeMutablePointer<krb5_ap_rep_enc_part>?
            var code = krb5_rd_rep(context.raw, authContext, &apReply, &part)
            guard code == 0 else { return code }
            krb5_free_ap_rep_enc_part(context.raw, part)
            code = krb5_auth_con_setrecvsubkey_k(context.raw, authContext, sendSubkey)
            guard code == 0 else { return code }
            var sealed = krb5_data(magic: 0, length: UInt32(reply.count - 6 - apReplyLength), data: base + 6 + apReplyLength)
            var replay = krb5_replay_data()
            return krb5_rd_priv(context.raw, authContext, &sealed, &clear, &replay)
        }
        try context.check(code)
        defer { krb5_free_data_contents(context.raw, &clear) }
        return try Self.result(Array(clear.buffer), fromError: false, context: context)
    }

    /// What a reply says before anything is decrypted.
    package enum UnsealedReply {
        /// A KRB-ERROR's result (a refusal, or the KRB-ERROR's own error thrown instead).
        case result(PasswordChangeResult)
        /// An AP-REP of this length, then the KRB-PRIV with the result.
        case sealed(apReplyLength: Int)
    }

    /// Reads a reply's framing (RFC 3244 section 2) and, when it carries a KRB-ERROR, the result in it: the part of
    /// a reply that needs no key, which every byte from the network goes through first.
    ///
    /// The corresponding C functions are `krb5_rd_error` and `krb5_chpw_message`.
    package static func readUnsealed(_ reply: [UInt8], context: Context) throws(KerberosError) -> UnsealedReply {
        let malformed = KerberosError(code: Int32(KRB5KRB_AP_ERR_MODIFIED), message: "The kpasswd reply is malformed", reason: .other)
        if reply.first == 0x7E { return .result(try result(fromError: reply[...], context: context)) }
        guard reply.count >= 6, Int(reply[0]) << 8 | Int(reply[1]) == reply.count else { throw malformed }
        let version = Int(reply[2]) << 8 | Int(reply[3])
        guard version == 1 || version == 0xFF80 else {
            throw KerberosError(code: Int32(KRB5KDC_ERR_BAD_PVNO), message: "The kpasswd reply has version \(version)", reason: .other)
        }
        let apReplyLength = Int(reply[4]) << 8 | Int(reply[5])
        guard apReplyLength <= reply.count - 6 else { throw malformed }
        if apReplyLength == 0 { return .result(try result(fromError: reply[6...], context: context)) }
        return .sealed(apReplyLength: apReplyLength)
    }

    /// The result carried in a KRB-ERROR's e-data; one without e-data is the KRB-ERROR's own error.
    private static func result(fromError bytes: ArraySlice<UInt8>, context: Context) throws(KerberosError) -> PasswordChangeResult {
        var error: UnsafeMutablePointer<krb5_error>?
        let code: krb5_error_code = bytes.withUnsafeBytes { raw in
            var data = krb5_data(magic: 0, length: UInt32(raw.count), data: UnsafeMutablePointer(mutating: raw.baseAddress?.assumingMemoryBound(to: CChar.self)))
            return krb5_rd_error(context.raw, &data, &error)
        }
        try context.check(code)
        guard let error else { throw KerberosError(code: Int32(KRB5KRB_AP_ERR_MODIFIED), message: "The kpasswd reply is malformed", reason: .other) }
        defer { krb5_free_error(context.raw, error) }
        guard error.pointee.e_data.length > 0 else {
            // ERROR_TABLE_BASE_krb5 + the KRB-ERROR's code, as MIT's chpw.c does.
            throw context.error(krb5_error_code(-1765328384) + krb5_error_code(bitPattern: error.pointee.error))
        }
        return try result(Array(error.pointee.e_data.buffer), fromError: true, context: context)
    }

    /// Decodes the two-byte result code and the message that follows it.
    private static func result(_ clear: [UInt8], fromError: Bool, context: Context) throws(KerberosError) -> PasswordChangeResult {
        let code = clear.count >= 2 ? Int32(clear[0]) << 8 | Int32(clear[1]) : -1
        // A success inside a KRB-ERROR would be forged; codes past INITIAL_FLAG_NEEDED are not defined.
        guard (0...7).contains(code), !(fromError && code == 0) else {
            throw KerberosError(code: Int32(KRB5KRB_AP_ERR_MODIFIED), message: "The kpasswd reply carries no valid result", reason: .other)
        }
        let text = ["Success", "Malformed request error", "Server error", "Authentication error", "Password change rejected",
                    "Access denied", "Wrong protocol version", "Initial password required"][Int(code)]
        var message = ""
        let server = Array(clear.dropFirst(2))
        if server.count == adPolicyLength && server[0] == 0 && server[1] == 0 {
            // Active Directory's password policy: MIT words it.
            var output: UnsafeMutablePointer<CChar>?
            server.withUnsafeBytes { raw in
                var data = krb5_data(magic: 0, length: UInt32(raw.count), data: UnsafeMutablePointer(mutating: raw.baseAddress?.assumingMemoryBound(to: CChar.self)))
                _ = krb5_chpw_message(context.raw, &data, &output)
            }
            if let output {
                message = String(cString: output)
                krb5_free_string(context.raw, output)
            }
        } else if !server.contains(0), let text = String(validating: server, as: UTF8.self) {
            // Read here, not by krb5_chpw_message: MIT 1.20's UTF-8 normalization reads past the end of a message
            // that ends inside a multi-byte sequence (found by make fuzz, docs/fuzzing.md). Anything but UTF-8
            // without NUL is no message, as MIT treats it.
            message = text
        }
        return PasswordChangeResult(code: code, codeText: text, message: message)
    }

    /// The length of Active Directory's password-policy blob in a kpasswd result (MIT's `AD_POLICY_INFO_LENGTH`).
    static let adPolicyLength = 30
}

extension KDCTarget {
    /// This host's address on the route to the target, as raw IPv4 or IPv6 bytes: a UDP socket connected to it
    /// (connecting a datagram socket sends nothing) and `getsockname`, as MIT's changepw.c reads it off its socket.
    var localAddress: [UInt8]? {
        let family = Int32(address.protocol.rawValue)
        let descriptor = socket(family, Int32(SOCK_DGRAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        let connected = address.withSockAddr { pointer, length in connect(descriptor, pointer, socklen_t(length)) }
        guard connected == 0 else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard named == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &storage) { raw in
                withUnsafeBytes(of: raw.load(as: sockaddr_in.self).sin_addr) { Array($0) }
            }
        case AF_INET6:
            return withUnsafeBytes(of: &storage) { raw in
                withUnsafeBytes(of: raw.load(as: sockaddr_in6.self).sin6_addr) { Array($0) }
            }
        default:
            return nil
        }
    }
}

extension ReplyKind {
    /// A kpasswd reply (RFC 3244 section 2): framed with its length and a version of 1 or 0xff80, or an unframed
    /// KRB-ERROR (`KRB_ERR_RESPONSE_TOO_BIG` over UDP asks for TCP); over TCP after a 4-byte length, as a KDC's.
    static let passwordChange = ReplyKind(lengthPrefix: 4) { bytes, overUDP in
        if bytes.first == 0x7E {
            return overUDP && KDCMessage.errorCode(bytes) == KDCMessage.responseTooBig ? .tooBigForDatagram : .reply
        }
        guard bytes.count >= 6, Int(bytes[0]) << 8 | Int(bytes[1]) == bytes.count else { return .ignored }
        let version = Int(bytes[2]) << 8 | Int(bytes[3])
        return version == 1 || version == 0xFF80 ? .reply : .ignored
    }
}
