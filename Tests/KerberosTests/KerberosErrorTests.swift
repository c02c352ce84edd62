import CKrb5
import Kerberos
import Testing

@Suite("KerberosError without a KDC")
struct KerberosErrorTests {
    @Test("codes map to the reasons login programs branch on")
    func reasons() {
        let cases: [(Int32, KerberosError.Reason)] = [
            (Int32(KRB5KDC_ERR_PREAUTH_FAILED), .badPassword),
            (Int32(KRB5KRB_AP_ERR_BAD_INTEGRITY), .badPassword),
            (Int32(KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN), .unknownPrincipal),
            (Int32(KRB5KDC_ERR_KEY_EXP), .passwordExpired),
            (Int32(KRB5KDC_ERR_CLIENT_REVOKED), .accountDisabled),
            (Int32(KRB5KRB_AP_ERR_SKEW), .clockSkew),
            (Int32(KRB5_KDC_UNREACH), .kdcUnreachable),
            (Int32(KRB5_LIBOS_PWDINTR), .cancelled),
            (12345, .other),
        ]
        for (code, reason) in cases {
            #expect(KerberosError(code: code, message: "m").reason == reason, "code \(code)")
        }
    }

    @Test("the symbolic name comes from krb5's error table")
    func symbolicName() {
        #expect(KerberosError(code: Int32(KRB5KDC_ERR_PREAUTH_FAILED), message: "m").name == "KRB5KDC_ERR_PREAUTH_FAILED")
        #expect(KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "m").name == "KRB5_KDC_UNREACH")
        #expect(KerberosError(code: 7, message: "m").name == "KRB5_ERROR_7")
    }

    @Test("catch by reason with ~=")
    func patternMatch() {
        let error: any Error = KerberosError(code: Int32(KRB5KDC_ERR_PREAUTH_FAILED), message: "Preauthentication failed")
        switch error {
        case KerberosError.Reason.unknownPrincipal: Issue.record("wrong reason matched")
        case KerberosError.Reason.badPassword: break
        default: Issue.record("no reason matched")
        }
    }

    @Test("a secret's description never shows its bytes")
    func secretRedacted() {
        let secret = Secret("hunter2")
        #expect(!"\(secret)".contains("hunter2"))
        #expect(secret.count == 7)
        #expect(secret.constantTimeEquals(Secret("hunter2")))
        #expect(!secret.constantTimeEquals(Secret("hunter3")))
        #expect(Secret(copying: [0x61, 0x00, 0x62]).containsNUL)
    }
}
