import CKrb5

/// How ``Context/verify(_:options:)`` checks that credentials came from the real KDC.
///
/// Verification asks the KDC for a ticket to a service whose key this host holds (the host keytab) and
/// decrypts it. A forged KDC reply for the user's password cannot produce that ticket, so verification is
/// what stops an attacker who answers in place of the KDC (the "Zanarotti attack"). See `docs/security.md`.
public struct VerificationOptions {
    /// The service principal whose key is in the keytab; nil tries every host principal in the keytab.
    public var server: Principal?
    /// The keytab; nil means the default keytab.
    public var keytab: Keytab?
    /// Fail when verification cannot be performed (no keytab, no key for the server). On by default:
    /// turning it off makes a missing keytab silently accept unverified credentials.
    public var nofail: Bool = true

    /// Options for checking against `server`'s key in `keytab`; the defaults try every host key in the
    /// default keytab and fail when none can be used.
    public init(server: Principal? = nil, keytab: Keytab? = nil, nofail: Bool = true) {
        self.server = server
        self.keytab = keytab
        self.nofail = nofail
    }
}

extension Context {
    /// Verifies initial credentials against a keytab; throws with reason ``KerberosError/Reason/verificationFailed``
    /// (or ``KerberosError/Reason/kdcUnreachable``) when they cannot be verified.
    ///
    /// The corresponding C function is `krb5_verify_init_creds` with `krb5_verify_init_creds_opt_set_ap_req_nofail`.
    /// > Warning: Blocks on the network (one TGS exchange).
    public func verify(_ credentials: Credentials, options: VerificationOptions = VerificationOptions()) throws(KerberosError) {
        var opt = krb5_verify_init_creds_opt()
        krb5_verify_init_creds_opt_init(&opt)
        krb5_verify_init_creds_opt_set_ap_req_nofail(&opt, options.nofail ? 1 : 0)
        let code = withExtendedLifetime(options) {
            krb5_verify_init_creds(raw, &credentials.raw, options.server?.raw, options.keytab?.raw, nil, &opt)
        }
        if code != 0 {
            let reason = KerberosError.Reason(code: code)
            throw error(code, reason: reason == .kdcUnreachable ? .kdcUnreachable : .verificationFailed)
        }
    }
}
