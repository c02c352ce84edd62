import Foundation
import Kerberos
import LoginProtocol
import LoginService
import NIOCore
import TestRealm
import Testing
@testable import VerifyDaemon

/// The second security review's findings (issue 21) against the live realm, with the daemon's default
/// throttle (5 failures in 60 s).
@Suite("Security review, second round: guessing, exact names, address slots", .onTestThreads)
struct SecondReviewTests {
    static let penalty = DaemonFixture.throttleTestPenalty

    /// Runs `count` requests at once, each on a thread of its own (replies wait out penalties), and returns
    /// each one's reply by index.
    static func parallel(_ count: Int, _ request: @escaping @Sendable (Int) throws -> SaslauthdReply) async -> [SaslauthdReply?] {
        let replies = Locked<[Int: SaslauthdReply]>([:])
        let done = DispatchGroup()
        for index in 0..<count {
            done.enter()
            Thread {
                let reply = try? request(index)
                replies.withLock { $0[index] = reply }
                done.leave()
            }.start()
        }
        await withCheckedContinuation { continuation in done.notify(queue: .global()) { continuation.resume() } }
        return replies.withLock { replies in (0..<count).map { replies[$0] } }
    }

    /// KDC log lines since `skip` that name `principal` (any realm).
    private static func kdcLines(_ realm: TestRealm, naming text: String, after skip: Int) throws -> [Substring] {
        try realm.kdcLog().dropFirst(skip).filter { $0.contains(text) }
    }

    @Test("a throttled principal: parallel guesses from one address have one tested per penalty, the right one among them is refused, and the owner from another address gets in at once")
    func guessingOracleClosed() async throws {
        // Time stands still for the throttles and the verifiers: the attacker's penalty never runs out in this test.
        let frozen = NIODeadline.now()
        // A short penalty (its ceiling 16 × 50 ms): the refused answers are awaited many times here.
        try await DaemonFixture.withThrottle(clock: { frozen }, { configuration, _ in configuration.throttlePenalty = .milliseconds(50) }) { fixture in
            let realm = fixture.realm
            // Requiring preauth, so that the KDC counts (and logs) each wrong password it sees.
            let victim = try realm.addPrincipal(prefix: "oracle", password: "Oracle-Passw0rd", attributes: ["+requires_preauth"])
            #expect(try fixture.sasl(victim, "Oracle-Passw0rd", address: "198.51.100.1") == .ok, "the owner logs in once: a verifier")
            let attacker = "203.0.113.66"
            let skip = try realm.kdcLog().count
            for attempt in 0..<5 {
                #expect(try fixture.sasl(victim, "guess-\(attempt)", address: attacker) == .no("authentication failed"))
            }
            // 40 clients guess at once from the attacker's address; then the right password from it.
            let replies = await Self.parallel(40) { index in try fixture.sasl(victim, "guess-more-\(index)", address: attacker) }
            #expect(replies.allSatisfy { $0 == .no("authentication failed") })
            #expect(try fixture.sasl(victim, "Oracle-Passw0rd", address: attacker) == .no("authentication failed"),
                    "the right password from the guessing address is not tested: the ration was used")
            let tested = fixture.logs.entries.filter { $0.contains("refused without asking the KDC") && $0.contains(victim) && $0.contains("tested") && !$0.contains("untested") }
            #expect(tested.count == 1, "one guess tested for that address in this penalty period: \(tested.count)")
            #expect(try fixture.sasl(victim, "Oracle-Passw0rd", address: "198.51.100.9") == .ok, "the owner, from another address, at once")
            // The conversation's client_address is the same key: refused from the guessing address, let in from another.
            #expect(try fixture.converse(victim, password: "Oracle-Passw0rd", address: attacker).result().failure == .badCredentials)
            #expect(try fixture.converse(victim, password: "Oracle-Passw0rd", address: "198.51.100.10").result().ok)
            // Four more guessing addresses, one guess each: with the first, throttle_failures sources now wait out a
            // penalty, the principal's cap. A new address is then refused untested; the owner's known ones still get in.
            let botnet = await Self.parallel(4) { index in try fixture.sasl(victim, "botnet-\(index)", address: "203.0.113.\(101 + index)") }
            #expect(botnet.allSatisfy { $0 == .no("authentication failed") })
            #expect(try fixture.sasl(victim, "Oracle-Passw0rd", address: "198.51.100.11") == .no("authentication failed"), "a sixth source is not tested")
            #expect(try fixture.sasl(victim, "Oracle-Passw0rd", address: "198.51.100.1") == .ok, "the address the owner logged in from")
            #expect(try Self.kdcLines(realm, naming: " \(victim)@", after: skip).filter { $0.contains("PREAUTH_FAILED") }.count == 5,
                    "only throttle_failures guesses reached the KDC")
        }
    }

    @Test("one uid, no client addresses, concurrency 64, 1 in 18 a typo and 14 in 18 the right password: no right password is refused")
    func soakDropsNoRightPassword() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            // No earlier login: no verifier to fall back on when 64 requests arrive together.
            let alice = try realm.addPrincipal(prefix: "soak", password: "Soak-Passw0rd")
            let other = try realm.addPrincipal(prefix: "soakother", password: "Other-Passw0rd")
            let requests = 64 * 9
            let next = Locked(0)
            let wrongRefused = Locked(0)
            let rightRefused = Locked<[String]>([])
            _ = await Self.parallel(64) { _ in
                while true {
                    let index = next.withLock { value -> Int in defer { value += 1 }; return value }
                    guard index < requests else { return .ok }
                    let slot = index % 18
                    let (name, password) = slot == 0 ? (alice, "typo-\(index)") : slot <= 14 ? (alice, "Soak-Passw0rd") : (other, "Other-Passw0rd")
                    let reply = try fixture.sasl(name, password, address: "")
                    if slot == 0 {
                        if reply == .no("authentication failed") { wrongRefused.withLock { $0 += 1 } }
                    } else if reply != .ok {
                        rightRefused.withLock { $0.append("request \(index): \(reply)") }
                    }
                }
            }
            #expect(rightRefused.withLock { $0 }.isEmpty, "right passwords refused: \(rightRefused.withLock { $0.prefix(5) }) of \(rightRefused.withLock { $0.count })")
            #expect(wrongRefused.withLock { $0 } == requests / 18, "every typo is refused")
        }
    }

    @Test("a burst of parallel guesses for many principals from one address: at most throttle_failures reach the KDC")
    func addressSlotsCountInFlight() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            let prefix = TestRealm.uniqueName("burst")
            let skip = try realm.kdcLog().count
            let replies = await Self.parallel(20) { index in try fixture.sasl("\(prefix)n\(index)", "guess", address: "203.0.113.99") }
            #expect(replies.allSatisfy { $0 == .no("authentication failed") })
            let asked = Set(try Self.kdcLines(realm, naming: prefix, after: skip).compactMap { line in
                line.split(separator: " ").first { $0.hasPrefix(prefix) }
            })
            #expect(asked.count <= DaemonConfiguration().throttleFailures, "principals the KDC was asked about: \(asked.count)")
            #expect(try fixture.sasl(realm["USER"], realm["USER_PASSWORD"], address: "192.0.2.200") == .ok, "other addresses are not held up")
        }
    }

    @Test("NFD and NFC spellings are two principals: logging in as jose\\u{301} first does not make josé (NFC) resolve to it")
    func canonicallyEquivalentNames() async throws {
        try await DaemonFixture.withThrottle({ configuration, _ in configuration.resultCacheTTL = .seconds(60) }) { fixture in
            let realm = fixture.realm
            let nfc = try realm.addPrincipal(prefix: "jos\u{e9}", password: "Jose-Passw0rd")
            let nfd = nfc.replacingOccurrences(of: "jos\u{e9}", with: "jose\u{301}")
            #expect(nfc == nfd && Array(nfc.utf8) != Array(nfd.utf8), "equal Strings, different bytes")
            #expect(try fixture.sasl(nfd, "Jose-Passw0rd") == .no("authentication failed"), "no such principal")
            #expect(try fixture.sasl(nfc, "Jose-Passw0rd") == .ok, "the NFC principal logs in")
            // Now the result cache holds the NFC principal's success: the NFD spelling must not share it.
            #expect(try fixture.sasl(nfd, "Jose-Passw0rd") == .no("authentication failed"))
            let result = try fixture.converse(nfc, password: "Jose-Passw0rd").result()
            #expect(result.ok && result.principal.map { Array($0.utf8) } == Array("\(nfc)@\(realm.realm)".utf8), "\(result)")
        }
    }

    @Test("a realm spelled with the KELVIN SIGN is not the allowed realm it equals as a String: refused before any KDC")
    func kelvinRealm() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            guard realm.realm.hasPrefix("K") else { Issue.record("the test realm starts with K: \(realm.realm)"); return }
            let kelvin = "\u{212A}" + realm.realm.dropFirst()
            #expect(kelvin == realm.realm, "equal as Strings")
            let result = try fixture.converse("\(realm["USER"])@\(kelvin)", password: realm["USER_PASSWORD"]).result()
            #expect(result.failure == .unknownPrincipal, "\(result)")
            #expect(result.message?.contains("is not one this service logs in to") == true, "\(result.message ?? "")")
        }
    }

    @Test("an unknown principal's failure is answered no sooner than a known principal's wrong password: the floor is the slowest recent failure's exchange")
    func failuresTakeTheSameTime() async throws {
        // No fixed floor: only the measured one hides which names exist.
        try await DaemonFixture.withThrottle({ configuration, _ in configuration.failureFloor = .zero }) { fixture in
            let realm = fixture.realm
            let gate = fixture.daemon.gate
            #expect(gate.currentFailureFloor == .zero)
            // A preauth principal: its wrong password costs more round trips than an unknown name's one.
            let known = try realm.addPrincipal(prefix: "timing", password: "Timing-Passw0rd", attributes: ["+requires_preauth"])
            let started = ContinuousClock.now
            #expect(try fixture.sasl(known, "wrong", address: "") == .no("authentication failed"))
            let knownTook = ContinuousClock.now - started
            let floor = gate.currentFailureFloor
            #expect(floor > .zero && floor <= knownTook, "the known principal's exchange set the floor: \(floor), answered in \(knownTook)")
            for index in 0..<3 {
                let unknown = TestRealm.uniqueName("nobody")
                let asked = ContinuousClock.now
                #expect(try fixture.sasl(unknown, "wrong", address: "") == .no("authentication failed"))
                #expect(ContinuousClock.now - asked >= floor, "unknown name \(index) answered no sooner than the floor \(floor)")
                let line = fixture.logs.entries.last { $0.contains("login") && $0.contains(unknown) }
                #expect(line?.contains("floor_ms") == true, "\(line ?? "no log line")")
            }
        }
    }

    @Test("the issued client principal is the one requested, byte for byte, whatever the spelling asked for")
    func issuedPrincipalIsRequested() async throws {
        try await DaemonFixture.withThrottle { fixture in
            let realm = fixture.realm
            let user = realm["USER"]
            let nfc = try realm.addPrincipal(prefix: "issu\u{e9}", password: "Issued-Passw0rd")
            for (asked, password, canonical) in [(user, realm["USER_PASSWORD"], user), ("\(user)@\(realm.realm)", realm["USER_PASSWORD"], user),
                                                 ("\\\(user)", realm["USER_PASSWORD"], user), (nfc, "Issued-Passw0rd", nfc)] {
                let result = try fixture.converse(asked, password: password).result()
                #expect(result.ok && result.verified, "\(asked): \(result)")
                #expect(result.principal.map { Array($0.utf8) } == Array("\(canonical)@\(realm.realm)".utf8), "\(asked) was issued \(result.principal ?? "-")")
            }
        }
    }
}
