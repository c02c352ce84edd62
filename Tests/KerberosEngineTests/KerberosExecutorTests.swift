import Foundation
import Kerberos
import KerberosEngine
import Testing

/// `KerberosExecutor` without a KDC: contexts from an empty configuration file.
@Suite("KerberosExecutor")
struct KerberosExecutorTests {
    final class Captured: Sendable {}

    private static func configuration() throws -> Context.Configuration {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-executor-\(getpid()).conf").path
        try "[libdefaults]\n default_realm = EXAMPLE.TEST\n".write(toFile: file, atomically: true, encoding: .utf8)
        return .files(file)
    }

    @Test("a finished job's captures are released at once (a login's password does not linger in the queue)")
    func releasesFinishedJobs() async throws {
        let executor = try KerberosExecutor(threads: 1, configuration: Self.configuration())
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
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { ran.wait(); continuation.resume() }
        }
        // The worker drops the job right after running it; give it a moment to get there.
        for _ in 0..<100 where weakCapture != nil { try await Task.sleep(for: .milliseconds(10)) }
        #expect(weakCapture == nil, "the job's closure is still held after it ran")
        await executor.shutdown()
    }

    @Test("a dropped executor is deinitialised: its threads do not keep it alive")
    func droppedExecutorDeinits() throws {
        weak var weakExecutor: KerberosExecutor?
        do {
            let executor = try KerberosExecutor(threads: 2, configuration: Self.configuration())
            weakExecutor = executor
            let ran = DispatchSemaphore(value: 0)
            executor.submit { context, _ in
                _ = context
                ran.signal()
            }
            ran.wait()
        }
        #expect(weakExecutor == nil)
    }

    @Test("async shutdown runs queued work first; work submitted afterwards fails with a real error code")
    func asyncShutdown() async throws {
        let executor = try KerberosExecutor(threads: 1, configuration: Self.configuration())
        let realm = try await executor.run { context in try context.defaultRealm() }
        #expect(realm == "EXAMPLE.TEST")
        await executor.shutdown()
        await #expect(throws: KerberosError.self) { try await executor.run { _ in 1 } }
        do {
            _ = try await executor.run { _ in 1 }
        } catch let error as KerberosError {
            #expect(error.code != -1)
            #expect(error.message == "The Kerberos executor has shut down")
        }
        await executor.shutdown()  // a second shutdown returns once the threads have ended
    }

    @Test("a run cancelled before its job starts throws CancellationError and never runs the job")
    func cancellationBeforeStart() async throws {
        let executor = try KerberosExecutor(threads: 1, configuration: Self.configuration())
        let blocker = DispatchSemaphore(value: 0)
        let started = DispatchSemaphore(value: 0)
        executor.submit { _, _ in
            started.signal()
            blocker.wait()
        }
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { started.wait(); continuation.resume() }
        }
        let ran = Locked(false)
        let task = Task { try await executor.run { _ in ran.withLock { $0 = true } } }
        try await Task.sleep(for: .milliseconds(50))
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        blocker.signal()
        await executor.shutdown()
        #expect(!ran.withLock { $0 }, "the cancelled job ran")
    }

    @Test("a run cancelled while its job runs throws CancellationError at once; the job runs to its end on its thread")
    func cancellationWhileRunning() async throws {
        let executor = try KerberosExecutor(threads: 1, configuration: Self.configuration())
        let started = DispatchSemaphore(value: 0)
        let blocker = DispatchSemaphore(value: 0)
        let finished = Locked(false)
        let task = Task {
            try await executor.run { _ in
                started.signal()
                blocker.wait()
                finished.withLock { $0 = true }
            }
        }
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { started.wait(); continuation.resume() }
        }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(!finished.withLock { $0 }, "the caller waited for the job")
        blocker.signal()
        await executor.shutdown()
        #expect(finished.withLock { $0 }, "the started job was stopped")
    }

    @Test("a run whose task is already cancelled does not queue its job")
    func alreadyCancelled() async throws {
        let executor = try KerberosExecutor(threads: 1, configuration: Self.configuration())
        let ran = Locked(false)
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await executor.run { _ in ran.withLock { $0 = true } }
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        await executor.shutdown()
        #expect(!ran.withLock { $0 })
    }
}
