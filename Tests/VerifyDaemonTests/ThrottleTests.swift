import Kerberos
import Logging
import LoginService
import NIOCore
import Testing
@testable import VerifyDaemon

/// The throttle with `String` keys, for short tests.
extension Throttle {
    /// Reserves, dropping a queued attempt's later verdict.
    func reserve(_ key: String, now: NIODeadline = .now()) -> Verdict { reserve(ExactName(key), now: now) { _ in } }

    @discardableResult
    func release(_ key: String, failed: Bool?, now: NIODeadline = .now()) -> Bool {
        let release = release(ExactName(key), failed: failed, now: now)
        release.wake()
        return release.engagedBackoff
    }

    /// One attempt that fails: reserved and released as failed. Returns whether it put the key into backoff.
    @discardableResult
    func recordFailure(_ key: String, now: NIODeadline = .now()) -> Bool {
        guard reserve(key, now: now) == .allowed else { return false }
        return release(key, failed: true, now: now)
    }

    func check(_ key: String, now: NIODeadline = .now()) -> Verdict { isRefusing(ExactName(key), now: now) ? .refused(penalty: .zero) : .allowed }
}

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
        // A 1 s window, so that the backoff, not the window, decides.
        let throttle = Throttle(policy: .init(failures: 3, window: .seconds(1), backoff: .seconds(5), maxBackoff: .seconds(18)))
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

    @Test("attempts count when they start: parallel reservations beyond the limit wait in line; when the key fails into backoff they are refused")
    func reservationsCountInFlight() {
        let throttle = Throttle(policy: Self.policy)
        let now = NIODeadline.now()
        let later = Locked<[Throttle.Verdict]>([])
        let verdicts = (0..<10).map { _ in throttle.reserve(ExactName("p"), now: now) { verdict in later.withLock { $0.append(verdict) } } }
        #expect(verdicts.filter { $0 == .allowed }.count == 3)
        #expect(verdicts.filter { $0 == .queued }.count == 7)
        // All three fail: the seven in line are refused, and the key stays refused for the rest of the window.
        for _ in 0..<3 { throttle.release("p", failed: true, now: now) }
        #expect(later.withLock { $0 }.count == 7 && later.withLock { $0 }.allSatisfy { $0 != .allowed && $0 != .queued })
        #expect(throttle.reserve("p", now: now + .seconds(30)) != .allowed)
        #expect(throttle.reserve("p", now: now + .seconds(61)) == .allowed, "a new window")
    }

    @Test("an attempt in line gets the slot its predecessor frees, first come first served; a success lets the whole line through")
    func lineGetsFreedSlots() {
        let throttle = Throttle(policy: Self.policy)
        let now = NIODeadline.now()
        let order = Locked<[Int]>([])
        for index in 0..<8 {
            let verdict = throttle.reserve(ExactName("p"), now: now) { verdict in
                if verdict == .allowed { order.withLock { $0.append(index) } }
            }
            if verdict == .allowed { order.withLock { $0.append(index) } }
        }
        #expect(order.withLock { $0 } == [0, 1, 2])
        throttle.release("p", failed: nil, now: now)
        #expect(order.withLock { $0 } == [0, 1, 2, 3], "a neutral outcome frees its slot for the next in line")
        throttle.release("p", failed: true, now: now)
        #expect(order.withLock { $0 } == [0, 1, 2, 3], "a failure keeps its slot taken for the window")
        throttle.release("p", failed: false, now: now)
        #expect(order.withLock { $0 } == [0, 1, 2, 3, 4, 5], "a success clears the failures: two in flight, one more slot")
        // Attempts arriving now queue behind those still waiting.
        #expect(throttle.reserve("p", now: now) == .queued)
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
        #expect(throttle.check("addr:a", now: now + .seconds(6)) != .allowed, "the backoff is over, but the failures fill the window's slots")
        #expect(throttle.check("addr:a", now: now + .seconds(61)) == .allowed, "a new window")
    }

    @Test("the password verifier matches only the remembered password of that principal, and forgets")
    func verifiers() {
        let verifiers = PasswordVerifiers()
        let alice = ExactName("alice@R"), now = NIODeadline.now()
        verifiers.remember(Secret("right"), for: alice, from: ExactName("addr:home"))
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("a"), penalty: .seconds(1), now: now) == .matched)
        #expect(verifiers.test(Secret("wrong"), for: alice, from: ExactName("b"), penalty: .seconds(1), now: now) == .mismatched)
        #expect(verifiers.test(Secret("right"), for: ExactName("bob@R"), from: ExactName("c"), penalty: .seconds(1), now: now) == .untested)
        verifiers.forget(alice)
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("d"), penalty: .seconds(1), now: now) == .untested)
    }

    @Test("guesses tested against a verifier are rationed: one wrong test per source per penalty, at most `sources` sources resting")
    func verifierTestsRationed() {
        let verifiers = PasswordVerifiers(sources: 2)
        let alice = ExactName("alice@R"), now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
        let attacker = ExactName("addr:203.0.113.1")
        verifiers.remember(Secret("right"), for: alice, from: ExactName("addr:home"))
        #expect(verifiers.test(Secret("guess-1"), for: alice, from: attacker, penalty: .seconds(4), now: now) == .mismatched)
        // However many guesses follow from that source, none is tested until the penalty is over, the right one neither.
        for index in 2..<300 {
            #expect(verifiers.test(Secret("guess-\(index)"), for: alice, from: attacker, penalty: .seconds(4), now: now + .seconds(1)) == .untested)
        }
        #expect(verifiers.test(Secret("right"), for: alice, from: attacker, penalty: .seconds(4), now: now + .seconds(3)) == .untested)
        // The owner from another address is tested at once.
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("addr:198.51.100.9"), penalty: .seconds(4), now: now + .seconds(3)) == .matched)
        // A second source rests too; a third finds the principal's ration used up until one of them is over.
        #expect(verifiers.test(Secret("x"), for: alice, from: ExactName("addr:b"), penalty: .seconds(8), now: now + .seconds(3)) == .mismatched)
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("addr:c"), penalty: .seconds(4), now: now + .seconds(3)) == .untested)
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("addr:c"), penalty: .seconds(4), now: now + .seconds(4)) == .matched)
        #expect(verifiers.test(Secret("right"), for: alice, from: attacker, penalty: .seconds(4), now: now + .seconds(4)) == .matched)
        // The address alice last logged in from is not held to the cap: with two sources resting, it is still tested.
        #expect(verifiers.test(Secret("y"), for: alice, from: ExactName("addr:d"), penalty: .seconds(8), now: now + .seconds(4)) == .mismatched)
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("addr:e"), penalty: .seconds(8), now: now + .seconds(4)) == .untested)
        #expect(verifiers.test(Secret("right"), for: alice, from: ExactName("addr:home"), penalty: .seconds(8), now: now + .seconds(4)) == .matched)
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

    @Test("the principal's throttle key folds ASCII case: ALICE@AD.EXAMPLE, Alice@AD.EXAMPLE and alice@AD.EXAMPLE share one budget")
    func caseFolding() {
        #expect(Set(["ALICE@AD.EXAMPLE", "Alice@AD.EXAMPLE", "alice@AD.EXAMPLE"].map(LoginGate.throttleKey)).count == 1)
        #expect(LoginGate.throttleKey("alice@AD.EXAMPLE") != LoginGate.throttleKey("bob@AD.EXAMPLE"))
    }

    @Test("the failure floor follows the slowest of the last 32 guessing failures' exchanges, up to 5 s")
    func failureTiming() {
        var timing = FailureTiming()
        #expect(timing.slowest == .zero)
        for milliseconds in [3, 12, 5] { timing.record(.milliseconds(milliseconds)) }
        #expect(timing.slowest == .milliseconds(12), "an unknown name's one round trip is padded to a known name's three")
        for _ in 0..<FailureTiming.kept { timing.record(.milliseconds(2)) }
        #expect(timing.slowest == .milliseconds(2), "older exchanges are forgotten")
        timing.record(.seconds(40))
        #expect(timing.slowest == FailureTiming.ceiling)
    }

    @Test("names Swift's String calls equal are distinct keys everywhere: NFD and NFC, KELVIN SIGN and K")
    func exactNames() {
        let nfc = "jos\u{e9}@R", nfd = "jose\u{301}@R", kelvin = "\u{212A}alice@R", plain = "kalice@R"
        #expect(nfc == nfd && "\u{212A}" == "K" && kelvin.lowercased() == plain.lowercased(), "what Swift's String does")
        #expect(LoginGate.throttleKey(nfc) != LoginGate.throttleKey(nfd))
        #expect(LoginGate.throttleKey(kelvin) != LoginGate.throttleKey(plain))
        // The throttle: failures of one spelling do not throttle the other.
        let throttle = Throttle(policy: Self.policy)
        for _ in 0..<3 { throttle.recordFailure(nfd) }
        #expect(throttle.check(nfd) != .allowed)
        #expect(throttle.check(nfc) == .allowed)
        // The verifiers: the NFC principal's password is no verifier of the NFD one.
        let verifiers = PasswordVerifiers()
        verifiers.remember(Secret("right"), for: ExactName(nfc), from: ExactName(""))
        #expect(verifiers.test(Secret("right"), for: ExactName(nfd), from: ExactName(""), penalty: .seconds(1), now: .now()) == .untested)
        #expect(verifiers.test(Secret("right"), for: ExactName(nfc), from: ExactName(""), penalty: .seconds(1), now: .now()) == .matched)
        // The result cache: a success of one is no success of the other.
        let cache = ResultCache(ttl: .seconds(60))
        cache.store(principal: nfc, password: Secret("right"), result: .success(principal: nfc, verified: true, expires: nil))
        #expect(cache.lookup(principal: nfd, password: Secret("right")) == nil)
        #expect(cache.lookup(principal: nfc, password: Secret("right")) != nil)
        cache.invalidate(principal: nfd)
        #expect(cache.lookup(principal: nfc, password: Secret("right")) != nil, "invalidating one leaves the other")
    }
}
