import NIOCore

/// The daemon's state under one lock: its listeners and connections, the logins in flight, the replies waiting
/// out a delay, the conversations parked at a question, and where the shutdown is. Every event returns the
/// action the caller takes once the lock is released (resume a waiter, close channels), as swift-kafka-client's
/// state machines do; nothing here blocks, sleeps or polls.
///
/// `Waiter` is what a waiting shutdown resumes (a continuation in the daemon, a plain value in the tests).
struct DaemonStateMachine<Waiter: Sendable>: Sendable {
    private enum Phase {
        case running
        /// Listeners closed; logins in flight and delayed replies have until `deadline`. `waiter` is the shutdown
        /// waiting for them, once it waits.
        case draining(deadline: ContinuousClock.Instant, waiter: Waiter?)
        /// Drained or out of time: the open connections are being closed and the workers stopped.
        case closing
        case stopped
    }

    private var phase = Phase.running
    private var listeners: [any Channel] = []
    private var boundPaths: [String] = []
    private var connections: [ObjectIdentifier: any Channel] = [:]
    /// Connections the saslauthd socket's acceptor holds with plain system calls, outside any channel.
    private var accepted = 0
    private(set) var inFlight = 0
    /// Logins whose exchange has ended and whose reply is being made (sent, or counted as delayed).
    private(set) var replying = 0
    /// Failure replies waiting out the failure floor or a penalty; the shutdown lets them go out too.
    private(set) var delayedReplies = 0
    private(set) var parked = 0
    private var stopWaiters: [Waiter] = []

    private let maxConnections: Int
    private let maxParked: Int

    init(maxConnections: Int, maxParked: Int) {
        self.maxConnections = maxConnections
        self.maxParked = maxParked
    }

    var connectionCount: Int { connections.count + accepted }

    /// Whether half of `max_connections` already wait out a delay: a further failure waits out only the floor.
    var isCrowdedWithDelays: Bool { delayedReplies >= maxConnections / 2 }

    // MARK: Listeners and connections

    mutating func listening(_ channel: any Channel, path: String?) {
        listeners.append(channel)
        if let path { boundPaths.append(path) }
    }

    /// A socket file listened on outside NIO (the saslauthd acceptor's), removed at the shutdown.
    mutating func listening(path: String) {
        boundPaths.append(path)
    }

    /// Counts a new connection in; false when the daemon is full or no longer running.
    mutating func connectionOpened(_ channel: any Channel) -> Bool {
        guard case .running = phase, connectionCount < maxConnections else { return false }
        connections[ObjectIdentifier(channel)] = channel
        return true
    }

    mutating func connectionClosed(_ channel: any Channel) {
        connections[ObjectIdentifier(channel)] = nil
    }

    /// Counts in a connection the acceptor took with `accept(2)`; false when the daemon is full or no longer running.
    mutating func connectionAccepted() -> Bool {
        guard case .running = phase, connectionCount < maxConnections else { return false }
        accepted += 1
        return true
    }

    /// An accepted connection was answered and closed by the acceptor's code.
    mutating func acceptedConnectionClosed() {
        accepted -= 1
    }

    /// An accepted connection now lives on as `channel` (the acceptor handed it to NIO); it was counted in already.
    mutating func acceptedConnectionHandedOver(_ channel: any Channel) {
        accepted -= 1
        connections[ObjectIdentifier(channel)] = channel
    }

    // MARK: Logins, delayed replies, parked conversations

    mutating func loginStarted() { inFlight += 1 }

    /// The login's exchange has ended: it no longer counts as in flight but as a reply being made, until
    /// ``replyMade()``. A failure's delay is counted in between (``replyDelayed()``), so a draining shutdown never
    /// sees a moment with nothing to wait for and closes the connection before the reply.
    mutating func loginEnded() {
        inFlight -= 1
        replying += 1
    }

    /// The ended login's reply has been sent or counted as delayed. Returns the shutdown to resume when this was
    /// the last thing it waited for.
    mutating func replyMade() -> Waiter? {
        replying -= 1
        return resumeIfDrained()
    }

    mutating func replyDelayed() { delayedReplies += 1 }

    /// Returns the shutdown to resume when this was the last thing it waited for.
    mutating func delayedReplySent() -> Waiter? {
        delayedReplies -= 1
        return resumeIfDrained()
    }

    /// Reserves a parking place for a conversation at a question; false when all are taken.
    mutating func park() -> Bool {
        guard parked < maxParked else { return false }
        parked += 1
        return true
    }

    mutating func unpark() { parked -= 1 }

    // MARK: Shutdown

    enum ShutdownAction {
        /// The first call: close these listeners, remove these socket files, then wait for the drain.
        case drain(listeners: [any Channel], paths: [String])
        /// A later call with an earlier deadline that has passed: resume the waiting shutdown.
        case resume(Waiter)
        /// A later call with an earlier deadline still ahead: call ``deadlineReached(now:)`` then.
        case wakeAt(ContinuousClock.Instant)
        /// Nothing to do (already closing, or the later call does not shorten the wait).
        case none
    }

    /// Starts the shutdown with `deadline` for the drain, or (a second call, such as cancellation during a
    /// graceful shutdown) moves the deadline earlier.
    mutating func shutdown(deadline: ContinuousClock.Instant, now: ContinuousClock.Instant) -> ShutdownAction {
        switch phase {
        case .running:
            phase = .draining(deadline: deadline, waiter: nil)
            return .drain(listeners: listeners, paths: boundPaths)
        case .draining(let current, let waiter):
            guard deadline < current else { return .none }
            phase = .draining(deadline: deadline, waiter: waiter)
            if deadline <= now, let resumed = resumeIfDrained(now: now) { return .resume(resumed) }
            return deadline <= now ? .none : .wakeAt(deadline)
        case .closing, .stopped:
            return .none
        }
    }

    /// The shutdown waits for the drain; returns `waiter` when there is nothing to wait for.
    mutating func waitForDrain(_ waiter: Waiter, now: ContinuousClock.Instant) -> Waiter? {
        guard case .draining(let deadline, nil) = phase else { return waiter }
        if inFlight + replying + delayedReplies == 0 || now >= deadline { return waiter }
        phase = .draining(deadline: deadline, waiter: waiter)
        return nil
    }

    /// A drain deadline's timer fired: returns the shutdown to resume if the deadline has passed.
    mutating func deadlineReached(now: ContinuousClock.Instant) -> Waiter? {
        resumeIfDrained(now: now)
    }

    /// The drain is over: returns the connections still open, to close.
    mutating func closing() -> [any Channel] {
        phase = .closing
        return Array(connections.values)
    }

    /// The daemon has stopped: returns everyone waiting for that.
    mutating func stopped() -> [Waiter] {
        phase = .stopped
        defer { stopWaiters = [] }
        return stopWaiters
    }

    /// Waits for the daemon to stop; returns `waiter` when it already has.
    mutating func waitForStop(_ waiter: Waiter) -> Waiter? {
        guard case .stopped = phase else {
            stopWaiters.append(waiter)
            return nil
        }
        return waiter
    }

    /// Takes the waiting shutdown out when nothing is busy any more or the deadline has passed.
    private mutating func resumeIfDrained(now: ContinuousClock.Instant? = nil) -> Waiter? {
        guard case .draining(let deadline, let waiter?) = phase else { return nil }
        let outOfTime = now.map { $0 >= deadline } ?? false
        guard inFlight + replying + delayedReplies == 0 || outOfTime else { return nil }
        phase = .draining(deadline: deadline, waiter: nil)
        return waiter
    }
}
