public import LoginProtocol

/// `krb5-login`'s exit codes, which a PAM stack (pam_exec) or a login program acts on.
public enum ExitStatus: Int32, Sendable, CustomStringConvertible {
    /// Authenticated and verified.
    case authenticated = 0
    /// Denied: any authentication or verification failure.
    case denied = 1
    /// Usage error or malformed input.
    case usage = 2
    /// Unavailable: the KDC or the daemon cannot be reached, or the configuration is unusable.
    case unavailable = 3

    /// The status for a login result.
    public init(_ result: LoginResult) {
        switch result.failure {
        case nil: self = .authenticated
        case .invalidRequest?: self = .usage
        case .kdcUnreachable?, .internal?, .clockSkew?: self = .unavailable
        default: self = .denied
        }
    }

    /// The status's name, such as `denied`.
    public var description: String {
        switch self {
        case .authenticated: "authenticated"
        case .denied: "denied"
        case .usage: "usage"
        case .unavailable: "unavailable"
        }
    }
}
