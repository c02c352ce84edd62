import Foundation
import TestRealm
import Testing

@Suite("The systemd unit")
struct ServiceUnitTests {
    @Test("systemd-analyze verify accepts the hardened unit")
    func verifyUnit() throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Docker/systemd/krb5-verifyd.service")
        let text = try String(contentsOf: source, encoding: .utf8)
        #expect(text.contains("NoNewPrivileges=yes") && text.contains("ProtectSystem=strict") && text.contains("RestrictAddressFamilies=AF_UNIX"))
        // Point ExecStart at the binary just built and drop the man-page link, so only the unit itself is judged.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unit-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let unit = directory.appendingPathComponent("krb5-verifyd.service")
        try text.replacingOccurrences(of: "/usr/local/sbin/krb5-verifyd", with: TestRealm.executable("krb5-verifyd"))
            .write(to: unit, atomically: true, encoding: .utf8)
        let result = try TestRealm.run(["systemd-analyze", "verify", "--man=no", unit.path])
        let complaints = result.output.split(separator: "\n").filter { $0.contains("krb5-verifyd.service") }
        #expect(complaints.isEmpty, "\(complaints)")
    }
}
