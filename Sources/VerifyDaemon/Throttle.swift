import Kerberos
import NIOCore

/// Counts failures per key (a principal, a peer) and refuses a key for a growing while once it fails
/// too often, without contacting the KDC. Memory is bounded: entries that no longer matter (window over,
/// not blocked, no recent strike) are swept out as failures arrive, and past `capacity` the least recently
/// seen go first.
final class Throttle: Sendable {
    struct Policy: Sendable {
        var failures: Int
        var window: Duration
        var backoff: Duration
        var maxBackoff: Duration
    }

    private struct Entry {
        var windowStart: NIODeadline
        var failures: Int
        var blockedUntil: NIODeadline
        var strikes: Int
        var lastSeen: NIODeadline
    }

    private let policy: Policy
    private let capacity: Int
    private let entries = Locked<[String: Entry]>([:])
    /// When expired entries were last swept out.
    private let lastSweep = Locked(NIODeadline.uptimeNanoseconds(0))

    init(policy: Policy, capacity: Int = 100_000) {
        self.policy = policy
        self.capacity = capacity
    }

    /// The first of `keys` that is currently refused, if any.
    func blocked(_ keys: [String], now: NIODeadline = .now()) -> String? {
        entries.withLock { entries in keys.first { (entries[$0]?.blockedUntil ?? .distantPast) > now } }
    }

    /// Records a failed login for each key; returns the keys that this failure put into backoff.
    @discardableResult
    func recordFailure(_ keys: [String], now: NIODeadline = .now()) -> [String] {
        entries.withLock { entries in
            var newlyBlocked: [String] = []
            for key in keys {
                var entry = entries[key] ?? Entry(windowStart: now, failures: 0, blockedUntil: .distantPast, strikes: 0, lastSeen: now)
                if now - entry.windowStart > TimeAmount(policy.window) {
                    entry.windowStart = now
                    entry.failures = 0
                }
                entry.failures += 1
                entry.lastSeen = now
                if entry.failures >= policy.failures {
                    let factor = Int64(1) << Int64(min(entry.strikes, 20))
                    let backoff = min(TimeAmount(policy.backoff) * factor, TimeAmount(policy.maxBackoff))
                    entry.blockedUntil = now + backoff
                    entry.strikes += 1
                    entry.failures = 0
                    entry.windowStart = now
                    newlyBlocked.append(key)
                }
                entries[key] = entry
            }
            if entries.count > 1024 { sweep(&entries, now: now) }
            if entries.count > capacity { evict(&entries) }
            return newlyBlocked
        }
    }

    /// A success clears the principal's record.
    func recordSuccess(_ key: String) {
        _ = entries.withLock { $0.removeValue(forKey: key) }
    }

    /// Drops, at most once a second, the entries that no longer count for anything: their window is over,
    /// they are not blocked, and any strike they had is older than the longest backoff. Under a steady
    /// stream of failures for ever new names the table then holds one window's worth, not `capacity`.
    private func sweep(_ entries: inout [String: Entry], now: NIODeadline) {
        let due = lastSweep.withLock { last in
            guard now - last > .seconds(1) else { return false }
            last = now
            return true
        }
        guard due else { return }
        let window = TimeAmount(policy.window), memory = TimeAmount(policy.maxBackoff)
        entries = entries.filter { _, entry in
            entry.blockedUntil > now || now - entry.windowStart <= window || (entry.strikes > 0 && now - entry.lastSeen <= memory)
        }
    }

    /// Drops the least recently seen tenth of the entries that are not blocked.
    private func evict(_ entries: inout [String: Entry]) {
        let now = NIODeadline.now()
        let candidates = entries.filter { $0.value.blockedUntil <= now }.sorted { $0.value.lastSeen < $1.value.lastSeen }
        for (key, _) in candidates.prefix(max(1, capacity / 10)) { entries.removeValue(forKey: key) }
    }

    var count: Int { entries.withLock { $0.count } }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
