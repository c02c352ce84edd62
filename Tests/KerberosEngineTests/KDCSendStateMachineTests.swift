@testable import KerberosEngine
import Kerberos
import CKrb5
import Foundation
import NIOCore
import Testing

/// Issue #22: every rule of sending a message to a realm's KDCs (failover, hedging by ``Delivery``, TCP fallback,
/// retransmission, the health memory, local shortages, DNS answers), on ``KDCSendStateMachine`` and ``KDCHealth``
/// with no socket and a clock moved by assignment. The driver that carries the actions out on NIO is proven against
/// real KDCs by `EngineTests`, `DeliveryTests` and `FailoverTests`.
@Suite("KDC send state machine (unit, injected clock)")
struct KDCSendStateMachineTests {
    /// What one action did, comparable (an error by its code).
    enum Step: Hashable {
        case open(Int, KDCSendStateMachine.Transport)
        case write(Int, KDCSendStateMachine.Transport)
        case close(Int, KDCSendStateMachine.Transport?)
        case arm(KDCSendStateMachine.Timer, NIODeadline)
        case cancel(KDCSendStateMachine.Timer)
        case markUnresponsive(String)
        case markResponsive(String)
        case answer(Int)
        case fail(Int32)

        init(_ action: KDCSendStateMachine.Action) {
            switch action {
            case .open(let index, let over): self = .open(index, over)
            case .write(let index, let over): self = .write(index, over)
            case .close(let index, let over): self = .close(index, over)
            case .arm(let timer, let deadline): self = .arm(timer, deadline)
            case .cancel(let timer): self = .cancel(timer)
            case .markUnresponsive(let key): self = .markUnresponsive(key)
            case .markResponsive(let key): self = .markResponsive(key)
            case .answer(let index, _): self = .answer(index)
            case .fail(let error): self = .fail(error.code)
            }
        }
    }

    /// A driver without sockets: applies the actions to a clock, a timer table and a ``KDCHealth``, and connects every
    /// socket the machine opens at once (tests report refusals and replies themselves).
    struct Run {
        var machine: KDCSendStateMachine
        /// The injected clock, starting at 0.
        var now = NIODeadline.uptimeNanoseconds(0)
        var timers: [KDCSendStateMachine.Timer: NIODeadline] = [:]
        var health = KDCHealth(memory: .seconds(30))
        /// Every step, with the time (ms) it was taken.
        var log: [(ms: Int64, step: Step)] = []
        var answer: (target: Int, bytes: [UInt8])?
        var error: KerberosError?

        init(_ targets: [KDCTarget], length: Int = 100, kind: ReplyKind = .kdc, udpPreferenceLimit: Int = 1465, tcpOnly: Bool = false,
             delivery: Delivery = .hedged) {
            machine = KDCSendStateMachine(targets: targets, messageLengths: Array(repeating: length, count: targets.count), kind: kind,
                                          udpPreferenceLimit: udpPreferenceLimit, tcpOnly: tcpOnly, delivery: delivery, realm: "A.TEST",
                                          timing: .init(hedgeDelay: .milliseconds(250), countedFailover: .seconds(3), retransmitInterval: .seconds(1)))
            apply(machine.start(now: now))
        }

        var ms: Int64 { Int64(now.uptimeNanoseconds / 1_000_000) }

        mutating func apply(_ actions: [KDCSendStateMachine.Action]) {
            for action in actions {
                log.append((ms, Step(action)))
                switch action {
                case .open(let index, let over):
                    apply(machine.connected(index, over: over))
                case .arm(let timer, let deadline):
                    timers[timer] = deadline
                case .cancel(let timer):
                    timers[timer] = nil
                case .markUnresponsive(let key):
                    health.markUnresponsive(key, now: now)
                case .markResponsive(let key):
                    health.markResponsive(key)
                case .answer(let index, let bytes):
                    answer = (index, bytes)
                case .fail(let error):
                    self.error = error
                case .write, .close:
                    break
                }
            }
        }

        /// Moves the clock forward by `amount`, firing each timer that falls due on the way, at its deadline.
        mutating func advance(_ amount: TimeAmount) {
            let end = now + amount
            while let (timer, deadline) = timers.filter({ $0.value <= end }).min(by: { $0.value < $1.value }) {
                timers[timer] = nil
                now = deadline
                apply(machine.timerFired(timer, now: now))
            }
            now = end
        }

        mutating func receive(_ bytes: [UInt8], from index: Int, over transport: KDCSendStateMachine.Transport) {
            apply(machine.received(bytes, from: index, over: transport, now: now))
        }

        mutating func refuse(_ index: Int, over transport: KDCSendStateMachine.Transport, localShortage: Int32? = nil) {
            apply(machine.failed(index, over: transport, localShortage: localShortage, now: now))
        }

        mutating func close() {
            apply(machine.close(now: now))
        }

        /// The sockets opened, in order.
        var opened: [Step] { log.map(\.step).filter { if case .open = $0 { true } else { false } } }
        /// When each write happened, in ms.
        func writes(_ index: Int, _ transport: KDCSendStateMachine.Transport) -> [Int64] {
            log.filter { $0.step == .write(index, transport) }.map(\.ms)
        }
        var marked: [String] { log.compactMap { if case .markUnresponsive(let key) = $0.step { key } else { nil } } }
        func isMarked(_ index: Int, _ targets: [KDCTarget]) -> Bool { health.isUnresponsive(targets[index].key, now: now) }
    }

    static func target(_ number: Int, _ transport: KDCAddress.Transport = .any, primary: Bool = false) -> KDCTarget {
        let host = "127.0.0.\(number)"
        return KDCTarget(kdc: KDCAddress(host: host, port: 88, transport: transport, isPrimary: primary),
                         address: try! SocketAddress(ipAddress: host, port: 88), key: "\(host):88")
    }

    let two = [target(1), target(2)]
    let three = [target(1), target(2), target(3)]
    /// An AS-REP, as far as routing reads it.
    let asReply: [UInt8] = [0x6B, 0x03, 0x30, 0x01, 0x00]
    /// A KRB-ERROR `KRB_ERR_RESPONSE_TOO_BIG` (52).
    let tooBig: [UInt8] = [0x7E, 0x07, 0x30, 0x05, 0xA6, 0x03, 0x02, 0x01, 0x34]

    // MARK: Hedging by delivery

    @Test("hedged: the next KDC gets the message after the hedge delay and not before; the first reply wins")
    func hedgedAfterDelay() {
        var run = Run(three)
        #expect(run.opened == [.open(0, .udp)] && run.writes(0, .udp) == [0])
        run.advance(.milliseconds(249))
        #expect(run.opened == [.open(0, .udp)], "no hedge before 250 ms")
        run.advance(.milliseconds(1))
        #expect(run.opened == [.open(0, .udp), .open(1, .udp)] && run.writes(1, .udp) == [250])
        run.advance(.milliseconds(250))
        #expect(run.opened.last == .open(2, .udp) && run.writes(2, .udp) == [500])
        run.receive(asReply, from: 1, over: .udp)
        #expect(run.answer?.target == 1 && run.answer?.bytes == asReply)
        #expect(run.log.last?.step == .answer(1) && run.log.dropLast().last?.step == .markResponsive(two[1].key))
        run.advance(.seconds(10))
        #expect(run.opened.count == 3, "nothing is sent after the answer")
    }

    @Test("counted: the next KDC only after countedFailover (3 s), while the silence is remembered after the hedge delay")
    func countedWaitsAndRemembers() {
        var run = Run(two, delivery: .counted)
        run.advance(.milliseconds(249))
        #expect(!run.isMarked(0, two), "not remembered before the hedge delay")
        run.advance(.milliseconds(1))
        #expect(run.isMarked(0, two), "remembered at the hedge delay, so later logins avoid it")
        run.advance(.milliseconds(2749))
        #expect(run.opened == [.open(0, .udp)], "still only the first KDC at 2.999 s")
        run.advance(.milliseconds(1))
        #expect(run.opened == [.open(0, .udp), .open(1, .udp)] && run.writes(1, .udp) == [3000])
        run.receive(asReply, from: 1, over: .udp)
        #expect(run.answer?.target == 1)
        run.close()
        #expect(run.isMarked(0, two) && !run.isMarked(1, two))
    }

    @Test("counted: a KDC that answers within the hedge delay is never remembered, nor hedged")
    func countedAnsweredInTime() {
        var run = Run(two, delivery: .counted)
        run.advance(.milliseconds(100))
        run.receive(asReply, from: 0, over: .udp)
        run.close()
        run.advance(.seconds(10))
        #expect(run.answer?.target == 0 && run.marked.isEmpty && run.opened == [.open(0, .udp)])
        #expect(run.timers.isEmpty, "every timer cancelled at close")
    }

    @Test("one-time: never to a second KDC while the first may answer, sent again to it over UDP at growing intervals, never remembered however long it waits; a refusal moves on at once")
    func oneTimeStaysOnItsKDC() {
        var run = Run(two, delivery: .oneTime)
        run.advance(.seconds(60))
        #expect(run.opened == [.open(0, .udp)], "a minute of silence sends nothing to the second KDC")
        #expect(run.writes(0, .udp) == [0, 1000, 3000, 7000, 15000, 31000], "a lost datagram is sent again, to the same KDC: \(run.writes(0, .udp))")
        #expect(run.marked.isEmpty)
        run.receive(asReply, from: 0, over: .udp)
        run.close()
        #expect(run.answer?.target == 0 && run.marked.isEmpty, "a slow one-time answer is not held against the KDC")

        var silent = Run(two, delivery: .oneTime)
        silent.advance(.seconds(30))
        silent.close()
        #expect(silent.marked.isEmpty, "ended by the caller's deadline: still not remembered")

        var refused = Run([Self.target(1, .tcp), Self.target(2)], delivery: .oneTime)
        refused.advance(.milliseconds(10))
        refused.refuse(0, over: .tcp)
        #expect(refused.opened == [.open(0, .tcp), .open(1, .udp)] && refused.writes(1, .udp) == [10])
    }

    // MARK: Refusals, TCP fallback, too big

    @Test("a refusing KDC is passed over at once and marked; when every KDC refused, kdc-unreachable")
    func refusedMovesOn() {
        let targets = [Self.target(1, .tcp), Self.target(2, .tcp)]
        var run = Run(targets, delivery: .hedged)
        run.advance(.milliseconds(5))
        run.refuse(0, over: .tcp)
        #expect(run.opened == [.open(0, .tcp), .open(1, .tcp)] && run.writes(1, .tcp) == [5], "no hedge delay waited")
        #expect(run.isMarked(0, targets))
        run.refuse(1, over: .tcp)
        #expect(run.error?.code == Int32(KRB5_KDC_UNREACH) && run.error?.reason == .kdcUnreachable)
        #expect(run.error?.message.contains("A.TEST") == true)
    }

    @Test("UDP refused: the same KDC over TCP when it speaks both; a udp/ KDC is passed over; a late error of the closed UDP socket changes nothing")
    func udpRefusedTriesTCP() {
        var run = Run(two)
        run.refuse(0, over: .udp)
        #expect(run.opened == [.open(0, .udp), .open(0, .tcp)] && run.writes(0, .tcp) == [0])
        #expect(run.marked.isEmpty, "not marked: it may answer over TCP")
        run.refuse(0, over: .udp)
        #expect(run.opened.count == 2 && run.marked.isEmpty, "the old socket's error is not the TCP attempt's")
        run.receive(asReply, from: 0, over: .tcp)
        #expect(run.answer?.target == 0)

        let udpOnly = [Self.target(1, .udp), Self.target(2)]
        var passed = Run(udpOnly)
        passed.refuse(0, over: .udp)
        #expect(passed.opened == [.open(0, .udp), .open(1, .udp)] && passed.isMarked(0, udpOnly))
        passed.refuse(1, over: .udp)
        passed.refuse(1, over: .tcp)
        #expect(passed.error?.code == Int32(KRB5_KDC_UNREACH))
    }

    @Test("RESPONSE_TOO_BIG over UDP: the same KDC again over TCP, whose answer is taken (even a TOO_BIG error)")
    func tooBigGoesTCP() {
        var run = Run(two)
        run.advance(.milliseconds(20))
        run.receive(tooBig, from: 0, over: .udp)
        #expect(run.log.suffix(3).map(\.step) == [.close(0, nil), .open(0, .tcp), .write(0, .tcp)])
        #expect(run.answer == nil && run.marked.isEmpty)
        run.receive(tooBig, from: 0, over: .tcp)
        #expect(run.answer?.target == 0, "over TCP the error is krb5's to read")
    }

    @Test("RESPONSE_TOO_BIG from a UDP-only KDC: passed over unmarked, and the send ends at once with an error naming the udp/ entry")
    func tooBigUDPOnly() {
        let targets = [Self.target(1, .udp)]
        var run = Run(targets)
        run.receive(tooBig, from: 0, over: .udp)
        #expect(!run.opened.contains(.open(0, .tcp)) && run.marked.isEmpty)
        let error = run.error
        #expect(error?.code == Int32(KRB5KRB_ERR_RESPONSE_TOO_BIG), "\(String(describing: error))")
        #expect(error?.message.contains("127.0.0.1:88") == true && error?.message.contains("udp/") == true && error?.message.contains("does not fit a datagram") == true)

        var beside = Run([Self.target(1, .udp), Self.target(2)])
        beside.receive(tooBig, from: 0, over: .udp)
        #expect(beside.opened == [.open(0, .udp), .open(1, .udp)], "the next KDC at once")
        beside.receive(asReply, from: 1, over: .udp)
        #expect(beside.answer?.target == 1 && beside.error == nil)
    }

    // MARK: Choosing UDP or TCP

    @Test("UDP or TCP: udp_preference_limit, tcpOnly (after RESPONSE_TOO_BIG from krb5), tcp/ and udp/ entries")
    func transportChoice() {
        let mixed = [Self.target(1), Self.target(2, .tcp), Self.target(3, .udp)]
        func opened(length: Int, limit: Int, tcpOnly: Bool) -> [Step] {
            var run = Run(mixed, length: length, udpPreferenceLimit: limit, tcpOnly: tcpOnly)
            run.advance(.milliseconds(500))
            return run.opened
        }
        #expect(opened(length: 100, limit: 1465, tcpOnly: false) == [.open(0, .udp), .open(1, .tcp), .open(2, .udp)])
        #expect(opened(length: 1466, limit: 1465, tcpOnly: false) == [.open(0, .tcp), .open(1, .tcp), .open(2, .udp)])
        #expect(opened(length: 100, limit: 1465, tcpOnly: true) == [.open(0, .tcp), .open(1, .tcp), .open(2, .udp)])
        #expect(opened(length: 100, limit: 1, tcpOnly: false) == [.open(0, .tcp), .open(1, .tcp), .open(2, .udp)])
    }

    // MARK: Retransmission

    @Test("after every KDC was tried, UDP KDCs get the message again at 1 s, 2 s, 4 s...; TCP ones are not written again")
    func retransmitDoubling() {
        var run = Run([Self.target(1), Self.target(2, .tcp)])
        run.advance(.seconds(16))
        // Sent at 0 and 250 ms; the last KDC's hedge delay ends at 500 ms, then 1, 2, 4, 8 s.
        #expect(run.writes(0, .udp) == [0, 1500, 3500, 7500, 15500])
        #expect(run.writes(1, .tcp) == [250])
        run.close()
        #expect(run.timers.isEmpty)
        run.advance(.seconds(60))
        #expect(run.writes(0, .udp).count == 5, "nothing after close")
    }

    @Test("a refused KDC is not retransmitted to; the one still silent is")
    func retransmitSkipsFailed() {
        var run = Run(two)
        run.advance(.milliseconds(300))
        run.refuse(1, over: .udp)
        run.refuse(1, over: .tcp)
        run.advance(.seconds(2))
        // The last KDC failed at 300 ms: every KDC was tried, so retransmission starts from there (1 s later).
        #expect(run.writes(0, .udp) == [0, 1300] && run.writes(1, .udp) == [250])
    }

    // MARK: Local shortage

    @Test("this process's shortage (EMFILE) marks no KDC and ends with its own error, not kdc-unreachable")
    func localShortage() {
        let targets = [Self.target(1, .tcp), Self.target(2, .tcp)]
        var run = Run(targets)
        run.refuse(0, over: .tcp, localShortage: EMFILE)
        #expect(run.opened == [.open(0, .tcp), .open(1, .tcp)], "the next KDC is tried")
        run.refuse(1, over: .tcp, localShortage: EMFILE)
        #expect(run.marked.isEmpty)
        #expect(run.error?.code == EMFILE && run.error?.reason == .other && run.error?.message.contains("file descriptors") == true)
    }

    // MARK: Close

    @Test("at close, KDCs silent for the hedge delay or longer are remembered; not one silent for less, not the one that answered")
    func closeMarksSilent() {
        var run = Run(three)
        run.advance(.milliseconds(400))   // 0 sent at 0, 1 at 250
        run.receive(asReply, from: 1, over: .udp)
        run.close()
        #expect(run.marked == [three[0].key])
        #expect(Set(run.log.suffix(2).map(\.step)) == [.close(0, nil), .close(1, nil)])

        var deadline = Run(three)
        deadline.advance(.milliseconds(400))
        deadline.close()   // the caller's deadline: nothing answered
        #expect(deadline.marked == [three[0].key], "the second KDC was silent only 150 ms")

        var early = Run(two)
        early.advance(.milliseconds(100))
        early.close()
        #expect(early.marked.isEmpty && early.timers.isEmpty)
    }

    @Test("after the answer or close, late events do nothing: a connection made is closed, replies and refusals are dropped")
    func lateEvents() {
        var run = Run(two)
        run.receive(asReply, from: 0, over: .udp)
        let steps = run.log.count
        run.refuse(0, over: .udp)
        run.receive(asReply, from: 0, over: .udp)
        run.advance(.seconds(5))
        #expect(run.log.count == steps)
        run.close()
        #expect(run.machine.connected(1, over: .udp).map(Step.init) == [.close(1, .udp)])
        #expect(run.machine.close(now: run.now).isEmpty, "closing twice does nothing")
    }

    // MARK: The health memory

    @Test("order: responsive KDCs in configured order, then the unresponsive ones, oldest mark first; marks run out after the memory; a reply clears one")
    func healthOrder() {
        let targets = [Self.target(1, primary: true), Self.target(2), Self.target(3), Self.target(4, primary: true)]
        var health = KDCHealth(memory: .seconds(30))
        let start = NIODeadline.uptimeNanoseconds(0)
        #expect(health.order(targets, primaryOnly: false, now: start).map(\.key) == targets.map(\.key))
        health.markUnresponsive(targets[2].key, now: start)
        health.markUnresponsive(targets[0].key, now: start + .seconds(1))
        let keys = { (now: NIODeadline, primaryOnly: Bool) in health.order(targets, primaryOnly: primaryOnly, now: now).map(\.key) }
        #expect(keys(start + .seconds(2), false) == [targets[1], targets[3], targets[2], targets[0]].map(\.key))
        #expect(keys(start + .seconds(2), true) == [targets[3], targets[0]].map(\.key))
        #expect(keys(start + .seconds(30), false) == [targets[1], targets[2], targets[3], targets[0]].map(\.key), "the first mark ran out at 30 s")
        #expect(keys(start + .seconds(31), false) == targets.map(\.key))
        #expect(health.isUnresponsive(targets[0].key, now: start + .seconds(30)) && !health.isUnresponsive(targets[0].key, now: start + .seconds(31)))
        health.markResponsive(targets[0].key)
        #expect(!health.isUnresponsive(targets[0].key, now: start + .seconds(2)))
    }

    // MARK: DNS

    func dnsResponse(_ question: DNSServiceRecords.Question, flags: Int) -> [UInt8] {
        DNSMessageTests.header(id: Int(question.id), flags: flags, answers: 0) + DNSMessageTests.question(question.name, type: question.type)
    }

    @Test("DNS: a truncated answer over UDP asks the same server over TCP; an error answer (SERVFAIL) passes to the next server; another question's response is ignored")
    func dnsAnswers() {
        let question = DNSServiceRecords.Question(id: 0x4242, name: "_kerberos._udp.a.test", type: DNSServiceRecords.typeSRV)
        let servers = [Self.target(1), Self.target(2)]
        var run = Run(servers, kind: .dns(question), udpPreferenceLimit: .max)
        run.receive(dnsResponse(DNSServiceRecords.Question(id: 0x4243, name: question.name, type: question.type), flags: 0x8180), from: 0, over: .udp)
        #expect(run.answer == nil && run.opened == [.open(0, .udp)], "another ID is not this question's response")
        run.receive(dnsResponse(question, flags: 0x8380), from: 0, over: .udp)
        #expect(run.opened == [.open(0, .udp), .open(0, .tcp)], "TC set: the same server over TCP")
        run.receive(dnsResponse(question, flags: 0x8182), from: 0, over: .tcp)
        #expect(run.opened.last == .open(1, .udp) && run.isMarked(0, servers), "SERVFAIL: the next server")
        run.receive(dnsResponse(question, flags: 0x8183), from: 1, over: .udp)
        #expect(run.answer?.target == 1, "NXDOMAIN is an answer")
        #expect(ReplyKind.dns(question).lengthPrefix == 2 && ReplyKind.kdc.lengthPrefix == 4)
    }

    @Test("DNS: a SERVFAIL over UDP is not asked again over TCP; every server failing is unreachable")
    func dnsErrorsNoTCP() {
        let question = DNSServiceRecords.Question(id: 7, name: "kdc.a.test", type: DNSServiceRecords.typeA)
        var run = Run([Self.target(1)], kind: .dns(question), udpPreferenceLimit: .max)
        run.receive(dnsResponse(question, flags: 0x8185), from: 0, over: .udp)   // REFUSED
        #expect(run.opened == [.open(0, .udp)])
        #expect(run.error?.code == Int32(KRB5_KDC_UNREACH))
    }
}
