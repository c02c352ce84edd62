import Kerberos
import KerberosEngine

/// What earlier logins taught the service about principals' keys, shared by its worker threads: the
/// etype info each principal's last successful login made its key with, and the principals whose optimistic
/// preauth with the default salt failed. Both are public knowledge (the KDC tells anyone who asks), never secrets.
///
/// Bounded: each table is forgotten wholesale when it reaches `capacity` names, which costs one more
/// exchange per principal afterwards and nothing else. Info is kept for `lifetime` only, so a key changed on the
/// KDC (a new salt after a rename, a new enctype) is picked up without a refused first attempt.
final class LearntPreauth: Sendable {
    private struct Learnt {
        var info: EncryptionInfo
        /// When the info stops being used.
        var expires: ContinuousClock.Instant
    }

    private struct Tables {
        // Keyed by the names' bytes (``ExactName``): canonically equivalent spellings are different principals to krb5.
        var encryptionInfo: [ExactName: Learnt] = [:]
        var optimisticRefusals: Set<ExactName> = []
        /// Realms whose KDC took no encrypted challenge in an armored first request.
        var armoredRefusals: Set<ExactName> = []
    }

    private let tables = Locked(Tables())
    private let capacity: Int
    private let lifetime: Duration

    init(capacity: Int = 100_000, lifetime: Duration = .seconds(300)) {
        self.capacity = capacity
        self.lifetime = lifetime
    }

    /// The etype info learnt for `principal`, if any and still trusted.
    func encryptionInfo(for principal: String, now: ContinuousClock.Instant = .now) -> EncryptionInfo? {
        tables.withLock { tables in
            guard let learnt = tables.encryptionInfo[ExactName(principal)] else { return nil }
            if learnt.expires <= now {
                tables.encryptionInfo[ExactName(principal)] = nil
                return nil
            }
            return learnt.info
        }
    }

    /// Remembers what the KDC said of `principal`'s key.
    func remember(_ info: EncryptionInfo, for principal: String, now: ContinuousClock.Instant = .now) {
        tables.withLock { tables in
            if tables.encryptionInfo.count >= capacity { tables.encryptionInfo.removeAll() }
            tables.encryptionInfo[ExactName(principal)] = Learnt(info: info, expires: now + lifetime)
        }
    }

    /// Runs `attempt` with the known etype info. When the KDC refuses the key, either the password is wrong or the
    /// principal's salt or enctype changed since it was learnt: asking again counts no failure at the KDC, and the
    /// attempt is repeated once only if the answer changed. At most one re-learn per login.
    static func withOneRelearn<Result>(
        known: EncryptionInfo,
        learn: () async throws(KerberosError) -> EncryptionInfo,
        attempt: (EncryptionInfo) async throws(KerberosError) -> Result
    ) async throws(KerberosError) -> Result {
        do {
            return try await attempt(known)
        } catch where error.reason == .badPassword {
            let current = try await learn()
            guard current != known, current.encryptionType != .null else { throw error }
            return try await attempt(current)
        }
    }

    /// Whether optimistic preauth with the default salt failed for `principal` before.
    func refusesOptimistic(_ principal: String) -> Bool {
        tables.withLock { $0.optimisticRefusals.contains(ExactName(principal)) }
    }

    /// Whether `realm`'s KDC refused the one-exchange path under FAST before (``refuseArmoredOneExchange(_:)``).
    func refusesArmoredOneExchange(_ realm: String) -> Bool {
        tables.withLock { $0.armoredRefusals.contains(ExactName(realm)) }
    }

    /// Armored logins of `realm` take MIT's path from now on: its KDC refused an encrypted challenge in the first
    /// request, and the normal exchange worked. Realms are few; the set is bounded by the allow-list.
    func refuseArmoredOneExchange(_ realm: String) {
        tables.withLock { tables in
            if tables.armoredRefusals.count >= 1024 { tables.armoredRefusals.removeAll() }
            tables.armoredRefusals.insert(ExactName(realm))
        }
    }

    func refuseOptimistic(_ principal: String) {
        tables.withLock { tables in
            if tables.optimisticRefusals.count >= capacity { tables.optimisticRefusals.removeAll() }
            tables.optimisticRefusals.insert(ExactName(principal))
        }
    }
}

extension EncryptionInfo {
    /// Whether MIT's optimistic preauth can make the right key from this: it takes the enctype and salt
    /// from the options but always uses the enctype's default string-to-key parameters. Parameters that
    /// spell out the default count as none: Active Directory (and Samba) send the AES iteration count
    /// 4096 explicitly with every etype info.
    var allowsOptimisticPreauth: Bool {
        encryptionType != .null && (parameters.isEmpty || parameters == Self.defaultParameters(encryptionType))
    }

    /// The string-to-key parameters an enctype uses when none are given (RFC 3962, RFC 8009, RFC 6803:
    /// the iteration count, four bytes big-endian); nil for enctypes without parameters.
    static func defaultParameters(_ encryptionType: EncryptionType) -> [UInt8]? {
        switch encryptionType {
        case .aes128CTSHMACSHA196, .aes256CTSHMACSHA196: [0x00, 0x00, 0x10, 0x00]   // 4096
        case .aes128CTSHMACSHA256128, .aes256CTSHMACSHA384192, .camellia128CTSCMAC, .camellia256CTSCMAC: [0x00, 0x00, 0x80, 0x00]   // 32768
        default: nil
        }
    }
}
