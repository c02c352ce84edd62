import CProcessControl
#if canImport(Glibc)
import Glibc
#endif

/// What the daemon does to its own process before it listens: no core dumps, and room for its descriptors.
///
/// A core dump would hold the password verifiers' and the result cache's HMAC keys and up to 100,000
/// verifiers, quick to guess offline; so the process makes itself non-dumpable (`PR_SET_DUMPABLE` 0, which also
/// keeps same-uid `ptrace` out and /proc/PID's files root's) and sets `RLIMIT_CORE` to 0. The systemd unit
/// says the same (`LimitCORE=0`).
///
/// Every connection holds a descriptor and every login in flight opens sockets to KDCs, while the usual soft
/// `RLIMIT_NOFILE` is 1,024: the soft limit is raised to the hard one (the unit sets both with `LimitNOFILE=`),
/// and ``DescriptorBudget`` fits `max_connections` to what is left.
public enum ProcessResources {
    /// What ``harden()`` found and did, read back from the kernel.
    public struct Report: Sendable, CustomStringConvertible {
        /// `prctl(PR_GET_DUMPABLE)` after the change: 0 when no core dump can be made.
        public let dumpable: Int32
        /// The soft and hard `RLIMIT_CORE` after the change.
        public let coreLimit: (soft: UInt64, hard: UInt64)
        /// The soft and hard `RLIMIT_NOFILE` after the change.
        public let descriptorLimit: (soft: UInt64, hard: UInt64)

        /// The report as one log line: `dumpable=false core=0/0 nofile=…/…`.
        public var description: String {
            "dumpable=\(dumpable) core=\(coreLimit.soft)/\(coreLimit.hard) nofile=\(descriptorLimit.soft)/\(descriptorLimit.hard)"
        }
    }

    /// Makes the process non-dumpable, forbids core files, and raises the soft descriptor limit to the hard one.
    /// Each step that the system refuses (a seccomp filter, a container) leaves its value as it was; the report
    /// reads back what holds.
    @discardableResult
    public static func harden() -> Report {
        _ = cprocess_set_dumpable(0)
        var core = rlimit(rlim_cur: 0, rlim_max: 0)
        _ = setrlimit(Int32(RLIMIT_CORE.rawValue), &core)
        var files = limit(RLIMIT_NOFILE)
        // An unlimited hard limit (RLIM_INFINITY, all ones) cannot be the soft one (the kernel caps descriptors at fs.nr_open, 1,048,576
        // by default): aim at that instead.
        let target = files.rlim_max == rlim_t.max ? rlim_t(1 << 20) : files.rlim_max
        if files.rlim_cur < target {
            files.rlim_cur = target
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &files)
        }
        return report()
    }

    /// The process's dumpable flag and limits as they are now.
    public static func report() -> Report {
        let core = limit(RLIMIT_CORE), files = limit(RLIMIT_NOFILE)
        return Report(dumpable: cprocess_get_dumpable(), coreLimit: (UInt64(core.rlim_cur), UInt64(core.rlim_max)),
                      descriptorLimit: (UInt64(files.rlim_cur), UInt64(files.rlim_max)))
    }

    /// The soft `RLIMIT_NOFILE` now.
    static var descriptorLimit: UInt64 { UInt64(limit(RLIMIT_NOFILE).rlim_cur) }

    private static func limit(_ resource: __rlimit_resource) -> rlimit {
        var value = rlimit()
        _ = getrlimit(Int32(resource.rawValue), &value)
        return value
    }
}

/// How many connections the descriptor limit leaves room for: each connection is one descriptor, and its
/// login in flight may hold up to ``socketsPerLogin`` sockets to KDCs at once; ``reserved`` are the daemon's
/// own (listeners, event loops, krb5 contexts, the keytab and krb5.conf while read, metrics).
enum DescriptorBudget {
    /// A login's KDC sockets at once: UDP to a KDC, the hedge to the next one after 250 ms, the TCP retry of a
    /// reply too big for UDP, and one spare for the verification's exchange.
    static let socketsPerLogin = 4
    static let reserved = 128

    /// `configured`, or fewer when `limit` descriptors cannot serve that many (at least 1).
    static func maxConnections(configured: Int, limit: UInt64) -> Int {
        let room = limit > UInt64(reserved) ? (limit - UInt64(reserved)) / UInt64(1 + socketsPerLogin) : 0
        return max(1, min(configured, Int(clamping: room)))
    }
}
