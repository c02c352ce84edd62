import Kerberos

/// What earlier logins taught the service about principals' keys, shared by its worker threads: the
/// etype info the KDC gave for each principal, and the principals whose optimistic preauth with the
/// default salt failed. Both are public knowledge (the KDC tells anyone who asks), never secrets.
///
/// Bounded: each table is forgotten wholesale when it reaches `capacity` names, which costs one more
/// exchange per principal afterwards and nothing else.
final class LearntPreauth: Sendable {
    private struct Tables {
        var encryptionInfo: [String: EncryptionInfo] = [:]
        var optimisticRefusals: Set<String> = []
    }

    private let tables = Locked(Tables())
    private let capacity: Int

    init(capacity: Int = 100_000) {
        self.capacity = capacity
    }

    /// The etype info learnt for `principal`, if any.
    func encryptionInfo(for principal: String) -> EncryptionInfo? {
        tables.withLock { $0.encryptionInfo[principal] }
    }

    func remember(_ info: EncryptionInfo, for principal: String) {
        tables.withLock { tables in
            if tables.encryptionInfo.count >= capacity { tables.encryptionInfo.removeAll() }
            tables.encryptionInfo[principal] = info
        }
    }

    /// Whether optimistic preauth with the default salt failed for `principal` before.
    func refusesOptimistic(_ principal: String) -> Bool {
        tables.withLock { $0.optimisticRefusals.contains(principal) }
    }

    func refuseOptimistic(_ principal: String) {
        tables.withLock { tables in
            if tables.optimisticRefusals.count >= capacity { tables.optimisticRefusals.removeAll() }
            tables.optimisticRefusals.insert(principal)
        }
    }
}

extension EncryptionInfo {
    /// Whether MIT's optimistic preauth can make the right key from this: it takes the enctype and salt
    /// from the options but always uses the enctype's default string-to-key parameters.
    var allowsOptimisticPreauth: Bool {
        encryptionType != .null && parameters.isEmpty
    }
}
