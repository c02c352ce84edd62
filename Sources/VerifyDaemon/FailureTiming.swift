/// How long the slowest recent guessing failure (a wrong password, an unknown principal) took at the KDC.
///
/// An unknown principal costs the KDC one round trip; an existing one with a wrong password two or three
/// (the etype question, the encrypted timestamp, and with armor the armor's own). A fixed failure floor hides
/// that only while it is longer than the slowest path; once KDC latency passes about a third of it, the answer's
/// time tells which names exist. So every failure is answered no sooner than the slowest of the last ``kept``
/// such exchanges took (``LoginGate/answer(_:_:on:floor:started:_:)``), up to ``ceiling``: both kinds of
/// failure then take the same time, whatever the latency.
struct FailureTiming: Sendable {
    /// How many recent exchanges are remembered.
    static let kept = 32
    /// The most a failure is padded to, so one KDC stall does not slow every failure for long.
    static let ceiling = Duration.seconds(5)

    private var recent: [Duration] = []
    private var next = 0

    /// Remembers one guessing failure's exchange time, forgetting the oldest past ``kept``.
    mutating func record(_ duration: Duration) {
        if recent.count < Self.kept {
            recent.append(duration)
        } else {
            recent[next] = duration
            next = (next + 1) % Self.kept
        }
    }

    /// The slowest remembered exchange, at most ``ceiling``; zero before the first.
    var slowest: Duration { min(recent.max() ?? .zero, Self.ceiling) }
}
