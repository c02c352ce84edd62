import Foundation
import Kerberos
import Testing

/// `KerberosExecutor` without a KDC: contexts from an empty configuration file.
@Suite("KerberosExecutor")
struct KerberosExecutorTests {
    final class Captured: Sendable {}

    @Test("a finished job's captures are released at once (a login's password does not linger in the queue)")
    func releasesFinishedJobs() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-executor-\(getpid()).conf").path
        _ = FileManager.default.createFile(atPath: file, contents: Data("[libdefaults]\n default_realm = EXAMPLE.TEST\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let executor = try KerberosExecutor(threads: 1, configuration: .files(file))
        defer { executor.shutdown() }
        weak var weakCapture: Captured?
        let ran = DispatchSemaphore(value: 0)
        do {
            let captured = Captured()
            weakCapture = captured
            executor.submit { _, _ in
                withExtendedLifetime(captured) {}
                ran.signal()
            }
        }
        ran.wait()
        // The worker drops the job right after running it; give it a moment to get there.
        for _ in 0..<100 where weakCapture != nil { Thread.sleep(forTimeInterval: 0.01) }
        #expect(weakCapture == nil, "the job's closure is still held after it ran")
    }
}
