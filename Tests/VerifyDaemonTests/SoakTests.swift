import Foundation
import TestRealm
import Testing
import VerifyDaemon

/// The short run of `make soak`: mixed outcomes at concurrency 16, every reply checked, through the real
/// `krb5-bench soak` client against a daemon in this process.
@Suite("Soak (short)", .onTestThreads)
struct SoakTests {
    @Test("1,200 mixed logins at concurrency 16: no wrong answer, nothing left open")
    func shortSoak() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.failureFloor = .zero
            configuration.throttleFailures = 1_000_000
            configuration.workers = 4
            configuration.logLevel = .warning
        }) { fixture throws in
            let otpUser = try fixture.realm.addOTPUser(prefix: "soak")
            let result = try TestRealm.run([TestRealm.executable("krb5-bench"), "soak", "--realm-env", fixture.realm.directory + "/realm.env",
                                            "--sasl-socket", fixture.saslSocket, "--socket", fixture.socket, "--otp-user", otpUser,
                                            "--count", "1200", "--concurrency", "16", "--pid", String(getpid())])
            #expect(result.status == 0, "\(result.output)")
            let json = try #require(result.output.split(separator: "\n").last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
            #expect(json["wrong"] as? Int == 0)
            #expect(json["logins"] as? Int ?? 0 >= 1200)
            // This daemon shares the test process with other suites, so its own counters stand in for the
            // process-wide RSS and descriptor counts that `make soak` watches on a separate daemon.
            for _ in 0..<50 where fixture.daemon.counts.connections > 0 { try await Task.sleep(for: .milliseconds(20)) }
            #expect(fixture.daemon.counts.connections == 0, "every connection closed")
            #expect(fixture.daemon.counts.inFlight == 0 && fixture.daemon.counts.parked == 0)
        }
    }
}
