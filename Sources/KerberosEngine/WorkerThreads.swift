import KerberosSecrets
internal import NIOCore
import Dispatch

/// The threads of a ``ContextWorker`` and the one queue they take jobs from, in the order they were submitted.
/// Each thread makes its own `Context` (MIT: one thread per context) and keeps it until it ends.
///
/// The threads hold only this object, not the worker: a worker that goes away without a shutdown starts the
/// shutdown in its `deinit`, and its threads finish the queued jobs and end (nothing waits for them).
final class WorkerThreads: Sendable {
    /// A job gets its thread's context, or why there is none: the context could not be made, or the worker
    /// had shut down before the job was queued.
    typealias Job = @Sendable (Result<Context, KerberosError>) -> Void

    private struct Queue: Sendable {
        /// The queued jobs; taking one empties its slot, so a finished job's captures (a login's password, its
        /// service) are released at once.
        var jobs = CircularBuffer<Job>()
        var stopping = false
    }

    private let queue = Locked(Queue())
    /// Signalled once per queued job, and once per thread at the shutdown.
    private let available = DispatchSemaphore(value: 0)
    private let finished = DispatchGroup()
    let count: Int

    /// Starts `count` threads named `name` (`name-N` when more than one); each makes its context from
    /// `configuration` on the thread itself.
    init(name: String, count: Int, configuration: Context.Configuration) {
        precondition(count > 0, "a worker needs at least one thread")
        self.count = count
        for index in 0..<count {
            finished.enter()
            WorkerThread.start(name: count == 1 ? name : "\(name)-\(index)") { [self] in
                let context: Result<Context, KerberosError>
                do throws(KerberosError) { context = .success(try Context(configuration)) } catch { context = .failure(error) }
                if case .success(let made) = context { ContextWorker.setThreadContext(made, owner: self) }
                while let job = next() { job(context) }
                ContextWorker.setThreadContext(nil, owner: self)
                // Drops what the jobs kept in the context, which breaks the cycles between the context and the
                // objects it keeps (a keytab pool's keytabs).
                if case .success(let context) = context { context.reusables.removeAll() }
                finished.leave()
            }
        }
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

    /// Refuses later jobs and wakes every thread, which end once the queue is empty. Idempotent.
    func beginShutdown() {
        let first = queue.withLock { queue in
            defer { queue.stopping = true }
            return !queue.stopping
        }
        if first { for _ in 0..<count { available.signal() } }
    }

    /// Blocks the caller until every thread has ended.
    func waitUntilFinished() {
        finished.wait()
    }

    /// Suspends (no thread waits) until every thread has ended.
    func finish() async {
        let finished = self.finished
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            finished.notify(queue: .global()) { continuation.resume() }
        }
    }

    /// On a worker thread: blocks until a job is queued; nil once stopping with nothing left.
    private func next() -> Job? {
        while true {
            available.wait()
            let job = queue.withLock { queue -> Job?? in
                if let job = queue.jobs.popFirst() { return job }
                return queue.stopping ? .some(nil) : nil
            }
            if let job { return job }
        }
    }
}
