public import Kerberos
public import struct Foundation.Date

/// A question a login needs answered by the person logging in.
public enum LoginQuestion: Sendable, Hashable {
    /// The password, with krb5's prompt text.
    case password(prompt: String)
    /// A one-time password.
    case otp(OTPChallenge)
    /// PINs or pass phrases for PKINIT identities.
    case pkinit([PKINITIdentity])
    /// A new password after expiry, and the same again.
    case newPassword(prompt: String)
    case newPasswordAgain(prompt: String)
    /// Any other prompt krb5 raises (for example a pass phrase asked through the prompter).
    case text(prompt: String, hidden: Bool)
    /// A responder question this package does not decode, with its raw JSON challenge.
    case raw(name: String, challenge: String)
}

/// What the person answered in one round; merged into everything answered before.
public struct LoginAnswers: Sendable {
    public var password: Secret?
    public var otp: OTPAnswer?
    public var pkinit: [String: Secret]
    public var newPassword: Secret?
    public var newPasswordAgain: Secret?
    public var text: [Secret]
    public var raw: [String: Secret]

    public init(password: Secret? = nil, otp: OTPAnswer? = nil, pkinit: [String: Secret] = [:], newPassword: Secret? = nil,
                newPasswordAgain: Secret? = nil, text: [Secret] = [], raw: [String: Secret] = [:]) {
        self.password = password
        self.otp = otp
        self.pkinit = pkinit
        self.newPassword = newPassword
        self.newPasswordAgain = newPasswordAgain
        self.text = text
        self.raw = raw
    }

    /// Whether nothing was answered (which declines the round).
    public var isEmpty: Bool {
        password == nil && otp == nil && pkinit.isEmpty && newPassword == nil && newPasswordAgain == nil && text.isEmpty && raw.isEmpty
    }

    public mutating func merge(_ other: LoginAnswers) {
        password = other.password ?? password
        otp = other.otp ?? otp
        pkinit.merge(other.pkinit) { $1 }
        newPassword = other.newPassword ?? newPassword
        newPasswordAgain = other.newPasswordAgain ?? newPasswordAgain
        if !other.text.isEmpty { text = other.text }
        raw.merge(other.raw) { $1 }
    }
}

/// The end of a login.
public struct LoginResult: Sendable, Equatable {
    /// Why a login failed, as the daemon's and helper's protocols name it.
    public struct Failure: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }
        public static let badCredentials = Failure(rawValue: "bad-credentials")
        public static let unknownPrincipal = Failure(rawValue: "unknown-principal")
        public static let passwordExpired = Failure(rawValue: "password-expired")
        public static let accountDisabled = Failure(rawValue: "account-disabled")
        public static let kdcUnreachable = Failure(rawValue: "kdc-unreachable")
        public static let verificationFailed = Failure(rawValue: "verification-failed")
        public static let clockSkew = Failure(rawValue: "clock-skew")
        public static let timeout = Failure(rawValue: "timeout")
        public static let invalidRequest = Failure(rawValue: "invalid-request")
        public static let `internal` = Failure(rawValue: "internal")

        /// The protocol name for a library failure reason.
        public init(_ reason: KerberosError.Reason) {
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

    /// The authenticated principal, on success (and the requested one on failure when known).
    public var principal: String?
    /// Whether credentials were verified against the keytab (always true on success unless verification is off).
    public var verified: Bool
    /// When the TGT expires, on success.
    public var expires: Date?
    /// Why it failed; nil on success.
    public var failure: Failure?
    /// A short human-readable reason (never containing a secret).
    public var message: String?

    public var ok: Bool { failure == nil }

    public static func success(principal: String, verified: Bool, expires: Date?) -> LoginResult {
        LoginResult(principal: principal, verified: verified, expires: expires, failure: nil, message: nil)
    }

    public static func failed(_ failure: Failure, _ message: String, principal: String? = nil) -> LoginResult {
        LoginResult(principal: principal, verified: false, expires: nil, failure: failure, message: message)
    }
}

