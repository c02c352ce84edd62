// The values of krb5's OTP and PKINIT responder questions and answers (`krb5_responder_otp_*`,
// `krb5_responder_pkinit_*`), without C: the wire formats of the daemon and the helper carry them too.
//
// The flag and format numbers are krb5.h's (`KRB5_RESPONDER_OTP_FLAGS_*`, `KRB5_RESPONDER_OTP_FORMAT_*`,
// `KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_*`), written out here because this module does not import krb5;
// the Kerberos module's tests check them against the header.

/// The OTP question: the service and the tokens the KDC will accept.
///
/// The MIT KDC sends almost no token information, so clients usually see one token with just
/// ``OTPToken/Flags/collectToken``.
public struct OTPChallenge: Sendable, Hashable {
    /// The service (realm or token service) the OTP is for.
    public var service: String?
    /// The acceptable tokens; an answer names one by its index.
    public var tokens: [OTPToken]

    /// A challenge for `service` offering `tokens`.
    public init(service: String?, tokens: [OTPToken]) {
        self.service = service
        self.tokens = tokens
    }
}

/// One acceptable OTP token (`krb5_responder_otp_tokeninfo`).
public struct OTPToken: Sendable, Hashable {
    /// What to collect for this token (`KRB5_RESPONDER_OTP_FLAGS_*`).
    public struct Flags: OptionSet, Sendable, Hashable {
        /// The `KRB5_RESPONDER_OTP_FLAGS_*` bits.
        public let rawValue: Int32
        /// Flags from raw `KRB5_RESPONDER_OTP_FLAGS_*` bits.
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// Ask for the token's value.
        public static let collectToken = Flags(rawValue: 0x0001)
        /// Ask for a PIN.
        public static let collectPIN = Flags(rawValue: 0x0002)
        /// The previous value was accepted; ask for the next one. (MIT 1.20 also reports a SEPARATE_PIN token this way.)
        public static let nextOTP = Flags(rawValue: 0x0004)
        /// Send the PIN separately from the value rather than concatenated.
        public static let separatePIN = Flags(rawValue: 0x0008)
    }

    /// The alphabet of the token's values (`KRB5_RESPONDER_OTP_FORMAT_*`).
    public enum Format: Int32, Sendable, Hashable {
        /// Digits only (`KRB5_RESPONDER_OTP_FORMAT_DECIMAL`).
        case decimal = 0
        /// Hexadecimal digits (`KRB5_RESPONDER_OTP_FORMAT_HEXADECIMAL`).
        case hexadecimal = 1
        /// Letters and digits (`KRB5_RESPONDER_OTP_FORMAT_ALPHANUMERIC`).
        case alphanumeric = 2
    }

    /// What to collect.
    public var flags: Flags
    /// The token vendor, if the KDC said.
    public var vendor: String?
    /// A challenge to show the user, if any.
    public var challenge: String?
    /// The value's length in characters, if known.
    public var length: Int?
    /// The alphabet of the value, if known.
    public var format: Format?
    /// The token's identifier, if the KDC said.
    public var tokenID: String?
    /// The token's algorithm identifier, if the KDC said.
    public var algorithmID: String?

    /// A token description; only `flags` is required, as the KDC may send nothing else.
    public init(flags: Flags, vendor: String? = nil, challenge: String? = nil, length: Int? = nil, format: Format? = nil, tokenID: String? = nil, algorithmID: String? = nil) {
        self.flags = flags
        self.vendor = vendor
        self.challenge = challenge
        self.length = length
        self.format = format
        self.tokenID = tokenID
        self.algorithmID = algorithmID
    }
}

/// A PKINIT identity (smart-card token or encrypted key file) that needs a PIN or pass phrase.
public struct PKINITIdentity: Sendable, Hashable {
    /// The token state the PKCS#11 module reports (`KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_*`).
    public struct Flags: OptionSet, Sendable, Hashable {
        /// The `KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_*` bits.
        public let rawValue: Int32
        /// Flags from raw `KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_*` bits.
        public init(rawValue: Int32) { self.rawValue = rawValue }
        /// A wrong PIN was entered since the last right one.
        public static let pinCountLow = Flags(rawValue: 1 << 0)
        /// One more wrong PIN locks the token.
        public static let pinFinalTry = Flags(rawValue: 1 << 1)
        /// The token is locked.
        public static let pinLocked = Flags(rawValue: 1 << 2)
    }

    /// The identity string, such as `PKCS11:module_name=…:slotid=1:token=card` or `FILE:/path/key.pem`.
    public var identity: String
    /// What the token reports about its PIN.
    public var flags: Flags

    /// An identity with its token's PIN state.
    public init(identity: String, flags: Flags) {
        self.identity = identity
        self.flags = flags
    }
}

/// The answer to an OTP question.
public struct OTPAnswer: Sendable {
    /// Index of the chosen token in ``OTPChallenge/tokens``.
    public var token: Int
    /// The one-time value.
    public var value: Secret?
    /// The PIN, for tokens that collect one.
    public var pin: Secret?

    /// An answer for the token at index `token`; `value` or `pin` may be nil when the token does not collect it.
    public init(token: Int = 0, value: Secret?, pin: Secret? = nil) {
        self.token = token
        self.value = value
        self.pin = pin
    }
}
