import KerberosSecrets
import LoginService
import NIOCore

/// For each principal, a keyed verifier of the password that last logged it in: HMAC-SHA-256 under a key
/// drawn at start-up and held only in memory. While a principal is throttled (someone is guessing), a login
/// with that password still goes to the KDC, so an attack on a name never locks its owner out.
///
/// Testing a guess against the verifier is itself an oracle, so the tests are rationed (``test(_:for:from:penalty:now:)``):
/// each source (a client address, or none) gets one test, and after a wrong one no further test until that
/// refusal's penalty has passed; and at most `sources` sources of one principal may be waiting out such a
/// penalty at once. Whatever the concurrency, a throttled principal has at most `sources` wrong guesses tested
/// per penalty period; a guess that finds no test free is refused untested, with the same answer and delay as a
/// wrong one. The owner, from an address of their own, finds that address's test free; and the addresses the
/// principal last logged in from (up to ``knownSources``) are not held to the principal's cap, so an attacker
/// with many addresses cannot use up the tests of the owner's usual ones.
///
/// The verifier only opens the way to the KDC, which still decides: a password changed or an account
/// disabled elsewhere fails there, and that failure drops the verifier. Principals are keyed by their bytes
/// (``ExactName``). Bounded: past `capacity` principals the table is emptied (costing only the bypass, until
/// each principal's next success). Replaced and dropped verifiers are wiped.
final class PasswordVerifiers: Sendable {
    /// What testing a guess found.
    enum Outcome: Equatable {
        /// The password is the one that last logged the principal in.
        case matched
        /// Tested, and wrong: the source waits out `penalty` before its next test.
        case mismatched
        /// Not tested: no verifier, or the source (or the principal) has no test free.
        case untested
    }

    private struct Record {
        /// 32 bytes, in a ``Secret``, so it is wiped when replaced or dropped and compared in constant time.
        var verifier: Secret
        /// Sources whose last test was wrong, and until when they get no other.
        var resting: [ExactName: NIODeadline] = [:]
        /// The sources the principal last logged in from, most recent last.
        var known: [ExactName] = []
    }

    /// How many of a principal's recent login sources are remembered.
    static let knownSources = 4

    /// HMAC-SHA-256 under a key drawn at start-up (the result cache's digests, under a key of its own).
    private let digester = PasswordDigester()
    private let capacity: Int
    private let sources: Int
    private let table = Locked<[ExactName: Record]>([:])

    /// `sources`: how many sources of one principal may wait out a wrong test's penalty at once.
    init(capacity: Int = 100_000, sources: Int = 5) {
        self.capacity = capacity
        self.sources = sources
    }

    /// Remembers `password` as the one that last logged `principal` in, from `source`.
    func remember(_ password: Secret, for principal: ExactName, from source: ExactName) {
        let verifier = code(password, principal)
        table.withLock { table in
            if table.count >= capacity && table[principal] == nil { table.removeAll() }
            var record = table[principal] ?? Record(verifier: verifier)
            record.verifier = verifier
            record.known.removeAll { $0 == source }
            record.known.append(source)
            if record.known.count > Self.knownSources { record.known.removeFirst() }
            table[principal] = record
        }
    }

    /// Tests `password` against `principal`'s verifier, if `source` has a test free at `now`; a wrong password
    /// takes `source`'s test away for `penalty`.
    func test(_ password: Secret, for principal: ExactName, from source: ExactName, penalty: Duration, now: NIODeadline) -> Outcome {
        let candidate = code(password, principal)
        return table.withLock { table -> Outcome in
            guard var record = table[principal] else { return .untested }
            record.resting = record.resting.filter { $0.value > now }
            defer { table[principal] = record }
            guard record.resting[source] == nil, record.resting.count < sources || record.known.contains(source) else { return .untested }
            if record.verifier.constantTimeEquals(candidate) { return .matched }
            record.resting[source] = now + TimeAmount(penalty)
            return .mismatched
        }
    }

    /// Forgets `principal`'s verifier (its password failed at the KDC).
    func forget(_ principal: ExactName) {
        _ = table.withLock { $0.removeValue(forKey: principal) }
    }

    var count: Int { table.withLock { $0.count } }

    private func code(_ password: Secret, _ principal: ExactName) -> Secret {
        digester.digest(principal.description, password).secret
    }
}
