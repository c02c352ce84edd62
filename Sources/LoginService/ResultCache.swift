public import KerberosSecrets
public import LoginProtocol

/// An opt-in cache of successful password logins, like `saslauthd -c`: a repeated right password for the
/// same principal is answered without the KDC until the entry's time is up.
///
/// At most one entry per principal: the password that last succeeded for it, held as HMAC-SHA-256
/// (``PasswordDigester``, OpenSSL) of principal and password under a key drawn at start-up and held only in memory; the
/// password itself is never stored. A cached password keeps working until the first of:
/// - its `ttl` runs out;
/// - a *different* password succeeds for the principal at the KDC (the new one replaces it);
/// - any login of the principal fails (``invalidate(principal:)``, which drops its entry).
///
/// The trade-off: within the TTL, a password changed or an account disabled elsewhere still logs in with
/// the old password from this cache, until one of the above happens. Off by default.
///
/// Principals are keyed by the string the caller gives. Callers pass the **canonical** name
/// (`user@REALM`, as krb5 unparses it with its realm) to ``lookup(principal:password:)``,
/// ``store(principal:password:result:)`` and ``invalidate(principal:)`` alike, so that every spelling of
/// one principal shares one entry and one invalidation. Entries are keyed by the name's bytes (``ExactName``):
/// two principals whose names Swift's `String` calls equal (`jose\u{301}` and `josé`) never share one.
public final class ResultCache: Sendable {
    private struct Entry {
        var digest: PasswordDigester.Digest
        var result: LoginResult
        var expires: ContinuousClock.Instant
    }

    private let ttl: Duration
    private let capacity: Int
    private let digester: PasswordDigester
    private let entries = Locked<[ExactName: Entry]>([:])

    /// An empty cache whose entries live `ttl`; when `capacity` principals are held, a new one first drops
    /// the expired entries, or all of them when none has expired.
    public convenience init(ttl: Duration, capacity: Int = 100_000) {
        self.init(ttl: ttl, capacity: capacity, digester: PasswordDigester())
    }

    init(ttl: Duration, capacity: Int = 100_000, digester: PasswordDigester) {
        self.ttl = ttl
        self.capacity = capacity
        self.digester = digester
    }

    /// The cached success for this (canonical) principal and password, if still fresh.
    public func lookup(principal: String, password: Secret) -> LoginResult? {
        let digest = digester.digest(principal, password)
        let key = ExactName(principal)
        let now = ContinuousClock.now
        return entries.withLock { entries -> LoginResult? in
            guard let entry = entries[key], entry.digest.matches(digest) else { return nil }
            guard entry.expires > now else {
                entries[key] = nil
                return nil
            }
            return entry.result
        }
    }

    /// Remembers a success for this (canonical) principal; it replaces whatever the principal had, so an
    /// older password is no longer answered from the cache.
    public func store(principal: String, password: Secret, result: LoginResult) {
        guard result.ok else { return }
        let entry = Entry(digest: digester.digest(principal, password), result: result, expires: .now + ttl)
        let key = ExactName(principal)
        entries.withLock { entries in
            if entries.count >= capacity, entries[key] == nil {
                let now = ContinuousClock.now
                entries = entries.filter { $0.value.expires > now }
                if entries.count >= capacity { entries.removeAll() }
            }
            entries[key] = entry
        }
    }

    /// Drops the entry of this (canonical) principal; called on any failed login of it.
    public func invalidate(principal: String) {
        _ = entries.withLock { entries in entries.removeValue(forKey: ExactName(principal)) }
    }

    /// The number of principals held, expired or not.
    public var count: Int { entries.withLock { $0.count } }
}
