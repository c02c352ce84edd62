import Foundation
public import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Runs a suite's test bodies on threads of their own instead of Swift's cooperative pool.
///
/// Test bodies block: they wait for child processes (`waitpid`) and read blocking sockets with timeouts. The
/// cooperative pool has one thread per core, two on the CI machine, and the daemons and engines under test run their
/// tasks on it. A few blocked test bodies starved them: a reply that was due in 1 s came after 32 s. Under this trait a
/// test body and its structured child tasks run on ``BlockingTestExecutor``, which adds a thread whenever every one it
/// has is busy, so waiting in a test never delays the code under test. Unstructured tasks (`Task { }`), such as a
/// daemon's `run()`, keep the global executor, as in production.
public struct TestThreadsTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    /// Scoped around each test case, where the body runs (a scope around the whole suite would not reach it).
    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        testCase == nil ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(BlockingTestExecutor.shared) { try await function() }
    }
}

extension Trait where Self == TestThreadsTrait {
    /// Test bodies run on their own threads, so their blocking waits leave the cooperative pool to the code under test.
    public static var onTestThreads: Self { Self() }
}

/// A task executor whose pool grows by one thread whenever a job arrives and no thread is idle. Threads stay for the
/// rest of the test run; their number is the most test bodies ever blocked at once.
public final class BlockingTestExecutor: TaskExecutor, @unchecked Sendable {
    public static let shared = BlockingTestExecutor()
    /// The name of its threads (`/proc/self/task/*/comm`), so tests that count threads can leave them out.
    public static let threadName = "test-body"

    private let condition = NSCondition()
    private var pending: [UnownedJob] = []  // guarded by condition
    private var idleThreads = 0  // guarded by condition

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        pending.append(job)
        if pending.count > idleThreads {
            Thread { [self] in
                Self.nameCurrentThread()
                serve()
            }.start()
        } else {
            condition.signal()
        }
        condition.unlock()
    }

    /// Names the calling thread (`pthread_setname_np` is not in Swift's Glibc module; its comm file is).
    private static func nameCurrentThread() {
        let descriptor = open("/proc/thread-self/comm", O_WRONLY)
        guard descriptor >= 0 else { return }
        _ = threadName.withCString { write(descriptor, $0, strlen($0)) }
        close(descriptor)
    }

    private func serve() {
        while true {
            condition.lock()
            idleThreads += 1
            while pending.isEmpty { condition.wait() }
            idleThreads -= 1
            let job = pending.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
