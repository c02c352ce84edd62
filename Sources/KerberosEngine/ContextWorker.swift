import KerberosSecrets
internal import NIOCore
internal import NIOPosix

/// Where an exchange's krb5 work runs: dedicated threads, each owning one `Context`, that take jobs in the order
/// they were submitted (``WorkerThreads``), or, for a process's one login, the thread that runs its event loop.
///
/// MIT allows a `krb5_context` on one thread at a time. ``KerberosClient`` gives each exchange one single-thread
/// worker, so every step of it runs where its krb5 state lives; such a worker only computes (string-to-key,
/// decryption, PKINIT signatures) and never waits on the network. ``KerberosExecutor`` is one worker with
/// several threads for blocking krb5 calls.
///
/// A worker is also a `TaskExecutor`: a login task whose executor preference is the worker runs its code on the
/// worker's thread between suspensions (``KerberosSession``), and ``context()`` hands that code the thread's
/// context.
final class ContextWorker: TaskExecutor {
    /// A job gets its thread's context, or why there is none: the context could not be made, or the worker
    /// had shut down before the job was queued.
    typealias Job = WorkerThreads.Job

    /// What an inline worker's jobs share, on its event loop's thread only.
    private struct Inline {
        let context: Context
        var stopped = false
    }

    /// Where jobs run: on the worker's own threads, or at once on the event-loop thread of an inline worker
    /// (``init(inlineOn:)``).
    private enum Runner: Sendable {
        case threads(WorkerThreads)
        case inline(NIOLoopBoundBox<Inline>)
    }

    /// A worker thread's context and the worker the thread belongs to.
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

    /// The calling thread's worker context, set by the thread (or the inline worker's loop) itself.
    static func setThreadContext(_ context: Context?, owner: AnyObject) {
        current.currentValue = context.map { ThreadContext(owner: ObjectIdentifier(owner), context: $0) }
    }

    private let runner: Runner
    let name: String
    /// What the worker serves, for the error of work submitted after the shutdown ("client", "executor").
    private let owner: String

    /// The number of threads the worker started (none for an inline worker).
    var threadCount: Int {
        switch runner {
        case .threads(let threads): threads.count
        case .inline: 0
        }
    }

    /// Starts `threads` threads named `name` (`name-N` when more than one); each makes its context from
    /// `configuration` on the thread itself. `owner` names what the worker serves in the error of work
    /// submitted after the shutdown.
    init(name: String, threads: Int = 1, configuration: Context.Configuration, owner: String = "client") {
        self.name = name
        self.owner = owner
        runner = .threads(WorkerThreads(name: name, count: threads, configuration: configuration))
    }

    /// Who the calling thread must belong to for ``context()``.
    private var identity: ObjectIdentifier {
        switch runner {
        case .threads(let threads): ObjectIdentifier(threads)
        case .inline(let inline): ObjectIdentifier(inline)
        }
    }

    /// A worker with no thread of its own, for a process's one login on its one thread
    /// (``KerberosClient/init(oneShotOn:context:configuration:)``): each job runs at once, where it is submitted,
    /// with `context`. The calling thread must be running an event loop
    /// (`MultiThreadedEventLoopGroup.withCurrentThreadAsEventLoop`), and only it may submit.
    init(inlineOn context: Context) {
        guard let loop = MultiThreadedEventLoopGroup.currentEventLoop else {
            preconditionFailure("an inline worker is made on the thread of its event loop")
        }
        name = "inline"
        owner = "client"
        let inline = NIOLoopBoundBox(Inline(context: context), eventLoop: loop)
        runner = .inline(inline)
        Self.setThreadContext(context, owner: inline)
    }

    /// The worker's context, for code that runs on its thread: its jobs, and the tasks it is the executor of (a
    /// login's code between its KDC messages). Throws on any other thread, which is where work runs that was
    /// submitted after the worker shut down.
    func context() throws(KerberosError) -> Context {
        guard let current = Self.current.currentValue, current.owner == identity else { throw .shutDown(owner) }
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
        if case .threads(let threads) = runner { threads.beginShutdown() }
    }

    /// Queues `job`; it gets a thread's context, or the error that says why there is none.
    func submit(_ job: @escaping Job) {
        switch runner {
        case .inline(let inline):
            let state = inline.value  // on another thread than the loop's: a precondition failure
            job(state.stopped ? .failure(.shutDown(owner)) : .success(state.context))
        case .threads(let threads):
            if !threads.enqueue(job) { job(.failure(.shutDown(owner))) }
        }
    }

    /// Runs `body` on the worker and finishes `resumer` with its result (unless the deadline or a cancellation
    /// finished it first, in which case `body` does not run at all if it has not started).
    func run<T: Sendable>(_ resumer: Resumer<T>, _ body: @escaping @Sendable (Context) throws(KerberosError) -> T) {
        submit { context in
            guard !resumer.isFinished else { return }
            resumer.resume(context.flatMap { context in Result { () throws(KerberosError) in try body(context) } })
        }
    }

    /// Lets queued jobs run, then ends the threads; blocks the caller until they have ended.
    ///
    /// > Warning: Blocks; from async code use ``shutdown()``.
    @available(*, noasync, message: "blocks the calling thread; use 'await shutdown()'")
    func shutdownBlocking() {
        switch runner {
        case .inline(let inline):
            Self.stop(inline)
        case .threads(let threads):
            threads.beginShutdown()
            threads.waitUntilFinished()
        }
    }

    /// Lets queued jobs run, then ends the threads; suspends (no thread waits) until they have ended.
    func shutdown() async {
        switch runner {
        case .inline(let inline):
            Self.stop(inline)
        case .threads(let threads):
            threads.beginShutdown()
            await threads.finish()
        }
    }

    /// Refuses an inline worker's later jobs and drops what the jobs kept in its context (a worker thread does
    /// this as it ends), which breaks the cycles between the context and the objects it keeps.
    private static func stop(_ inline: NIOLoopBoundBox<Inline>) {
        inline.value.stopped = true
        inline.value.context.reusables.removeAll()
        setThreadContext(nil, owner: inline)
    }
}
