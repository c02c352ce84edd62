import Kerberos
import Logging
import NIOCore
import Testing
@testable import VerifyDaemon

/// The throttle and the log escaping on their own, without a KDC.
@Suite("Throttle and log escaping (unit)")
struct ThrottleTests {
    private static let policy = Throttle.Policy(failures: 3, window: .seconds(60), backoff: .seconds(5), maxBackoff: .seconds(300), penalty: .seconds(1))

    let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    func throttle(capacity: Int = 100) -> Throttle {
        Throttle(policy: .init(failures: 3, window: .seconds(60), backoff: .seconds(5), maxBackoff: .seconds(18)), capacity: capacity)
    }

    @Test("refused after the threshold, until the backoff passes; the backoff doubles up to the maximum")
    func backoff() {
        let throttle = throttle()
        #expect(!throttle.recordFailure("p", now: start))
        #expect(!throttle.recordFailure("p", now: start))
        #expect(throttle.check("p", now: start) == .allowed)
        #expect(throttle.recordFailure("p", now: start))
        #expect(throttle.check("p", now: start + .seconds(4)) != .allowed)
        #expect(throttle.check("q", now: start + .seconds(4)) == .allowed)
        #expect(throttle.check("p", now: start + .seconds(5)) == .allowed)
        // The second burst: 10 s, the third: capped at 18 s.
        var now = start + .seconds(6)
        for _ in 0..<3 { throttle.recordFailure("p", now: now) }
        #expect(throttle.check("p", now: now + .seconds(9)) != .allowed)
        #expect(throttle.check("p", now: now + .seconds(10)) == .allowed)
        now = now + .seconds(11)
        for _ in 0..<3 { throttle.recordFailure("p", now: now) }
        #expect(throttle.check("p", now: now + .seconds(17)) != .allowed)
        #expect(throttle.check("p", now: now + .seconds(18)) == .allowed)
    }

    @Test("failures outside the window do not add up; a success clears the principal")
    func windowAndSuccess() {
        let throttle = throttle()
        for now in [start, start, start + .seconds(61), start + .seconds(62)] {
            #expect(throttle.reserve("p", now: now) == .allowed)
            #expect(!throttle.release("p", failed: true, now: now), "the window restarted at 61 s")
        }
        #expect(throttle.reserve("p", now: start + .seconds(62)) == .allowed)
        throttle.release("p", failed: false, now: start + .seconds(62))
        for _ in 0..<3 { #expect(throttle.reserve("p", now: start + .seconds(63)) == .allowed, "the success cleared the count") }
    }

    @Test("entries whose window is over are swept out: failures for ever new names leave one window's worth")
    func sweep() {
        let throttle = Throttle(policy: .init(failures: 3, window: .seconds(60), backoff: .seconds(5), maxBackoff: .seconds(18)))
        for _ in 0..<3 { throttle.recordFailure("striker", now: start) }
        for index in 0..<2000 { throttle.recordFailure("name-\(index)", now: start + .seconds(1)) }
        #expect(throttle.count == 2001)
        // 62 s on: every name's window is over; the striker's strike (at 0 s) is older than the 18 s maximum backoff too.
        for index in 0..<1100 { throttle.recordFailure("later-\(index)", now: start + .seconds(62)) }
        #expect(throttle.count == 1100, "only this window's names are left")
        // A recent strike is remembered past its window, so the next burst backs off longer.
        for _ in 0..<3 { throttle.recordFailure("recent", now: start + .seconds(62)) }
        for index in 0..<1100 { throttle.recordFailure("again-\(index)", now: start + .seconds(64)) }
        #expect(throttle.check("recent", now: start + .seconds(66)) != .allowed)
    }

    @Test("memory is bounded: old entries are evicted, blocked and in-flight ones kept")
    func bounded() {
        let throttle = throttle(capacity: 100)
        for _ in 0..<3 { throttle.recordFailure("blocked", now: .now()) }
        #expect(throttle.reserve("in-flight") == .allowed)
        for index in 0..<1000 { throttle.recordFailure("peer-\(index)", now: .now()) }
        #expect(throttle.count <= 100)
        #expect(throttle.check("blocked") != .allowed)
        throttle.release("in-flight", failed: true)
        for _ in 0..<2 { #expect(throttle.reserve("in-flight") == .allowed) }
        #expect(throttle.reserve("in-flight") != .allowed, "its failure was still counted")
    }

    @Test("attempts count when they start: parallel reservations beyond the limit are refused")
    func reservationsCountInFlight() {
        let throttle = Throttle(policy: Self.policy)
        let now = NIODeadline.now()
        let verdicts = (0..<10).map { _ in throttle.reserve("p", now: now) }
        #expect(verdicts.filter { $0 == .allowed }.count == 3)
        // All three fail: the key stays refused for the rest of the window.
        for _ in 0..<3 { throttle.release("p", failed: true, now: now) }
        #expect(throttle.reserve("p", now: now + .seconds(30)) != .allowed)
        #expect(throttle.reserve("p", now: now + .seconds(61)) == .allowed, "a new window")
    }

    @Test("a success clears the record; outcomes that say nothing about guessing only end the attempt")
    func successClears() {
        let throttle = Throttle(policy: Self.policy)
        let now = NIODeadline.now()
        for _ in 0..<2 {
            #expect(throttle.reserve("p", now: now) == .allowed)
            throttle.release("p", failed: true, now: now)
        }
        #expect(throttle.reserve("p", now: now) == .allowed)
        throttle.release("p", failed: nil, now: now)
        #expect(throttle.reserve("p", now: now) == .allowed)
        throttle.release("p", failed: false, now: now)
        #expect(throttle.count == 0)
        for _ in 0..<3 { #expect(throttle.reserve("p", now: now) == .allowed) }
    }

    @Test("refusals wait out a penalty that doubles, up to 15 s")
    func penaltyDoubles() {
        let throttle = Throttle(policy: Self.policy)
        let now = NIODeadline.now()
        for _ in 0..<3 {
            _ = throttle.reserve("p", now: now)
            throttle.release("p", failed: true, now: now)
        }
        let penalties = (0..<6).map { _ -> Duration? in
            if case .refused(let penalty) = throttle.reserve("p", now: now) { penalty } else { nil }
        }
        #expect(penalties == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(15), .seconds(15)])
    }

    @Test("a peer key is blocked after the limit of recorded failures, and only that key")
    func peerKeys() {
        let throttle = Throttle(policy: Self.policy)
        let now = NIODeadline.now()
        #expect(throttle.recordFailure("addr:a", now: now) == false)
        #expect(throttle.recordFailure("addr:a", now: now) == false)
        #expect(throttle.recordFailure("addr:a", now: now) == true)
        #expect(throttle.check("addr:a", now: now + .seconds(1)) != .allowed)
        #expect(throttle.check("addr:b", now: now + .seconds(1)) == .allowed)
        #expect(throttle.check("addr:a", now: now + .seconds(6)) == .allowed, "the backoff is over")
    }

    @Test("the password verifier matches only the remembered password of that principal, and forgets")
    func verifiers() {
        let verifiers = PasswordVerifiers()
        verifiers.remember(Secret("right"), for: "alice@R")
        #expect(verifiers.matches(Secret("right"), for: "alice@R"))
        #expect(!verifiers.matches(Secret("wrong"), for: "alice@R"))
        #expect(!verifiers.matches(Secret("right"), for: "bob@R"))
        verifiers.forget("alice@R")
        #expect(!verifiers.matches(Secret("right"), for: "alice@R"))
    }

    @Test("control characters in messages and metadata are escaped, plain text is untouched")
    func escaping() {
        #expect(EscapingLogHandler.escape("alice@KRB5.TEST") == "alice@KRB5.TEST")
        #expect(EscapingLogHandler.escape("a\nb\r\tc\u{1b}d\u{7f}\u{85}\u{2028}\\") == "a\\nb\\r\\tc\\u{1b}d\\u{7f}\\u{85}\\u{2028}\\\\")
        let nested = EscapingLogHandler.escape(Logger.Metadata.Value.dictionary(["k": .array([.string("x\ny")])]))
        guard case .dictionary(let members) = nested, case .array(let items)? = members["k"], case .string(let text)? = items.first else {
            Issue.record("the structure changed: \(nested)")
            return
        }
        #expect(text == "x\\ny")
    }

    @Test("the principal's throttle key folds case: ALICE@AD.EXAMPLE, Alice@AD.EXAMPLE and alice@AD.EXAMPLE share one budget")
    func caseFolding() {
        #expect(Set(["ALICE@AD.EXAMPLE", "Alice@AD.EXAMPLE", "alice@AD.EXAMPLE"].map(LoginGate.throttleKey)).count == 1)
        #expect(LoginGate.throttleKey("alice@AD.EXAMPLE") != LoginGate.throttleKey("bob@AD.EXAMPLE"))
    }
}
