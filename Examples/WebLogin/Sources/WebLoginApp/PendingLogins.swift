import KerberosEngine
import Synchronization

/// Logins waiting for their one-time password, by a random id the OTP form carries: the user, the password (a
/// ``Secret`` in this process only, never in the page or the session store) and the KDC's question. Each is taken
/// once, and forgotten after five minutes.
final class PendingLogins: Sendable {
    struct Login: Sendable {
        let user: String
        let password: Secret
        let challenge: OTPChallenge
        let expires: ContinuousClock.Instant
    }

    private let logins = Mutex<[String: Login]>([:])
    private static let lifetime = Duration.seconds(300)
    private static let limit = 10_000

    /// Keeps a login until its OTP comes; returns its id.
    func add(user: String, password: Secret, challenge: OTPChallenge) -> String {
        var generator = SystemRandomNumberGenerator()
        let id = (0..<16).map { _ in
            let hex = String(UInt8.random(in: .min ... .max, using: &generator), radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
        let now = ContinuousClock.now
        logins.withLock { logins in
            logins = logins.filter { $0.value.expires > now }
            if logins.count >= Self.limit, let oldest = logins.min(by: { $0.value.expires < $1.value.expires })?.key { logins[oldest] = nil }
            logins[id] = Login(user: user, password: password, challenge: challenge, expires: now + Self.lifetime)
        }
        return id
    }

    /// The login `id` names, removed; nil when unknown or expired.
    func take(_ id: String) -> Login? {
        guard let login = logins.withLock({ $0.removeValue(forKey: id) }), login.expires > .now else { return nil }
        return login
    }
}
