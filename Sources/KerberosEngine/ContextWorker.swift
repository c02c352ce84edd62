import KerberosSecrets
internal import CKrb5
internal import NIOCore
internal import NIOPosix
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Dedicated threads, each owning one ``Context``, that take jobs from one queue in the order they were
/// submitted: the only place the package starts threads for krb5 work.
///
/// MIT allows a `krb5_context` on one thread at a time. ``KerberosClient`` gives each exchange one single-thread
/// worker, so every step of it runs where its krb5 state lives; such a worker only computes (string-to-key,
/// decryption, PKINIT signatures) and never waits on the network. ``KerberosExecutor`` is one worker with
/// several threads for blocking krb5 calls.
///
/// The threads hold only the queue, not the worker: a worker that goes away without a shutdown lets its
/// threads finish the queued jobs and end (its `deinit` starts the shutdown; nothing waits for it).
final class ContextWorker: TaskExecutor {
    /// A job gets its thread's context, or why there is none: the context could not be made, or the worker
    /// had shut down before the job was queued.
    typealias Job = @Sendable (Result<Context, KerberosError>) -> Void

    /// What the threads share with the worker; they never reference the worker itself.
    private final class Shared: Sendable {
        struct Queue: Sendable {
            /// Queued jobs from `head` on; a slot is emptied the moment its job is taken, so a finished job's
            /// captures (a login's password, its service) are released at once, not at the next compaction.
            var jobs: [Job?] = []
            var head = 0
            var stopping = false
        }

        let queue = Locked(Queue())
        let available = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
        let threadCount: Int

        init(threadCount: Int) {
            self.threadCount = threadCount
        }

        /// Marks the queue as stopping and wakes every thread; returns whether this call did it.
        func beginShutdown() -> Bool {
            let first = queue.withLock { queue in
                defer { queue.stopping = true }
                return !queue.stopping
            }
            if first { for _ in 0..<threadCount { available.signal() } }
            return first
        }

        /// Queues `job` and wakes a thread; false once stopping.
        func enqueue(_ job: @escaping Job) -> Bool {
            let accepted = queue.withLock { queue -> Bool in
                guard !queue.stopping else { return false }
                queue.jobs.append(job)
                return true
            }
            if accepted { available.signal() }
            return accepted
        }

        /// Blocks until a job is queued; nil once stopping with nothing left.
        func next() -> Job? {
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

    /// The calling thread's context, for a worker that runs its jobs where they are submitted.
    private final class Inline: @unchecked Sendable {
        let context: Context
        let thread = pthread_self()
        var stopped = false

        init(_ context: Context) { self.context = context }

        /// Refuses later jobs and drops what the jobs kept in the context (a worker thread does this as it ends),
        /// which breaks the cycles between the context and the objects it keeps (a keytab pool's keytabs).
        func stop() {
            stopped = true
            context.reusables.removeAll()
            ContextWorker.threadContext = nil
        }
    }

    /// A worker thread's context and which worker the thread belongs to.
    private final class ThreadContext {
        let owner: ObjectIdentifier
        let context: Context
        init(owner: ObjectIdentifier, context: Context) {
            self.owner = owner
            self.context = context
        }
    }

    /// The context of the worker thread that reads it; nil on every other thread. Each thread reads only its own
    /// value, so the non-`Sendable` context never crosses threads through it.
    private nonisolated(unsafe) static let current = ThreadSpecificVariable<ThreadContext>()

    private static var threadContext: ThreadContext? {
        get { current.currentValue }
        set { current.currentValue = newValue }
    }

    /// Who the calling thread must belong to for ``context()``.
    private var identity: ObjectIdentifier {
        switch runner {
        case .threads(let shared): ObjectIdentifier(shared)
        case .inline(let inline): ObjectIdentifier(inline)
        }
    }

    /// Where jobs run: on the worker's own threads, or at once on the one thread of an inline worker
    /// (``init(inlineOn:)``).
    private enum Runner: Sendable {
        case threads(Shared)
        case inline(Inline)
    }

    private let runner: Runner
    let name: String
    /// What the worker serves, for the error of work submitted after the shutdown ("client", "executor").
    private let owner: String

    /// The number of threads the worker started (none for an inline worker).
    var threadCount: Int {
        switch runner {
        case .threads(let shared): shared.threadCount
        case .inline: 0
        }
    }

    /// Starts `threads` threads named `name` (`name-N` when more than one); each makes its context from
    /// `configuration` on the thread itself. `owner` names what the worker serves in the error of work
    /// submitted after the shutdown.
    init(name: String, threads: Int = 1, configuration: Context.Configuration, owner: String = "client") {
        precondition(threads > 0, "a worker needs at least one thread")
        self.name = name
        self.owner = owner
        let shared = Shared(threadCount: threads)
        runner = .threads(shared)
        for index in 0..<threads {
            shared.finished.enter()
            WorkerThread.start(name: threads == 1 ? name : "\(name)-\(index)") {
                let context: Result<Context, KerberosError>
                do throws(KerberosError) { context = .success(try Context(configuration)) } catch { context = .failure(error) }
                if case .success(let made) = context { ContextWorker.threadContext = ThreadContext(owner: ObjectIdentifier(shared), context: made) }
                while let job = shared.next() { job(context) }
                ContextWorker.threadContext = nil
                if case .success(let context) = context { context.reusables.removeAll() }
                shared.finished.leave()
            }
        }
    }

    /// A worker with no thread of its own, for a process's one login on its one thread
    /// (``KerberosClient/init(oneShotOn:context:configuration:)``): each job runs at once, where it is submitted,
    /// with `context`. Only that thread may submit; it is the thread that makes the worker.
    init(inlineOn context: Context) {
        name = "inline"
        owner = "client"
        let inline = Inline(context)
        runner = .inline(inline)
        ContextWorker.threadContext = ThreadContext(owner: ObjectIdentifier(inline), context: context)
    }

    /// The worker's context, for code that runs on its thread: its jobs, and the tasks it is the executor of (a
    /// login's code between its KDC messages). Throws on any other thread, which is where work runs that was
    /// submitted after the worker shut down.
    func context() throws(KerberosError) -> Context {
        guard let current = Self.threadContext, current.owner == identity else { throw .shutDown(owner) }
        return current.context
    }

    /// Runs a task's job on the worker's thread: a task whose executor preference is the worker runs its code there,
    /// between suspensions. After the shutdown the job runs where it was enqueued, and its ``context()`` throws.
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        submit { _ in job.runSynchronously(on: executor) }
    }

    deinit {
        if case .threads(let shared) = runner { _ = shared.beginShutdown() }
    }

    /// Queues `job`; it gets a thread's context, or the error that says why there is none.
    func submit(_ job: @escaping Job) {
        switch runner {
        case .inline(let inline):
            precondition(pthread_equal(inline.thread, pthread_self()) != 0, "an inline worker runs jobs on the thread that made it")
            job(inline.stopped ? .failure(.shutDown(owner)) : .success(inline.context))
        case .threads(let shared):
            if !shared.enqueue(job) { job(.failure(.shutDown(owner))) }
        }
    }

    /// Runs `body` on the worker and finishes `resumer` with its result (unless the deadline or a cancellation
    /// finished it first, in which case `body` does not run at all if it has not started).
    func run<T: Sendable>(_ resumer: Resumer<T>, _ body: @escaping @Sendable (Context) throws(KerberosError) -> T) {
        submit { context in
            guard !resumer.isFinished else { return }
            switch context {
            case .failure(let error):
                resumer.resume(.failure(error))
            case .success(let context):
                do throws(KerberosError) {
                    resumer.resume(.success(try body(context)))
                } catch {
                    resumer.resume(.failure(error))
                }
            }
        }
    }

    /// Lets queued jobs run, then ends the threads; blocks the caller until they have ended.
    ///
    /// > Warning: Blocks; from async code use ``shutdown()``.
    @available(*, noasync, message: "blocks the calling thread; use 'await shutdown()'")
    func shutdownBlocking() {
        switch runner {
        case .inline(let inline):
            inline.stop()
        case .threads(let shared):
            _ = shared.beginShutdown()
            shared.finished.wait()
        }
    }

    /// Lets queued jobs run, then ends the threads; suspends (no thread waits) until they have ended.
    func shutdown() async {
        switch runner {
        case .inline(let inline):
            inline.stop()
        case .threads(let shared):
            _ = shared.beginShutdown()
            let finished = shared.finished
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                finished.notify(queue: .global()) { continuation.resume() }
            }
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
    // The result crossed threads through the continuation, which ThreadSanitizer cannot follow (the concurrency
    // runtime is not instrumented); reading it back under the resumer's lock makes the hand-off visible to it.
    return try (resumer.result ?? result).get()
}
