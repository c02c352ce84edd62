import Kerberos
import LoginService

/// For each principal, a keyed verifier of the password that last logged it in: HMAC-SHA-256 under a key
/// drawn at start-up and held only in memory. While a principal is throttled (someone is guessing), a login
/// with that password still goes to the KDC, so an attack on a name never locks its owner out.
///
/// The verifier only opens the way to the KDC, which still decides: a password changed or an account
/// disabled elsewhere fails there, and that failure drops the verifier. Bounded: past `capacity`
/// principals the table is emptied (costing only the bypass, until each principal's next success).
/// Replaced and dropped verifiers are wiped.
final class PasswordVerifiers: Sendable {
    /// HMAC-SHA-256 under a key drawn at start-up (the result cache's digests, under a key of its own).
    private let digester = PasswordDigester()
    private let capacity: Int
    /// The verifiers: 32 bytes each, in ``Secret``s, so they are wiped when replaced or dropped and compared
    /// in constant time.
    private let table = Locked<[String: Secret]>([:])

    init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    /// Remembers `password` as the one that last logged `principal` in.
    func remember(_ password: Secret, for principal: String) {
        let verifier = code(password, principal)
        table.withLock { table in
            if table.count >= capacity && table[principal] == nil { table.removeAll() }
            table[principal] = verifier
        }
    }

    /// Whether `password` is the one that last logged `principal` in.
    func matches(_ password: Secret, for principal: String) -> Bool {
        guard let verifier = table.withLock({ $0[principal] }) else { return false }
        return verifier.constantTimeEquals(code(password, principal))
    }

    /// Forgets `principal`'s verifier (its password failed at the KDC).
    func forget(_ principal: String) {
        _ = table.withLock { $0.removeValue(forKey: principal) }
    }

    var count: Int { table.withLock { $0.count } }

    private func code(_ password: Secret, _ principal: String) -> Secret {
        digester.digest(principal, password).secret
    }
}
