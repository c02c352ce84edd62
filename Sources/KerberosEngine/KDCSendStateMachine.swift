internal import CKrb5
internal import NIOCore
#if canImport(Glibc)
internal import Glibc
#endif

/// The failover policy of one message sent to a realm's KDCs (or kpasswd or name servers), as a value: events come
/// in with the current time, and each returns the ``Action``s that carry it out. No sockets, no timers, no clock:
/// the driver (``KDCTransport``'s send operation) opens the sockets, arms the timers and reads the clock, so the
/// tests run every rule without a network and with time passed in by assignment (docs/engine.md, "Sending a
/// message").
///
/// The rules, in the order of `targets` (``KDCHealth/order(_:primaryOnly:now:)`` put the unresponsive ones last):
/// - a message goes over UDP, or TCP when it is longer than `udpPreferenceLimit`, `tcpOnly` is set, or the target is
///   `tcp/`; a `udp/` target only ever gets UDP;
/// - the next target gets the message when the last one stays silent for the ``Delivery``'s failover delay
///   (`.hedged`: `hedgeDelay`; `.counted`: `countedFailover`, its silence remembered after `hedgeDelay`; `.oneTime`:
///   never for silence), and at once when it refuses; UDP refused goes again over TCP to a target that speaks both;
/// - a reply too big for a datagram (``ReplyKind/Verdict/tooBigForDatagram``) goes again over TCP to the same target,
///   or, for a `udp/` target, passes it over and ends the send with an error that says so when no other answers;
/// - a server's "no answer" (``ReplyKind/Verdict/noAnswer``) passes it over, without TCP;
/// - once every target was tried, UDP targets get the message again at an interval that doubles;
/// - every target that refused is marked unresponsive, except for this process's own shortage (out of descriptors,
///   buffers, memory), which ends the send with its own error; at ``close(now:)``, targets silent longer than the
///   remembered delay are marked, not the one that answered; a reply clears its target's mark.
struct KDCSendStateMachine {
    /// The socket a message travels on.
    enum Transport: Hashable, Sendable {
        case udp
        case tcp
    }

    /// The timers a send arms; the driver keeps at most one of each.
    enum Timer: Hashable, Sendable {
        /// The next target gets the message (the failover or hedge delay passed).
        case failover
        /// Target `i`'s silence is remembered (a counted message, whose failover delay is longer).
        case silence(Int)
        /// UDP targets get the message again.
        case retransmit
    }

    /// What the driver does.
    enum Action: Sendable {
        /// Open a socket to target `i` (connect TCP, or a connected UDP socket) and report ``connected(_:over:)`` or
        /// ``failed(_:over:localShortage:now:)``.
        case open(Int, Transport)
        /// Write the target's message on its sockets of that transport (the first time once connected, then as
        /// retransmissions).
        case write(Int, Transport)
        /// Close target `i`'s sockets: of one transport, or all of them (nil).
        case close(Int, Transport?)
        /// Arm `timer` to fire at the deadline, replacing one armed before; report ``timerFired(_:now:)``.
        case arm(Timer, NIODeadline)
        /// Cancel `timer`, armed before.
        case cancel(Timer)
        /// Remember the target key as unresponsive (``KDCHealth``), or forget it.
        case markUnresponsive(String)
        /// Forget the key's mark: it answered.
        case markResponsive(String)
        /// The send is answered by target `i` with `reply`.
        case answer(Int, [UInt8])
        /// The send ends without an answer.
        case fail(KerberosError)
    }

    /// The delays of a send (``KDCTransport/Configuration``).
    struct Timing: Sendable {
        var hedgeDelay: TimeAmount
        var countedFailover: TimeAmount
        var retransmitInterval: TimeAmount
    }

    /// What is known of one target.
    private struct TargetState {
        /// The socket the message is on now; nil before it was sent.
        var transport: Transport?
        var sentAt: NIODeadline?
        var triedTCP = false
        var failed = false
        /// A `udp/` target whose reply did not fit a datagram.
        var tooBigForUDP = false
    }

    let targets: [KDCTarget]
    let messageLengths: [Int]
    let kind: ReplyKind
    let udpPreferenceLimit: Int
    let tcpOnly: Bool
    let delivery: Delivery
    let realm: String
    let timing: Timing

    private var states: [TargetState]
    private var next = 0
    private var armed: Set<Timer> = []
    private var retransmitInterval: TimeAmount
    /// The errno of the last failure that was this process's own: such a target is not marked, and the send ends as a
    /// local failure.
    private var localFailure: Int32?
    /// The target whose reply ended the send.
    private var answered: Int?
    /// An answer or a failure was returned: later events do nothing until ``close(now:)``.
    private var finished = false
    private var closed = false

    /// A send of `messageLengths[i]` bytes to `targets[i]`.
    init(targets: [KDCTarget], messageLengths: [Int], kind: ReplyKind, udpPreferenceLimit: Int, tcpOnly: Bool, delivery: Delivery,
         realm: String, timing: Timing) {
        precondition(messageLengths.count == targets.count, "one message per target")
        self.targets = targets
        self.messageLengths = messageLengths
        self.kind = kind
        self.udpPreferenceLimit = udpPreferenceLimit
        self.tcpOnly = tcpOnly
        self.delivery = delivery
        self.realm = realm
        self.timing = timing
        self.states = Array(repeating: TargetState(), count: targets.count)
        self.retransmitInterval = timing.retransmitInterval
    }

    /// How long a target may stay silent before the next one gets the message; nil for a one-time value, which goes to
    /// the next target only on a refusal.
    private var failoverDelay: TimeAmount? {
        switch delivery {
        case .hedged: timing.hedgeDelay
        case .counted: timing.countedFailover
        case .oneTime: nil
        }
    }

    /// How long a target may stay silent before its silence is remembered; nil for a one-time value, whose wait may be
    /// a person approving a push and is never held against a KDC.
    private var silenceRemembered: TimeAmount? {
        delivery == .oneTime ? nil : timing.hedgeDelay
    }

    // MARK: Events

    /// The send starts: the first target gets the message.
    mutating func start(now: NIODeadline) -> [Action] {
        guard !closed, !finished else { return [] }
        return attempt(now: now)
    }

    /// A timer armed by an ``Action/arm(_:_:)`` fired.
    mutating func timerFired(_ timer: Timer, now: NIODeadline) -> [Action] {
        guard armed.remove(timer) != nil, !closed, !finished else { return [] }
        switch timer {
        case .failover:
            return attempt(now: now)
        case .silence(let index):
            return states[index].failed ? [] : [.markUnresponsive(targets[index].key)]
        case .retransmit:
            var actions: [Action] = []
            for index in targets.indices where states[index].transport == .udp && !states[index].failed {
                actions.append(.write(index, .udp))
            }
            retransmitInterval = retransmitInterval * 2
            actions += armRetransmit(now: now)
            return actions
        }
    }

    /// A socket to target `index` is open: the message is written on it, unless the send ended or the target moved on
    /// to another transport, when the socket is closed.
    mutating func connected(_ index: Int, over transport: Transport) -> [Action] {
        guard !closed, !finished, !states[index].failed, states[index].transport == transport else { return [.close(index, transport)] }
        return [.write(index, transport)]
    }

    /// Bytes from target `index` (a datagram, or a TCP frame).
    mutating func received(_ bytes: [UInt8], from index: Int, over transport: Transport, now: NIODeadline) -> [Action] {
        guard !closed, !finished else { return [] }
        switch kind.classify(bytes, transport == .udp) {
        case .ignored:
            return []
        case .tooBigForDatagram where transport == .udp:
            guard targets[index].kdc.transport != .udp else {
                // Asking again over UDP would get the same answer until the deadline: this target cannot serve it.
                states[index].tooBigForUDP = true
                return failed(index, over: transport, localShortage: nil, retryOverTCP: false, now: now)
            }
            // MIT's rule for KDCs (RFC 7766 for name servers): ask the same target again over TCP.
            return [.close(index, nil)] + send(to: index, forceTCP: true, now: now)
        case .noAnswer:
            return failed(index, over: transport, localShortage: nil, retryOverTCP: false, now: now)
        case .reply, .tooBigForDatagram:
            finished = true
            answered = index
            return [.markResponsive(targets[index].key), .answer(index, bytes)]
        }
    }

    /// Target `index` refused (ICMP port unreachable, TCP RST), failed, or closed its connection without a reply.
    /// `localShortage`: the errno when the failure was this process's own (``KDCTransport/localShortage(_:)``).
    mutating func failed(_ index: Int, over transport: Transport, localShortage: Int32?, now: NIODeadline) -> [Action] {
        failed(index, over: transport, localShortage: localShortage, retryOverTCP: true, now: now)
    }

    /// The send is over (answered, the caller's deadline, cancellation): cancels the timers, closes the sockets, and
    /// remembers the targets that were sent the message and stayed silent longer than the remembered delay, except the
    /// one that answered.
    mutating func close(now: NIODeadline) -> [Action] {
        guard !closed else { return [] }
        closed = true
        var actions: [Action] = armed.map { .cancel($0) }
        armed.removeAll()
        let answeredKDC = answered.map { targets[$0].kdc }
        for (index, state) in states.enumerated() {
            guard let sent = state.sentAt else { continue }
            if !state.failed, let remembered = silenceRemembered, now - sent >= remembered, targets[index].kdc != answeredKDC {
                actions.append(.markUnresponsive(targets[index].key))
            }
            actions.append(.close(index, nil))
        }
        return actions
    }

    // MARK: Rules

    /// The next target gets the message, with the failover timer armed; after the last one, retransmission, or the
    /// end when every target failed.
    private mutating func attempt(now: NIODeadline) -> [Action] {
        var actions: [Action] = []
        if armed.remove(.failover) != nil { actions.append(.cancel(.failover)) }
        guard next < targets.count else {
            if states.allSatisfy(\.failed) { return actions + finishUnreachable() }
            return actions + armRetransmit(now: now)
        }
        let index = next
        next += 1
        actions += send(to: index, forceTCP: false, now: now)
        if let delay = failoverDelay {
            actions += arm(.failover, at: now + delay)
        } else {
            // A one-time value stays with its KDC, but a datagram may be lost (a busy KDC's socket buffer): the same
            // request goes again to the same KDC at growing intervals, as MIT's client sends it. The KDC's lookaside
            // cache drops a repeat while the first is in progress and answers it with the first's reply afterwards,
            // so the second factor sees the value once.
            actions += armRetransmit(now: now)
        }
        if let remembered = silenceRemembered, remembered < (failoverDelay ?? .nanoseconds(.max)) {
            // A counted message waits longer for its target than later messages should: they avoid it meanwhile.
            actions += arm(.silence(index), at: now + remembered)
        }
        return actions
    }

    private mutating func arm(_ timer: Timer, at deadline: NIODeadline) -> [Action] {
        armed.insert(timer)
        return [.arm(timer, deadline)]
    }

    private mutating func armRetransmit(now: NIODeadline) -> [Action] {
        guard !armed.contains(.retransmit), states.contains(where: { $0.transport == .udp && !$0.failed }) else { return [] }
        return arm(.retransmit, at: now + retransmitInterval)
    }

    private func usesTCP(_ index: Int, forceTCP: Bool) -> Bool {
        switch targets[index].kdc.transport {
        case .tcp: true
        case .udp: false
        case .any: forceTCP || tcpOnly || messageLengths[index] > udpPreferenceLimit
        }
    }

    private mutating func send(to index: Int, forceTCP: Bool, now: NIODeadline) -> [Action] {
        let transport: Transport = usesTCP(index, forceTCP: forceTCP) ? .tcp : .udp
        states[index].sentAt = states[index].sentAt ?? now
        states[index].transport = transport
        if transport == .tcp { states[index].triedTCP = true }
        return [.open(index, transport)]
    }

    private mutating func failed(_ index: Int, over transport: Transport, localShortage: Int32?, retryOverTCP: Bool, now: NIODeadline) -> [Action] {
        // A socket the target no longer uses (UDP after the move to TCP) says nothing about it.
        guard !closed, !finished, !states[index].failed, states[index].transport == transport else { return [] }
        if let localShortage { localFailure = localShortage }
        if retryOverTCP, transport == .udp, targets[index].kdc.transport == .any, !states[index].triedTCP {
            // MIT's second pass: a KDC that refused UDP may listen on TCP.
            return [.close(index, nil)] + send(to: index, forceTCP: true, now: now)
        }
        states[index].failed = true
        var actions: [Action] = [.close(index, nil)]
        if !states[index].tooBigForUDP && localShortage == nil { actions.append(.markUnresponsive(targets[index].key)) }
        if index == next - 1 {
            actions += attempt(now: now)
        } else if next >= targets.count && states.allSatisfy(\.failed) {
            actions += finishUnreachable()
        }
        return actions
    }

    private mutating func finishUnreachable() -> [Action] {
        finished = true
        if let code = localFailure {
            // Not the KDCs' doing: the answer must not read kdc-unreachable, which counts against the client's address.
            let short = code == EMFILE || code == ENFILE ? "file descriptors" : "memory"
            return [.fail(KerberosError(code: code, message: "No socket for a KDC of realm '\(realm)': this process is short of \(short) (errno \(code))",
                                        reason: .other))]
        }
        let tooBig = states.indices.filter { states[$0].tooBigForUDP }
        if !tooBig.isEmpty {
            let kdcs = tooBig.map { targets[$0].kdc.description }.joined(separator: ", ")
            return [.fail(KerberosError(code: Int32(KRB5KRB_ERR_RESPONSE_TOO_BIG),
                                        message: "The reply of \(kdcs) (realm '\(realm)') does not fit a datagram, and krb5.conf allows it only UDP (udp/): allow TCP",
                                        reason: .kdcUnreachable))]
        }
        return [.fail(KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "Cannot contact any KDC for realm '\(realm)'", reason: .kdcUnreachable))]
    }
}

/// The health memory of KDCs (and kpasswd and name servers), by target key: until when each is tried last, having left
/// a message unanswered. Time comes in as a value; ``KDCTransport`` keeps one under its lock.
struct KDCHealth: Sendable {
    /// How long a target that left a message unanswered is tried last.
    let memory: TimeAmount
    private var marks: [String: NIODeadline] = [:]

    init(memory: TimeAmount) {
        self.memory = memory
    }

    /// The targets in the order to try them at `now`: the responsive ones in configured order, then those marked
    /// unresponsive (oldest mark first). With `primaryOnly`, only primaries.
    func order(_ targets: [KDCTarget], primaryOnly: Bool, now: NIODeadline) -> [KDCTarget] {
        let candidates = primaryOnly ? targets.filter(\.kdc.isPrimary) : targets
        let healthy = candidates.filter { !isUnresponsive($0.key, now: now) }
        let suspect = candidates.compactMap { target in marks[target.key].flatMap { $0 > now ? (target, $0) : nil } }
        return healthy + suspect.sorted { $0.1 < $1.1 }.map(\.0)
    }

    /// Whether the target `key` is tried last at `now`.
    func isUnresponsive(_ key: String, now: NIODeadline) -> Bool {
        (marks[key] ?? .distantPast) > now
    }

    /// Remembers `key` as unresponsive from `now` for ``memory``; marks that have run out are forgotten.
    mutating func markUnresponsive(_ key: String, now: NIODeadline) {
        marks = marks.filter { $0.value > now }
        marks[key] = now + memory
    }

    mutating func markResponsive(_ key: String) {
        marks[key] = nil
    }
}
