internal import CKrb5
internal import NIOCore
import Dispatch
#if canImport(Glibc)
internal import Glibc
#endif

/// One dedicated thread owning one ``Context``; jobs run on it in the order they were submitted.
///
/// MIT allows a `krb5_context` on one thread at a time, so an exchange keeps its krb5 state on the worker
/// that created it and every step of it runs there. A worker only computes (string-to-key, decryption,
/// PKINIT signatures) and never waits on the network: the steps in between are ``KDCTransport``'s.
final class ContextWorker: Sendable {
    typealias Job = @Sendable (Context?) -> Void

    private struct Queue {
        var jobs: [Job?] = []
        var head = 0
        var stopping = false
    }

    private let queue = Locked(Queue())
    private let available = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    let name: String

    /// Starts the thread; its context is made from `configuration` on the thread itself.
    init(name: String, configuration: Context.Configuration) {
        self.name = name
        let box = Unmanaged.passRetained(ThreadBody { [self] in loop(configuration) })
        var thread = pthread_t()
        let code = pthread_create(&thread, nil, { raw in
            let body = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
            body.run()
            return nil
        }, box.toOpaque())
        precondition(code == 0, "pthread_create failed: \(code)")
        pthread_detach(thread)
    }

    private final class ThreadBody {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    private func loop(_ configuration: Context.Configuration) {
        let context = try? Context(configuration)
        while let job = next() { job(context) }
        context?.reusables.removeAll()
        stopped.signal()
    }

    /// Queues `job`; it gets the worker's context, or nil when the context could not be made or the worker stopped.
    func submit(_ job: @escaping Job) {
        let accepted = queue.withLock { queue -> Bool in
            guard !queue.stopping else { return false }
            queue.jobs.append(job)
            return true
        }
        if accepted { available.signal() } else { job(nil) }
    }

    /// Runs `body` on the worker and finishes `resumer` with its result (unless the deadline or a cancellation
    /// finished it first, in which case `body` does not run at all if it has not started).
    func run<T: Sendable>(_ resumer: Resumer<T>, _ body: @escaping @Sendable (Context) throws(KerberosError) -> T) {
        submit { context in
            guard !resumer.isFinished else { return }
            guard let context else {
                resumer.resume(.failure(KerberosError(code: -1, message: "The Kerberos client has shut down", reason: .other)))
                return
            }
            do throws(KerberosError) {
                resumer.resume(.success(try body(context)))
            } catch {
                resumer.resume(.failure(error))
            }
        }
    }

    /// Lets queued jobs run, then ends the thread; blocks the caller until it has.
    func shutdownBlocking() {
        let first = queue.withLock { queue in
            defer { queue.stopping = true }
            return !queue.stopping
        }
        guard first else { return }
        available.signal()
        stopped.wait()
    }

    /// Lets queued jobs run, then ends the thread; waits for it without blocking a thread.
    func shutdown() async {
        let first = queue.withLock { queue in
            defer { queue.stopping = true }
            return !queue.stopping
        }
        guard first else { return }
        available.signal()
        let stopped = self.stopped
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            // The wait itself is one short blocking call on a Dispatch thread, not on the cooperative pool.
            DispatchQueue.global().async {
                stopped.wait()
                continuation.resume()
            }
        }
    }

    private func next() -> Job? {
        while true {
            available.wait()
            let job = queue.withLock { queue -> Job?? in
                if queue.head < queue.jobs.count {
                    let job = queue.jobs[queue.head]
                    queue.jobs[queue.head] = nil
                    queue.head += 1
                    if queue.head > 64 && queue.head * 2 > queue.jobs.count {
                        queue.jobs.removeFirst(queue.head)
                        queue.head = 0
                    }
                    return job
                }
                return queue.stopping ? .some(nil) : nil
            }
            if let job { return job }
        }
    }
}

/// Finishes one awaited step exactly once: with the work's result, at the deadline, or on task cancellation,
/// whichever comes first. Cleanups registered with ``onFinish(_:)`` run when it finishes.
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

    fileprivate func install(_ continuation: CheckedContinuation<Result<T, KerberosError>, Never>) {
        let finished = state.withLock { state -> Result<T, KerberosError>? in
            if let result = state.result { return result }
            state.continuation = continuation
            return nil
        }
        if let finished { continuation.resume(returning: finished) }
    }
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

/// Awaits one step: `start` begins the work and must eventually finish the resumer; the deadline (an event-loop
/// timer, no thread) and task cancellation finish it earlier.
func awaitStep<T: Sendable>(deadline: NIODeadline, loop: any EventLoop, onTimeout: @escaping @Sendable () -> KerberosError, _ start: (Resumer<T>) -> Void) async throws(KerberosError) -> T {
    let resumer = Resumer<T>()
    if Task.isCancelled { throw KerberosError.taskCancelled() }
    if deadline <= .now() { throw onTimeout() }
    let timer = loop.scheduleTask(deadline: deadline) { resumer.resume(.failure(onTimeout())) }
    resumer.onFinish { timer.cancel() }
    let result = await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, KerberosError>, Never>) in
            resumer.install(continuation)
            start(resumer)
        }
    } onCancel: {
        resumer.resume(.failure(KerberosError.taskCancelled()))
    }
    return try result.get()
}
