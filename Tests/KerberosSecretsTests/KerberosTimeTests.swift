import FoundationEssentials
import Testing
import KerberosSecrets

/// KerberosTime on its own, with Foundation's ISO 8601 style (which the module does not link) as the reference.
@Suite("KerberosTime (unit)")
struct KerberosTimeTests {
    @Test("RFC 3339 text matches Foundation's ISO 8601 format and reads back, before and after 1970, to 2106 and beyond")
    func formatsLikeFoundation() throws {
        var generator = SystemRandomNumberGenerator()
        let edges: [Int64] = [0, -1, 59, 86_399, 86_400, 951_782_400, 4_107_542_400, Int64(UInt32.max), -2_208_988_800, 253_402_300_799]
        for seconds in edges + (0..<2_000).map({ _ in Int64.random(in: -2_208_988_800...253_402_300_799, using: &generator) }) {
            let time = KerberosTime(secondsSince1970: seconds)
            let reference = Date.ISO8601FormatStyle().format(Date(timeIntervalSince1970: Double(seconds)))
            #expect(time.description == reference)
            #expect(KerberosTime(rfc3339: reference) == time)
        }
    }

    @Test("offsets, fractions and lower-case separators are read; the value is UTC seconds")
    func readsVariants() {
        let time = KerberosTime(secondsSince1970: 1_795_000_000)
        #expect(KerberosTime(rfc3339: "2026-11-18T11:06:40Z") == time)
        #expect(KerberosTime(rfc3339: "2026-11-18t11:06:40z") == time)
        #expect(KerberosTime(rfc3339: "2026-11-18T11:06:40.999Z") == time)
        #expect(KerberosTime(rfc3339: "2026-11-18T12:36:40+01:30") == time)
        #expect(KerberosTime(rfc3339: "2026-11-18T06:06:40-05:00") == time)
        #expect(KerberosTime(rfc3339: "2024-02-29T00:00:00Z") == KerberosTime(secondsSince1970: 1_709_164_800))
    }

    @Test("malformed or out-of-range text is refused", arguments: [
        "", "2026-11-18", "2026-11-18T11:06:40", "2026-11-18 11:06:40Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z",
        "2026-11-31T00:00:00Z", "2025-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-11-18T24:00:00Z", "2026-11-18T11:60:00Z",
        "2026-11-18T11:06:40.Z", "2026-11-18T11:06:40+0100", "2026-11-18T11:06:40Z ", "+2026-11-18T11:06:40Z", "２０２６-11-18T11:06:40Z",
    ])
    func refuses(text: String) {
        #expect(KerberosTime(rfc3339: text) == nil)
    }

    @Test("arithmetic with Duration and ordering")
    func arithmetic() {
        let start = KerberosTime(secondsSince1970: 1_000)
        #expect(start + .seconds(90) == KerberosTime(secondsSince1970: 1_090))
        #expect(start - .seconds(1_001) == KerberosTime(secondsSince1970: -1))
        #expect(KerberosTime(secondsSince1970: 1_090) - start == .seconds(90))
        #expect(start < start + .seconds(1))
        #expect(start + .milliseconds(1_999) == KerberosTime(secondsSince1970: 1_001))
        let now = KerberosTime.now
        let reference = Int64(Date().timeIntervalSince1970)
        #expect(abs(now.secondsSince1970 - reference) <= 1)
    }
}
