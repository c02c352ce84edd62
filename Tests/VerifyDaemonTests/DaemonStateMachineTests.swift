import NIOCore
import NIOEmbedded
import Testing
@testable import VerifyDaemon

/// The daemon's state machine on its own: every event's action, no sockets, no sleeping.
@Suite("Daemon state machine (unit)")
struct DaemonStateMachineTests {
    typealias Machine = DaemonStateMachine<String>
    let now = ContinuousClock.now

    @Test("connections count in up to the limit; none once the shutdown began")
    func connections() {
        var machine = Machine(maxConnections: 2, maxParked: 1)
        let (a, b, c) = (EmbeddedChannel(), EmbeddedChannel(), EmbeddedChannel())
        #expect(machine.connectionOpened(a) && machine.connectionOpened(b))
        let full = machine.connectionOpened(c)
        #expect(!full, "full")
        machine.connectionClosed(a)
        #expect(machine.connectionCount == 1)
        _ = machine.shutdown(deadline: now + .seconds(30), now: now)
        let late = machine.connectionOpened(c)
        #expect(!late, "shutting down")
        #expect(machine.closing().count == 1, "the open connection is closed at the end")
    }

    @Test("connections the saslauthd acceptor takes count against the same limit, become channels when handed over, and none are taken once the shutdown began")
    func acceptedConnections() {
        var machine = Machine(maxConnections: 2, maxParked: 1)
        let channel = EmbeddedChannel()
        let accepted = machine.connectionAccepted(), opened = machine.connectionOpened(channel)
        #expect(accepted && opened)
        let full = machine.connectionAccepted()
        #expect(!full, "full: an accepted connection and a channel")
        machine.acceptedConnectionClosed()
        #expect(machine.connectionCount == 1)
        let again = machine.connectionAccepted()
        #expect(again)
        let handedOver = EmbeddedChannel()
        machine.acceptedConnectionHandedOver(handedOver)
        #expect(machine.connectionCount == 2, "handing over neither adds nor drops a connection")
        machine.connectionClosed(channel)
        machine.listening(path: "/run/krb5-verifyd/mux")
        guard case .drain(let listeners, let paths) = machine.shutdown(deadline: now + .seconds(30), now: now) else {
            Issue.record("the first shutdown drains")
            return
        }
        #expect(listeners.isEmpty && paths == ["/run/krb5-verifyd/mux"], "the acceptor's socket file is removed too")
        let late = machine.connectionAccepted()
        #expect(!late, "shutting down")
        #expect(machine.closing().count == 1, "the handed-over connection is closed with the other channels")
    }

    @Test("parking places are limited")
    func parking() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        let first = machine.park()
        let second = machine.park()
        #expect(first && !second)
        machine.unpark()
        #expect(machine.park() && machine.parked == 1)
    }

    @Test("the first shutdown closes the listeners and removes the socket files")
    func firstShutdown() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        machine.listening(EmbeddedChannel(), path: "/run/a")
        machine.listening(EmbeddedChannel(), path: nil)
        guard case .drain(let listeners, let paths) = machine.shutdown(deadline: now + .seconds(30), now: now) else {
            Issue.record("the first shutdown drains")
            return
        }
        #expect(listeners.count == 2 && paths == ["/run/a"])
        guard case .none = machine.shutdown(deadline: now + .seconds(60), now: now) else {
            Issue.record("a later, longer deadline changes nothing")
            return
        }
    }

    @Test("with nothing in flight the drain is over at once")
    func idleDrain() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        _ = machine.shutdown(deadline: now + .seconds(30), now: now)
        #expect(machine.waitForDrain("shutdown", now: now) == "shutdown")
    }

    @Test("the drain waits for the last login and the last delayed reply, and the last one resumes it")
    func drainWaitsForLogins() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        machine.loginStarted()
        machine.loginStarted()
        machine.replyDelayed()
        _ = machine.shutdown(deadline: now + .seconds(30), now: now)
        #expect(machine.waitForDrain("shutdown", now: now) == nil)
        machine.loginEnded()
        #expect(machine.replyMade() == nil)
        #expect(machine.delayedReplySent() == nil)
        machine.loginEnded()
        #expect(machine.replyMade() == "shutdown")
    }

    @Test("a login that ends in a delayed failure keeps the drain waiting from its end to the delayed reply")
    func drainWaitsFromLoginToDelayedReply() {
        var machine = drainingWithOneLogin()
        machine.loginEnded()
        #expect(machine.inFlight == 0 && machine.replying == 1)
        machine.replyDelayed()
        #expect(machine.replyMade() == nil, "the delayed reply is still to go out")
        #expect(machine.deadlineReached(now: now + .seconds(1)) == nil)
        #expect(machine.delayedReplySent() == "shutdown")
    }

    @Test("logins ending while running resume nothing")
    func runningLogins() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        machine.loginStarted()
        machine.loginEnded()
        #expect(machine.replyMade() == nil && machine.inFlight == 0 && machine.replying == 0)
    }

    /// A machine whose shutdown ("shutdown", deadline in 30 s) waits for one login in flight.
    private func drainingWithOneLogin() -> Machine {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        machine.loginStarted()
        _ = machine.shutdown(deadline: now + .seconds(30), now: now)
        let waiting = machine.waitForDrain("shutdown", now: now)
        #expect(waiting == nil)
        return machine
    }

    @Test("the deadline ends the drain with logins still in flight; an early timer does not")
    func deadline() {
        var machine = drainingWithOneLogin()
        #expect(machine.deadlineReached(now: now + .seconds(29)) == nil)
        #expect(machine.deadlineReached(now: now + .seconds(30)) == "shutdown")
    }

    @Test("a second shutdown with no grace (cancellation) resumes the waiting drain at once")
    func cancellationShortensTheWait() {
        var machine = drainingWithOneLogin()
        guard case .resume(let waiter) = machine.shutdown(deadline: now, now: now) else {
            Issue.record("the waiting shutdown is resumed")
            return
        }
        #expect(waiter == "shutdown")
    }

    @Test("a second shutdown with a shorter grace still ahead asks for a timer at the new deadline")
    func shorterGrace() {
        var machine = drainingWithOneLogin()
        guard case .wakeAt(let deadline) = machine.shutdown(deadline: now + .seconds(5), now: now) else {
            Issue.record("a timer for the shorter deadline")
            return
        }
        #expect(deadline == now + .seconds(5))
        #expect(machine.deadlineReached(now: now + .seconds(5)) == "shutdown")
    }

    @Test("a deadline already past when the shutdown starts waiting does not wait")
    func pastDeadline() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        machine.loginStarted()
        _ = machine.shutdown(deadline: now, now: now)
        #expect(machine.waitForDrain("shutdown", now: now) == "shutdown")
    }

    @Test("those waiting for the stop are resumed when it comes, or at once after it")
    func stopWaiters() {
        var machine = Machine(maxConnections: 10, maxParked: 1)
        #expect(machine.waitForStop("a") == nil)
        #expect(machine.waitForStop("b") == nil)
        _ = machine.shutdown(deadline: now, now: now)
        _ = machine.closing()
        #expect(machine.stopped() == ["a", "b"])
        #expect(machine.waitForStop("c") == "c")
    }
}
