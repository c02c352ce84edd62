/// A fixed set of dedicated threads, each owning one `Context`, that run blocking krb5 work for
/// `async` callers.
///
/// For logins, prefer ``KerberosClient``: it never blocks a thread on a KDC and bounds every call in time.
/// The executor remains for programs that use the blocking `Context` API (`krb5_get_init_creds_password`
/// with a prompter, `krb5_get_etype_info`, verification with `krb5_verify_init_creds`).
///
/// krb5 blocks on the network, on prompters and on responders; such calls must not run on Swift's
/// cooperative pool or an event loop. `run` hands a closure to the next free thread and suspends the
/// caller until it finishes. Each thread creates its context once and keeps it, honouring MIT's rule of
/// one thread per context.
///
/// Shut it down with `await shutdown()` (or ``shutdownBlocking()`` from synchronous code). An executor
/// that is dropped without a shutdown still ends its threads once their queued work is done.
///
/// ```swift
/// let executor = try KerberosExecutor(threads: 4)
/// let end = try await executor.run { context in
///     let alice = try Principal(parsing: "alice", in: context)
///     return try context.initialCredentials(for: alice, password: secret).endTime
/// }
/// await executor.shutdown()
/// ```
public final class KerberosExecutor: Sendable {
    private let worker: ContextWorker

    /// The number of threads.
    public var threadCount: Int { worker.threadCount }

    /// Starts `threads` threads with contexts from `configuration`.
    ///
    /// Throws when the configuration cannot make a context.
    public init(threads: Int = 2, configuration: Context.Configuration = .default) throws {
        precondition(threads > 0, "KerberosExecutor needs at least one thread")
        _ = try Context(configuration)
        worker = ContextWorker(name: "krb5-worker", threads: threads, configuration: configuration, owner: "executor")
    }

    /// Runs `body` on one of the executor's threads with that thread's context and returns its result.
    ///
    /// `body` may block; the caller only suspends. When the calling task is cancelled, this throws
    /// `CancellationError` at once: `body` never runs if it has not started, and runs to its end on its thread,
    /// its result dropped, if it has.
    public func run<T: Sendable>(_ body: @escaping @Sendable (Context) throws -> T) async throws -> T {
        let outcome = await Resumer<Result<T, any Error>>().wait { resumer in
            worker.run(resumer) { context in Result { try body(context) } }
        }
        switch outcome {
        case .success(let result): return try result.get()
        case .failure(let error) where error.reason == .cancelled: throw CancellationError()
        case .failure(let error): throw error
        }
    }

    /// Queues `body` on one of the executor's threads and returns at once; for callers that must not
    /// depend on Swift's cooperative pool (an event loop). `body` gets nil and the error when the
    /// thread has no context or the executor has shut down.
    public func submit(_ body: @escaping @Sendable (Context?, (any Error)?) -> Void) {
        worker.submit { context in
            switch context {
            case .success(let context): body(context, nil)
            case .failure(let error): body(nil, error)
            }
        }
    }

    /// Lets queued work finish, then stops the threads; suspends until they have stopped, without blocking
    /// a thread. Later `run` calls throw.
    public func shutdown() async {
        await worker.shutdown()
    }

    /// Lets queued work finish, then stops the threads. Later `run` calls throw.
    ///
    /// > Warning: Blocks the calling thread until the queued work has finished; from async code use
    /// > `await shutdown()`.
    @available(*, noasync, message: "blocks the calling thread; use 'await shutdown()'")
    public func shutdownBlocking() {
        worker.shutdownBlocking()
    }
}

extension Context {
    /// Returns the object stored under `key` for this context, making it on first use.
    ///
    /// Lets work that runs repeatedly on one context (a daemon's worker) reuse keytab handles, parsed
    /// principals and armor caches instead of rebuilding them per login. The worker that owns the context
    /// empties the store when its thread ends, which breaks the cycle of objects that hold the context.
    package func reusable<T: AnyObject>(_ key: String, make: () throws -> T) rethrows -> T {
        if let existing = reusables[key] as? T { return existing }
        let made = try make()
        reusables[key] = made
        return made
    }

    /// Forgets the object stored under `key` (for example an armor cache whose ticket expired).
    package func discardReusable(_ key: String) {
        reusables[key] = nil
    }
}
