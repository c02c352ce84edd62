internal import CKrb5
internal import NIOCore
import KerberosSecrets

/// Finishes one awaited piece of work exactly once: with the work's result, at a deadline, or on task
/// cancellation, whichever comes first. Cleanups registered with ``onFinish(_:)`` run when it finishes.
final class Resumer<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Result<T, KerberosError>, Never>?
        var result: Result<T, KerberosError>?
        var cleanups: [@Sendable () -> Void] = []
    }

    private let state = Locked(State())

    var isFinished: Bool { state.withLock { $0.result != nil } }
    var result: Result<T, KerberosError>? { state.withLock { $0.result } }

    /// Finishes with `result` unless already finished; returns whether this call finished it.
    @discardableResult
    func resume(_ result: Result<T, KerberosError>) -> Bool {
        let (continuation, cleanups, won) = state.withLock { state -> (CheckedContinuation<Result<T, KerberosError>, Never>?, [@Sendable () -> Void], Bool) in
            guard state.result == nil else { return (nil, [], false) }
            state.result = result
            defer {
                state.continuation = nil
                state.cleanups = []
            }
            return (state.continuation, state.cleanups, true)
        }
        for cleanup in cleanups { cleanup() }
        continuation?.resume(returning: result)
        return won
    }

    /// Runs `cleanup` when finished (at once if already finished).
    func onFinish(_ cleanup: @escaping @Sendable () -> Void) {
        let now = state.withLock { state -> Bool in
            if state.result != nil { return true }
            state.cleanups.append(cleanup)
            return false
        }
        if now { cleanup() }
    }

    /// Calls `start`, which begins the work that finishes this resumer, and suspends (no thread waits) until it is
    /// finished: by the work, by whatever else holds it (a deadline's timer), or by the task's cancellation, with
    /// `KerberosError.taskCancelled(file:line:)`. A task already cancelled does not call `start`.
    func wait(_ start: (Resumer<T>) -> Void) async -> Result<T, KerberosError> {
        let resumed: Result<T, KerberosError>
        if Task.isCancelled {
            resumed = .failure(.taskCancelled())
            resume(resumed)
        } else {
            resumed = await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, KerberosError>, Never>) in
                    install(continuation)
                    start(self)
                }
            } onCancel: {
                self.resume(.failure(.taskCancelled()))
            }
        }
        // The result crossed threads through the continuation, which ThreadSanitizer cannot follow (the concurrency
        // runtime is not instrumented); reading it back under the lock makes the hand-off visible to it.
        return result ?? resumed
    }

    private func install(_ continuation: CheckedContinuation<Result<T, KerberosError>, Never>) {
        let finished = state.withLock { state -> Result<T, KerberosError>? in
            if let result = state.result { return result }
            state.continuation = continuation
            return nil
        }
        if let finished { continuation.resume(returning: finished) }
    }
}

/// Awaits one wait on the event loop: `start`, which must eventually finish the resumer, runs on `loop` with the
/// deadline's timer armed there in the same hop (one hand-off to the loop, no thread waits); the deadline and task
/// cancellation finish the resumer earlier.
func awaitStep<T: Sendable>(deadline: NIODeadline, loop: any EventLoop, onTimeout: @escaping @Sendable () -> KerberosError,
                            _ start: @escaping @Sendable (Resumer<T>) -> Void) async throws(KerberosError) -> T {
    if Task.isCancelled { throw KerberosError.taskCancelled() }
    if deadline <= .now() { throw onTimeout() }
    return try await Resumer<T>().wait { resumer in
        loop.execute {
            guard !resumer.isFinished else { return }
            let timer = loop.scheduleTask(deadline: deadline) { resumer.resume(.failure(onTimeout())) }
            resumer.onFinish { timer.cancel() }
            start(resumer)
        }
    }.get()
}

/// The errors a login ends with when it runs out of time or is cancelled.
extension KerberosError {
    /// The login's deadline passed before the KDCs answered: the answer is kdc-unreachable.
    static func loginTimedOut(realm: String?, timeout: Duration?, file: String = #fileID, line: Int = #line) -> KerberosError {
        let within = timeout.map { " within the login timeout (\($0))" } ?? " before the deadline"
        return KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "No KDC\(realm.map { " of \($0)" } ?? "") answered\(within)", reason: .kdcUnreachable, file: file, line: line)
    }

    /// The calling task was cancelled; the exchange was abandoned.
    static func taskCancelled(file: String = #fileID, line: Int = #line) -> KerberosError {
        KerberosError(code: Int32(KRB5_LIBOS_PWDINTR), message: "The login was cancelled", reason: .cancelled, file: file, line: line)
    }
}
