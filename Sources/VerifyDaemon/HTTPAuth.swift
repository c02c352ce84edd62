import Foundation
import KerberosSecrets
import LoginProtocol
import NIOCore
import NIOHTTP1
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The decisions of the HTTP auth endpoint that need no socket: the `Authorization: Basic` credentials, the client's
/// address, and the status a login's result answers with. ``HTTPAuthHandler`` only moves bytes.
enum HTTPAuth {
    /// The longest `Authorization` header value taken: `Basic ` and the base64 of a 256-byte name, a colon and a
    /// password of several hundred bytes.
    static let maxAuthorizationBytes = 1024
    /// The longest user name, as saslauthd's field limit.
    static let maxUserBytes = 256
    /// All the request's header lines together (nginx passes the browser's cookies to the subrequest; its own
    /// default limit is 4 buffers of 8 KiB).
    static let maxHeaderBytes = 32 * 1024

    /// A request the endpoint refuses before any login: answered 400 with `reason`, nothing reaches the KDC.
    struct BadRequest: Error, Equatable, CustomStringConvertible {
        let reason: String
        init(_ reason: String) { self.reason = reason }
        var description: String { reason }
    }

    /// The name and password of an `Authorization: Basic` header.
    struct Credentials {
        let user: String
        let password: Secret
    }

    /// What an `Authorization` header holds: nothing the endpoint can use (no header, another scheme: answered with
    /// the Basic challenge), or credentials; a malformed Basic value throws.
    enum Authorization {
        case absent
        case otherScheme
        case basic(Credentials)
    }

    /// Parses the `Authorization` header (RFC 7617). The encoded and decoded bytes live in buffers wiped before
    /// returning; the password leaves only as a ``Secret``. (NIO's header `String` itself cannot be wiped.)
    static func authorization(_ value: String?) throws(BadRequest) -> Authorization {
        guard let value else { return .absent }
        guard value.utf8.count <= maxAuthorizationBytes else { throw BadRequest("the Authorization header is longer than \(maxAuthorizationBytes) bytes") }
        let trimmed = value.drop { $0 == " " }
        guard let space = trimmed.firstIndex(of: " ") else {
            if trimmed.lowercased() == "basic" { throw BadRequest("the Basic credentials are missing") }
            return .otherScheme
        }
        guard trimmed[..<space].lowercased() == "basic" else { return .otherScheme }
        // The base64 text is the password in another spelling: its copy is wiped too.
        var encoded = Array(trimmed[space...].drop { $0 == " " }.utf8)
        defer { encoded.withUnsafeMutableBytes { Secret.wipe($0) } }
        var decoded = try base64Decoded(encoded)
        defer { decoded.withUnsafeMutableBytes { Secret.wipe($0) } }
        guard let colon = decoded.firstIndex(of: UInt8(ascii: ":")) else { throw BadRequest("the Basic credentials have no colon between name and password") }
        let userBytes = decoded[..<colon]
        guard !userBytes.isEmpty else { throw BadRequest("the user name is empty") }
        guard userBytes.count <= maxUserBytes else { throw BadRequest("the user name is longer than \(maxUserBytes) bytes") }
        guard let user = String(validating: userBytes, as: UTF8.self) else { throw BadRequest("the user name is not UTF-8") }
        guard !user.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { throw BadRequest("the user name contains a control character") }
        let passwordBytes = decoded[(colon + 1)...]
        guard !passwordBytes.contains(0) else { throw BadRequest("the password contains a NUL byte") }
        return .basic(Credentials(user: user, password: Secret(copying: passwordBytes)))
    }

    /// Standard base64 with padding (RFC 4648 §4), as RFC 7617 asks; anything else is a ``BadRequest``.
    static func base64Decoded(_ text: [UInt8]) throws(BadRequest) -> [UInt8] {
        guard !text.isEmpty, text.count % 4 == 0 else { throw BadRequest("the Basic credentials are not base64") }
        var output: [UInt8] = []
        output.reserveCapacity(text.count / 4 * 3)
        var index = 0
        while index < text.count {
            var quantum: UInt32 = 0
            var padding = 0
            for offset in 0..<4 {
                let character = text[index + offset]
                let value: UInt32
                switch character {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(character - UInt8(ascii: "A"))
                case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(character - UInt8(ascii: "a")) + 26
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(character - UInt8(ascii: "0")) + 52
                case UInt8(ascii: "+"): value = 62
                case UInt8(ascii: "/"): value = 63
                case UInt8(ascii: "=") where index + 4 == text.count && offset >= 2: value = 0; padding += 1
                default:
                    output.withUnsafeMutableBytes { Secret.wipe($0) }
                    throw BadRequest("the Basic credentials are not base64")
                }
                // After a padding character only padding may follow.
                if padding > 0 && character != UInt8(ascii: "=") {
                    output.withUnsafeMutableBytes { Secret.wipe($0) }
                    throw BadRequest("the Basic credentials are not base64")
                }
                quantum = quantum << 6 | value
            }
            output.append(UInt8(truncatingIfNeeded: quantum >> 16))
            if padding < 2 { output.append(UInt8(truncatingIfNeeded: quantum >> 8)) }
            if padding < 1 { output.append(UInt8(truncatingIfNeeded: quantum)) }
            index += 4
        }
        return output
    }

    /// Who is at the other end of a connection to the endpoint.
    enum Peer: Sendable {
        /// A process on the UNIX socket (nil: `SO_PEERCRED` unreadable).
        case local(PeerCredentials?)
        /// A TCP peer's address.
        case tcp(String)
    }

    /// Whose client-address header is believed, and which header it is.
    struct ProxyTrust: Sendable {
        /// The header the proxy sets (`X-Forwarded-For` by default); its last address is the one the proxy added.
        var header: String
        /// Peer uids on the UNIX socket.
        var uids: [UInt32]
        /// Peer addresses on TCP.
        var addresses: [String]

        init(_ configuration: DaemonConfiguration) {
            header = configuration.httpClientAddressHeader
            uids = configuration.httpTrustedUIDs
            addresses = configuration.httpTrustedAddresses.map(HTTPAuth.normalizedAddress)
        }

        func trusts(_ peer: Peer) -> Bool {
            switch peer {
            case .local(let credentials?): uids.contains(credentials.uid)
            case .local(nil): false
            case .tcp(let address): addresses.contains(HTTPAuth.normalizedAddress(address))
            }
        }
    }

    /// The client's address, the throttle's key beside the principal: from the trusted proxy's header (its last,
    /// rightmost address: the one the proxy itself added), else a TCP peer's own address, else none. A header
    /// from a peer that is not trusted is ignored; a trusted header that is not an address is a ``BadRequest``.
    static func clientAddress(header value: String?, peer: Peer, trust: ProxyTrust) throws(BadRequest) -> String? {
        if let value, trust.trusts(peer) {
            let last = value.split(separator: ",").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard isAddress(last) else { throw BadRequest("the \(trust.header) header does not end with an IP address") }
            return normalizedAddress(last)
        }
        if case .tcp(let address) = peer { return normalizedAddress(address) }
        return nil
    }

    /// Whether `text` is an IPv4 or IPv6 address.
    static func isAddress(_ text: String) -> Bool {
        var storage = in6_addr()
        return inet_pton(AF_INET, text, &storage) == 1 || inet_pton(AF_INET6, text, &storage) == 1
    }

    /// An address in one spelling, so that `::ffff:127.0.0.1` and `127.0.0.1` are one throttle key and one
    /// trusted peer.
    static func normalizedAddress(_ text: String) -> String {
        text.hasPrefix("::ffff:") && text.contains(".") ? String(text.dropFirst(7)) : text.lowercased()
    }

    /// The status a login's result answers with.
    static func status(for result: LoginResult) -> HTTPResponseStatus {
        switch result.failure {
        case nil: .ok
        case .accountDisabled?, .passwordExpired?: .forbidden
        case .kdcUnreachable?, .clockSkew?, .timeout?, .internal?: .serviceUnavailable
        case .invalidRequest?: .badRequest
        default: .unauthorized  // wrong or unknown credentials, a throttled guess, a ticket that failed verification
        }
    }

    /// Whether `value` may go out as a header value as it is (no control characters).
    static func isHeaderSafe(_ value: String) -> Bool {
        !value.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
}
