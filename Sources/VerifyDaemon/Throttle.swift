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
    private struct Table {
        var entries: [String: Entry] = [:]
        /// When expired entries were last swept out.
        var lastSweep = NIODeadline.uptimeNanoseconds(0)
    }

    private let table = Locked(Table())

    init(policy: Policy, capacity: Int = 100_000) {
        self.policy = policy
        self.capacity = capacity
    }

    /// The first of `keys` that is currently refused, if any.
    func blocked(_ keys: [String], now: NIODeadline = .now()) -> String? {
        table.withLock { table in keys.first { (table.entries[$0]?.blockedUntil ?? .distantPast) > now } }
    }

    /// Records a failed login for each key; returns the keys that this failure put into backoff.
    @discardableResult
    func recordFailure(_ keys: [String], now: NIODeadline = .now()) -> [String] {
        table.withLock { table in
            var newlyBlocked: [String] = []
            for key in keys {
                var entry = table.entries[key] ?? Entry(windowStart: now, failures: 0, blockedUntil: .distantPast, strikes: 0, lastSeen: now)
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
                table.entries[key] = entry
            }
            if table.entries.count > 1024 { sweep(&table, now: now) }
            if table.entries.count > capacity { evict(&table.entries) }
            return newlyBlocked
        }
    }

    /// A success clears the principal's record.
    func recordSuccess(_ key: String) {
        _ = table.withLock { $0.entries.removeValue(forKey: key) }
    }

    /// Drops, at most once a second, the entries that no longer count for anything: their window is over,
    /// they are not blocked, and any strike they had is older than the longest backoff. Under a steady
    /// stream of failures for ever new names the table then holds one window's worth, not `capacity`.
    private func sweep(_ table: inout Table, now: NIODeadline) {
        guard now - table.lastSweep > .seconds(1) else { return }
        table.lastSweep = now
        let window = TimeAmount(policy.window), memory = TimeAmount(policy.maxBackoff)
        table.entries = table.entries.filter { _, entry in
            entry.blockedUntil > now || now - entry.windowStart <= window || (entry.strikes > 0 && now - entry.lastSeen <= memory)
        }
    }

    /// Drops the least recently seen tenth of the entries that are not blocked.
    private func evict(_ entries: inout [String: Entry]) {
        let now = NIODeadline.now()
        let candidates = entries.filter { $0.value.blockedUntil <= now }.sorted { $0.value.lastSeen < $1.value.lastSeen }
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
