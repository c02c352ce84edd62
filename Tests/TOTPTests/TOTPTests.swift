import TOTP
import Testing

@Suite("The tests' RFC 6238 implementation")
struct TOTPTests {
    /// RFC 6238 Appendix B, SHA-1 rows (8 digits, secret "12345678901234567890").
    @Test("matches RFC 6238 Appendix B", arguments: [
        (59 as UInt64, "94287082"), (1_111_111_109, "07081804"), (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"), (2_000_000_000, "69279037"), (20_000_000_000, "65353130"),
    ])
    func appendixB(time: UInt64, expected: String) {
        #expect(TOTP.code(secret: Array("12345678901234567890".utf8), time: time, digits: 8) == expected)
    }

    @Test("base32 decodes RFC 4648 vectors")
    func base32() {
        #expect(TOTP.base32Decode("MZXW6YTBOI======") == Array("foobar".utf8))
        #expect(TOTP.base32Decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") == Array("12345678901234567890".utf8))
    }
}
