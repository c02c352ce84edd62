public import KerberosSecrets

/// A question a login needs answered by the person logging in; one element of a `questions` message.
public enum LoginQuestion: Sendable, Hashable {
    /// The password (`"kind":"password"`), with krb5's prompt text.
    case password(prompt: String)
    /// A one-time password (`"kind":"otp"`), with the tokens the KDC offers.
    case otp(OTPChallenge)
    /// PINs or pass phrases for PKINIT identities (`"kind":"pkinit"`), such as a smart card.
    case pkinit([PKINITIdentity])
    /// A new password after expiry (`"kind":"new-password"`).
    case newPassword(prompt: String)
    /// The new password again, to confirm it (`"kind":"new-password-again"`).
    case newPasswordAgain(prompt: String)
    /// Any other prompt krb5 raises (`"kind":"text"`), for example a key's pass phrase; `hidden` asks for
    /// the answer not to be echoed.
    case text(prompt: String, hidden: Bool)
    /// A responder question this package does not decode (`"kind":"raw"`): its name and raw JSON
    /// challenge. The answer goes back verbatim in `raw`.
    case raw(name: String, challenge: String)
}

/// What the person answered in one round (the `answers` object); merged into everything answered before.
public struct LoginAnswers: Sendable {
    /// The password (`"password"`).
    public var password: Secret?
    /// A one-time password for one of the offered tokens (`"otp"`).
    public var otp: OTPAnswer?
    /// PINs or pass phrases by PKINIT identity (`"pkinit"`).
    public var pkinit: [String: Secret]
    /// A new password after expiry (`"new-password"`).
    public var newPassword: Secret?
    /// The new password again (`"new-password-again"`).
    public var newPasswordAgain: Secret?
    /// Answers to `text` questions in the order they were asked (`"text"`); empty when none were given.
    public var text: [Secret]
    /// Answers to `raw` questions by question name, each raw JSON (`"raw"`).
    public var raw: [String: Secret]

    /// Answers with the given members; nothing by default.
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

    /// Whether nothing was answered; an empty `answers` object declines the round.
    public var isEmpty: Bool {
        password == nil && otp == nil && pkinit.isEmpty && newPassword == nil && newPasswordAgain == nil && text.isEmpty && raw.isEmpty
    }

    /// Adds a later round's answers: what `other` answers replaces the earlier answer, the rest is kept.
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

/// The end of a login: the `result` message.
public struct LoginResult: Sendable, Equatable {
    /// Why a login failed, as both protocols name it (the `error` member).
    public struct Failure: Hashable, Sendable, CustomStringConvertible {
        /// The name on the wire, such as `bad-credentials`.
        public let rawValue: String
        /// A failure with the given wire name; prefer the constants.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The name on the wire.
        public var description: String { rawValue }

        /// Wrong password, OTP or PIN, a declined round, or too many recent failures.
        public static let badCredentials = Failure(rawValue: "bad-credentials")
        /// The principal is not in the KDC's database.
        public static let unknownPrincipal = Failure(rawValue: "unknown-principal")
        /// The password has expired and was not changed.
        public static let passwordExpired = Failure(rawValue: "password-expired")
        /// The account is disabled, locked or expired.
        public static let accountDisabled = Failure(rawValue: "account-disabled")
        /// No KDC for the realm answered.
        public static let kdcUnreachable = Failure(rawValue: "kdc-unreachable")
        /// A ticket was obtained but could not be verified against the keytab: the KDC may be an impostor.
        public static let verificationFailed = Failure(rawValue: "verification-failed")
        /// The clocks of this host and the KDC differ too much.
        public static let clockSkew = Failure(rawValue: "clock-skew")
        /// The client was too slow: no request or no answers in time.
        public static let timeout = Failure(rawValue: "timeout")
        /// A malformed frame or message, or one that does not fit the conversation.
        public static let invalidRequest = Failure(rawValue: "invalid-request")
        /// Anything else; the message says more.
        public static let `internal` = Failure(rawValue: "internal")
    }

    /// The authenticated principal on success; on failure the requested one, when known.
    public var principal: String?
    /// Whether the credentials were verified against the keytab (true on success unless verification is off).
    public var verified: Bool
    /// When the ticket-granting ticket expires, on success.
    public var expires: KerberosTime?
    /// Why the login failed; nil on success.
    public var failure: Failure?
    /// A short human-readable reason; never contains a secret.
    public var message: String?
    /// On success, when the request asked for them (``LoginRequest/wantsCredentials``): the credentials as the
    /// bytes of a FILE credential cache (version 4), sent base64-encoded as `"ccache"`.
    public var credentials: Secret?

    /// A result with every member given.
    public init(principal: String?, verified: Bool, expires: KerberosTime?, failure: Failure?, message: String?) {
        self.principal = principal
        self.verified = verified
        self.expires = expires
        self.failure = failure
        self.message = message
    }

    /// Equal when every member is, the credentials compared in constant time.
    public static func == (lhs: LoginResult, rhs: LoginResult) -> Bool {
        guard lhs.principal == rhs.principal, lhs.verified == rhs.verified, lhs.expires == rhs.expires, lhs.failure == rhs.failure,
              lhs.message == rhs.message else { return false }
        switch (lhs.credentials, rhs.credentials) {
        case (nil, nil): return true
        case (let left?, let right?): return left.constantTimeEquals(right)
        default: return false
        }
    }

    /// Whether the login succeeded (the `ok` member).
    public var ok: Bool { failure == nil }

    /// A successful login.
    public static func success(principal: String, verified: Bool, expires: KerberosTime?) -> LoginResult {
        LoginResult(principal: principal, verified: verified, expires: expires, failure: nil, message: nil)
    }

    /// A failed login with its reason.
    public static func failed(_ failure: Failure, _ message: String, principal: String? = nil) -> LoginResult {
        LoginResult(principal: principal, verified: false, expires: nil, failure: failure, message: message)
    }
}
