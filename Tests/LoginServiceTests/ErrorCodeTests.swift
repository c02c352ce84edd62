import Foundation
import Testing

/// The CHANGELOG promises no `code: -1` errors: every `KerberosError` the package makes carries a real krb5 or
/// errno code, so callers can tell failures apart.
@Suite("Error codes")
struct ErrorCodeTests {
    @Test("no KerberosError in the sources is made with code -1")
    func noMinusOne() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        #expect(files.count > 20, "the sources were found: \(sources.path)")
        for file in files {
            let text = try String(contentsOfFile: sources.appendingPathComponent(file).path, encoding: .utf8)
            #expect(!text.contains("KerberosError(code: -1,"), "\(file) makes a KerberosError with code -1")
        }
    }
}
