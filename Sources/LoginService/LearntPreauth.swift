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
