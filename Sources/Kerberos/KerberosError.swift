import CKrb5
#if canImport(Glibc)
internal import Glibc
#endif

/// An error reported by MIT krb5, with the reason a login program branches on.
///
/// The message is captured with `krb5_get_error_message` right after the failing call, on the
/// same context, so it carries krb5's extended detail ("Client 'x@R' not found in Kerberos database").
/// Messages never contain passwords: krb5 does not put them there, and this package never adds them.
///
/// ```swift
/// do { try context.initialCredentials(for: bob, password: secret) }
/// catch KerberosError.Reason.badPassword { … }
/// ```
public struct KerberosError: Error, Sendable, CustomStringConvertible {
    /// The raw `krb5_error_code` (a com_err code; 0 never appears here).
    public let code: Int32
    /// The message krb5 gave for this failure.
    public let message: String
    /// Why the operation failed, in terms a caller acts on.
    public let reason: Reason
    /// Where in this package the failure was observed (for the package's own diagnostics, not API).
    package let file: String
    /// The line in this package where the failure was observed.
    package let line: Int

    /// The symbolic name of `code` from krb5's error table, such as `KRB5KDC_ERR_PREAUTH_FAILED`.
    public var name: String {
        Self.symbolicNames[code] ?? "KRB5_ERROR_\(code)"
    }

    /// The message and the symbolic name, such as `Preauthentication failed (KRB5KDC_ERR_PREAUTH_FAILED)`.
    public var description: String { "\(message) (\(name))" }

    /// Creates an error from parts, for the package's own front ends and tests.
    package init(code: Int32, message: String, reason: Reason? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.reason = reason ?? Reason(code: code)
        self.file = file
        self.line = line
    }

    /// A failure reason a login program branches on. Extensible: compare with the constants.
    public struct Reason: Hashable, Sendable, CustomStringConvertible {
        /// The reason's name, such as `bad-password`.
        public let rawValue: String
        /// A reason with the given name; prefer the constants.
        public init(rawValue: String) { self.rawValue = rawValue }
        /// The reason's name, such as `bad-password`.
        public var description: String { rawValue }

        /// The password (or key) was wrong: the KDC refused pre-authentication or the reply did not decrypt.
        public static let badPassword = Reason(rawValue: "bad-password")
        /// The client principal is not in the KDC's database.
        public static let unknownPrincipal = Reason(rawValue: "unknown-principal")
        /// The password has expired and was not (or could not be) changed.
        public static let passwordExpired = Reason(rawValue: "password-expired")
        /// The account is disabled, locked out, revoked or expired.
        public static let accountDisabled = Reason(rawValue: "account-disabled")
        /// Client and KDC clocks differ by more than the allowed skew.
        public static let clockSkew = Reason(rawValue: "clock-skew")
        /// No KDC for the realm could be reached or located.
        public static let kdcUnreachable = Reason(rawValue: "kdc-unreachable")
        /// Credentials were obtained but could not be verified against the keytab.
        public static let verificationFailed = Reason(rawValue: "verification-failed")
        /// The prompter or responder declined or cancelled.
        public static let cancelled = Reason(rawValue: "cancelled")
        /// The KDC requires a pre-authentication mechanism the client could not perform (for example OTP without FAST).
        public static let preauthUnavailable = Reason(rawValue: "preauth-unavailable")
        /// Invalid arguments or configuration on the client side.
        public static let invalidRequest = Reason(rawValue: "invalid-request")
        /// Anything else.
        public static let other = Reason(rawValue: "other")

        /// Classifies a krb5 error code.
        init(code: Int32) {
            switch Int(code) {
            case KRB5KDC_ERR_PREAUTH_FAILED, KRB5KRB_AP_ERR_BAD_INTEGRITY, KRB5_PREAUTH_FAILED, KRB5KRB_AP_ERR_MODIFIED:
                self = .badPassword
            case KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN:
                self = .unknownPrincipal
            case KRB5KDC_ERR_KEY_EXP, KRB5_CHPW_FAIL, KRB5_CHPW_PWDNULL:
                self = .passwordExpired
            case KRB5KDC_ERR_CLIENT_REVOKED, KRB5KDC_ERR_NAME_EXP, KRB5KDC_ERR_POLICY, KRB5KDC_ERR_CLIENT_NOTYET:
                self = .accountDisabled
            case KRB5KRB_AP_ERR_SKEW, KRB5_KDCREP_SKEW:
                self = .clockSkew
            case KRB5_KDC_UNREACH, KRB5_REALM_CANT_RESOLVE, KRB5_REALM_UNKNOWN:
                self = .kdcUnreachable
            case KRB5_LIBOS_PWDINTR, KRB5_LIBOS_CANTREADPWD:
                self = .cancelled
            case KRB5KDC_ERR_PADATA_TYPE_NOSUPP, KRB5_PREAUTH_NO_KEY, KRB5KDC_ERR_MORE_PREAUTH_DATA_REQUIRED:
                self = .preauthUnavailable
            case KRB5_PARSE_MALFORMED, KRB5_CONFIG_NODEFREALM, KRB5_PARSE_ILLCHAR, KRB5_CONFIG_BADFORMAT:
                self = .invalidRequest
            default:
                self = .other
            }
        }
    }
}

extension KerberosError.Reason {
    /// Lets `catch KerberosError.Reason.badPassword` match.
    public static func ~= (reason: Self, error: any Error) -> Bool {
        (error as? KerberosError)?.reason == reason
    }
}

extension KerberosError {
    /// The executor or client had shut down, so the work was not run (`ECANCELED`).
    package static func shutDown(_ what: String, file: String = #fileID, line: Int = #line) -> KerberosError {
        KerberosError(code: ECANCELED, message: "The Kerberos \(what) has shut down", reason: .other, file: file, line: line)
    }

    /// A keytab has no entry to take a principal from (`KRB5_KT_NOTFOUND`).
    package static func emptyKeytab(_ name: String, file: String = #fileID, line: Int = #line) -> KerberosError {
        KerberosError(code: Int32(KRB5_KT_NOTFOUND), message: "Keytab \(name) has no entries", reason: .invalidRequest, file: file, line: line)
    }

    /// Captures the message for `code` from `context` right away and frees krb5's copy.
    init(code: krb5_error_code, context: krb5_context?, reason: Reason? = nil, file: String = #fileID, line: Int = #line) {
        var text = "krb5 error \(code)"
        if let raw = krb5_get_error_message(context, code) {
            text = String(cString: raw)
            krb5_free_error_message(context, raw)
        }
        self.init(code: code, message: text, reason: reason, file: file, line: line)
    }
}

extension KerberosError {
    /// A ``KerberosError`` as is; any other error (a callback's) as ``Reason/cancelled``.
    package init(wrapping error: any Error) {
        if let error = error as? KerberosError {
            self = error
        } else {
            self.init(code: Int32(KRB5_LIBOS_PWDINTR), message: "A callback stopped the exchange: \(error)", reason: .cancelled)
        }
    }
}
