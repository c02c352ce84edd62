import KerberosSecrets
import LoginService
import NIOCore

/// Counts failed logins per key (a canonical principal, a client address) and refuses a key, without
/// contacting the KDC, once it has failed `failures` times within the window: until the window is over,
/// and for at least the backoff, which doubles with each such burst up to the maximum.
///
/// An attempt counts from the moment it is reserved, not from its failure: a key has `failures` slots, less its
/// failures in the window, and each attempt holds one until it ends, so `N` parallel guesses cause at most
/// `failures` KDC failures. An attempt that finds every slot held by attempts in flight waits in line (it is
/// neither refused nor let through): when a slot frees it goes on, and when the key fails into backoff it is
/// refused. So a burst of right passwords is never refused just for arriving together, and a burst of guesses
/// never reaches the KDC more than `failures` times. Every refusal is answered after a penalty that doubles with
/// each refusal in the window (with the default 1 s: 1, 2, 4, 8, then 15 s, as Dovecot's auth penalty does),
/// which slows a guesser down without holding a thread.
///
/// Keys are ``ExactName``s, compared by their bytes. Memory is bounded: entries that no longer matter (window
/// over, not blocked, nothing in flight or waiting, no recent strike) are swept out as failures arrive, and past
/// `capacity` the least recently seen go first.
final class Throttle: Sendable {
    struct Policy: Sendable {
        var failures: Int
        var window: Duration
        var backoff: Duration
        var maxBackoff: Duration
        /// The first refusal's penalty; it doubles per refusal in the window, up to 16 times this or 15 s.
        var penalty: Duration = .seconds(1)

        /// The longest a refusal's penalty gets: 16 times the first, or 15 s when that is more.
        var maxPenalty: Duration { min(penalty * 16, max(penalty, .seconds(15))) }
    }

    /// Whether a key may go on to the KDC.
    enum Verdict: Equatable {
        case allowed
        /// Refused; answer no sooner than `penalty` after the request arrived.
        case refused(penalty: Duration)
        /// Every slot is held by attempts in flight: the waiter given to ``reserve(_:now:waiter:)`` gets
        /// `.allowed` (the slot already reserved) or `.refused` when one ends.
        case queued
    }

    /// Receives a queued attempt's verdict, on the thread that ended the attempt before it (after the lock is released).
    typealias Waiter = @Sendable (Verdict) -> Void

    /// What ending an attempt did: whether it put the key into backoff, and the queued attempts it decided.
    struct Release {
        let engagedBackoff: Bool
        fileprivate let decided: [(Waiter, Verdict)]

        /// Hands each decided waiter its verdict; call once, outside any lock.
        func wake() {
            for (waiter, verdict) in decided { waiter(verdict) }
        }
    }

    private struct Entry {
        var windowStart: NIODeadline
        var failures = 0
        var inFlight = 0
        var refusals = 0
        var blockedUntil = NIODeadline.distantPast
        var strikes = 0
        var lastSeen: NIODeadline
        /// Attempts waiting for a slot, first come first served.
        var waiting: [Waiter] = []

        init(now: NIODeadline) {
            windowStart = now
            lastSeen = now
        }
    }

    private let policy: Policy
    private let capacity: Int
    private struct Table {
        var entries: [ExactName: Entry] = [:]
        /// When expired entries were last swept out.
        var lastSweep = NIODeadline.uptimeNanoseconds(0)
    }

    private let table = Locked(Table())

    init(policy: Policy, capacity: Int = 100_000) {
        self.policy = policy
        self.capacity = capacity
    }

    /// Reserves one attempt for `key`: allowed while it is not blocked and its failures in the window plus its
    /// attempts in flight stay under the limit; queued (`waiter` decides later) while only attempts in flight fill
    /// the slots, or others already wait. Every `.allowed`, given here or to the waiter, must be followed by one
    /// ``release(_:failed:now:)``.
    func reserve(_ key: ExactName, now: NIODeadline = .now(), waiter: @escaping Waiter) -> Verdict {
        table.withLock { table in
            var entry = table.entries[key] ?? Entry(now: now)
            if entry.blockedUntil <= now { restartWindowIfOver(&entry, now: now) }
            entry.lastSeen = now
            let verdict: Verdict
            if isRefusing(entry, now: now) {
                verdict = refuse(&entry)
            } else if !entry.waiting.isEmpty || entry.failures + entry.inFlight >= policy.failures {
                entry.waiting.append(waiter)
                verdict = .queued
            } else {
                entry.inFlight += 1
                verdict = .allowed
            }
            table.entries[key] = entry
            return verdict
        }
    }

    /// Ends an attempt reserved with ``reserve(_:now:waiter:)``: `failed` true for a failure that counts, false for a
    /// success (which clears the key's record), nil for an outcome that says nothing about guessing. The slot goes
    /// to the first attempt waiting; when the key now refuses, every waiting attempt is refused.
    @discardableResult
    func release(_ key: ExactName, failed: Bool?, now: NIODeadline = .now()) -> Release {
        table.withLock { table in
            guard var entry = table.entries[key] else { return Release(engagedBackoff: false, decided: []) }
            entry.inFlight = max(0, entry.inFlight - 1)
            var blocked = false
            switch failed {
            case true?:
                blocked = fail(&entry, now: now)
            case false?:
                // A success clears the record; attempts in flight and in line keep their places.
                var cleared = Entry(now: now)
                cleared.inFlight = entry.inFlight
                cleared.waiting = entry.waiting
                entry = cleared
            case nil:
                break
            }
            // Failures of a window that is over free their slots for those in line too.
            if entry.blockedUntil <= now { restartWindowIfOver(&entry, now: now) }
            var decided: [(Waiter, Verdict)] = []
            if isRefusing(entry, now: now) {
                let waiting = entry.waiting
                entry.waiting = []
                for waiter in waiting { decided.append((waiter, refuse(&entry))) }
            } else {
                while !entry.waiting.isEmpty && entry.failures + entry.inFlight < policy.failures {
                    entry.inFlight += 1
                    decided.append((entry.waiting.removeFirst(), .allowed))
                }
            }
            let idle = entry.inFlight == 0 && entry.waiting.isEmpty
            table.entries[key] = failed == false && idle ? nil : entry
            tidy(&table, now: now)
            return Release(engagedBackoff: blocked, decided: decided)
        }
    }

    /// Whether `key` refuses an attempt now (blocked, or its failures in the window reached the limit); counts
    /// nothing.
    func isRefusing(_ key: ExactName, now: NIODeadline = .now()) -> Bool {
        table.withLock { table in table.entries[key].map { isRefusing($0, now: now) } ?? false }
    }

    private func isRefusing(_ entry: Entry, now: NIODeadline) -> Bool {
        entry.blockedUntil > now || (now - entry.windowStart <= TimeAmount(policy.window) && entry.failures >= policy.failures)
    }

    private func restartWindowIfOver(_ entry: inout Entry, now: NIODeadline) {
        if now - entry.windowStart > TimeAmount(policy.window) {
            entry.windowStart = now
            entry.failures = 0
            entry.refusals = 0
        }
    }

    /// Counts a failure; one at or past the limit, while no backoff runs, starts the next backoff. The
    /// failures stay counted until the window is over, so a reserving key is refused at least that long.
    private func fail(_ entry: inout Entry, now: NIODeadline) -> Bool {
        if entry.blockedUntil <= now { restartWindowIfOver(&entry, now: now) }
        entry.failures += 1
        entry.lastSeen = now
        guard entry.failures >= policy.failures, entry.blockedUntil <= now else { return false }
        let factor = Int64(1) << Int64(min(entry.strikes, 20))
        let backoff = min(TimeAmount(policy.backoff) * factor, TimeAmount(policy.maxBackoff))
        entry.blockedUntil = now + backoff
        entry.strikes += 1
        return true
    }

    private func refuse(_ entry: inout Entry) -> Verdict {
        entry.refusals += 1
        let penalty = policy.penalty * (1 << min(entry.refusals - 1, 4))
        return .refused(penalty: min(penalty, policy.maxPenalty))
    }

    private func tidy(_ table: inout Table, now: NIODeadline) {
        if table.entries.count > 1024 { sweep(&table, now: now) }
        if table.entries.count > capacity { evict(&table.entries, now: now) }
    }

    /// Drops, at most once a second, the entries that no longer count for anything: their window is over,
    /// nothing is in flight, they are not blocked, and any strike they had is older than the longest backoff.
    /// Under a steady stream of failures for ever new names the table then holds one window's worth.
    private func sweep(_ table: inout Table, now: NIODeadline) {
        guard now - table.lastSweep > .seconds(1) else { return }
        table.lastSweep = now
        let window = TimeAmount(policy.window), memory = TimeAmount(policy.maxBackoff)
        table.entries = table.entries.filter { _, entry in
            entry.inFlight > 0 || !entry.waiting.isEmpty || entry.blockedUntil > now || now - entry.windowStart <= window
                || (entry.strikes > 0 && now - entry.lastSeen <= memory)
        }
    }

    /// Drops the least recently seen tenth of the entries that are neither blocked nor in flight nor waited on.
    private func evict(_ entries: inout [ExactName: Entry], now: NIODeadline) {
        let candidates = entries.filter { $0.value.blockedUntil <= now && $0.value.inFlight == 0 && $0.value.waiting.isEmpty }.sorted { $0.value.lastSeen < $1.value.lastSeen }
        for (key, _) in candidates.prefix(max(1, capacity / 10)) { entries.removeValue(forKey: key) }
    }

    var count: Int { table.withLock { $0.entries.count } }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
