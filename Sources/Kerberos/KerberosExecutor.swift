#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Dispatch

/// A fixed set of dedicated threads, each owning one ``Context``, that run blocking krb5 work for
/// `async` callers.
///
/// For logins, prefer ``KerberosClient``: it never blocks a thread on a KDC and bounds every call in time.
/// The executor remains for krb5 calls that have no stepwise form (the password change of
/// `krb5_get_init_creds_password` on an expired password, `krb5_change_password`, `krb5_get_etype_info`
/// under FAST) and for programs that use the blocking ``Context`` API.
///
/// krb5 blocks on the network, on prompters and on responders; such calls must not run on Swift's
/// cooperative pool or an event loop. `run` hands a closure to the next free thread and suspends the
/// caller until it finishes. Each thread creates its context once and keeps it, honouring MIT's rule of
/// one thread per context, and letting callers reuse per-context objects (see ``Context/reusable(_:make:)``).
///
/// ```swift
/// let executor = try KerberosExecutor(threads: 4)
/// let end = try await executor.run { context in
///     let alice = try Principal(parsing: "alice", in: context)
///     return try context.initialCredentials(for: alice, password: secret).endTime
/// }
/// ```
public final class KerberosExecutor: Sendable {
    private typealias Job = @Sendable (Context?, (any Error)?) -> Void

    private struct Queue {
        /// Queued jobs from `head` on; a slot is emptied the moment its job is taken, so a finished job's
        /// captures (a login's password, its service) are released at once, not at the next compaction.
        var jobs: [Job?] = []
        var head = 0
        var stopping = false
    }

    private let queue = Locked(Queue())
    private let available = DispatchSemaphore(value: 0)
    private let finished = DispatchGroup()
    /// The number of threads.
    public let threadCount: Int

    /// Starts `threads` threads with contexts from `configuration`.
    ///
    /// Throws when the configuration cannot make a context.
    public init(threads: Int = 2, configuration: Context.Configuration = .default) throws {
        precondition(threads > 0, "KerberosExecutor needs at least one thread")
        _ = try Context(configuration)
        threadCount = threads
        for index in 0..<threads {
            finished.enter()
            WorkerThread.start(name: "krb5-worker-\(index)") { [self] in
                let context: Context?
                let failure: (any Error)?
                do { (context, failure) = (try Context(configuration), nil) } catch { (context, failure) = (nil, error) }
                while let job = next() { job(context, failure) }
                context?.reusables.removeAll()
                finished.leave()
            }
        }
    }

    deinit {
        shutdown()
    }

    /// Runs `body` on one of the executor's threads with that thread's context and returns its result.
    ///
    /// `body` may block; the caller only suspends.
    public func run<T: Sendable>(_ body: @escaping @Sendable (Context) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            submit { context, failure in
                guard let context else {
                    continuation.resume(throwing: failure!)
                    return
                }
                continuation.resume(with: Result { try body(context) })
            }
        }
    }

    /// Queues `body` on one of the executor's threads and returns at once; for callers that must not
    /// depend on Swift's cooperative pool (an event loop). `body` gets nil and the error when the
    /// thread has no context or the executor has shut down.
    public func submit(_ body: @escaping @Sendable (Context?, (any Error)?) -> Void) {
        let accepted = queue.withLock { queue -> Bool in
            guard !queue.stopping else { return false }
            queue.jobs.append(body)
            return true
        }
        if accepted {
            available.signal()
        } else {
            body(nil, KerberosError(code: -1, message: "The Kerberos executor has shut down", reason: .other))
        }
    }

    /// Lets queued work finish, then stops the threads. Later `run` calls throw.
    ///
    /// > Warning: Blocks the calling thread until the queued work has finished.
    public func shutdown() {
        let alreadyStopping = queue.withLock { queue in
            defer { queue.stopping = true }
            return queue.stopping
        }
        guard !alreadyStopping else { return }
        for _ in 0..<threadCount { available.signal() }
        finished.wait()
    }

    /// Blocks until a job is queued; nil once shutting down with nothing left.
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

extension Context {
    /// Returns the object stored under `key` for this context, making it on first use.
    ///
    /// Lets work that runs repeatedly on one context (a daemon's worker) reuse keytab handles, parsed
    /// principals and armor caches instead of rebuilding them per login.
    public func reusable<T: AnyObject>(_ key: String, make: () throws -> T) rethrows -> T {
        if let existing = reusables[key] as? T { return existing }
        let made = try make()
        reusables[key] = made
        return made
    }

    /// Forgets the object stored under `key` (for example an armor cache whose ticket expired).
    public func discardReusable(_ key: String) {
        reusables[key] = nil
    }
}
