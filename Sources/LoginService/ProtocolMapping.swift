package import Kerberos
public import LoginProtocol

// What the wire formats' values mean to the service: the protocol's failure for a library reason, and the
// principal a saslauthd request names. Kept here, not in LoginProtocol, so the wire layer needs no krb5.

extension LoginResult.Failure {
    /// The protocol name for a library failure reason.
    package init(_ reason: KerberosError.Reason) {
        switch reason {
        case .badPassword, .cancelled, .preauthUnavailable: self = .badCredentials
        case .unknownPrincipal: self = .unknownPrincipal
        case .passwordExpired: self = .passwordExpired
        case .accountDisabled: self = .accountDisabled
        case .kdcUnreachable: self = .kdcUnreachable
        case .verificationFailed: self = .verificationFailed
        case .clockSkew: self = .clockSkew
        case .invalidRequest: self = .invalidRequest
        default: self = .internal
        }
    }
}

extension LoginService {
    /// The Kerberos principal saslauthd's kerberos5 mechanism would use for `request`: the login when it names
    /// a realm, else `login@realm` when the realm field is set, else the login (krb5 adds the default realm).
    public static func principal(for request: SaslauthdRequest) -> String {
        if LoginNames.hasRealm(request.login) || request.realm.isEmpty { return request.login }
        return "\(request.login)@\(request.realm)"
    }
}

extension LoginNames {
    /// Whether `name` contains an `@` that is not escaped with a backslash.
    static func hasRealm(_ name: String) -> Bool {
        var escaped = false
        for character in name.utf8 {
            if escaped { escaped = false; continue }
            if character == UInt8(ascii: "\\") { escaped = true } else if character == UInt8(ascii: "@") { return true }
        }
        return false
    }
}
