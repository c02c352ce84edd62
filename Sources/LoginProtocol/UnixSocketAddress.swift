#if canImport(Glibc)
public import Glibc
#endif

/// The `sockaddr_un` of a Unix socket's path, which the protocols here run over: what the daemon binds and its
/// clients (the PAM helper, the bench, the tests) connect to.
public struct UnixSocketAddress: Sendable {
    /// The path as given.
    public let path: String
    private let bytes: [UInt8]

    /// The address of `path`; nil when the path with its terminating NUL does not fit `sun_path` (108 bytes).
    public init?(path: String) {
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout<sockaddr_un>.size - MemoryLayout<sa_family_t>.size else { return nil }
        self.path = path
        self.bytes = bytes
    }

    /// Runs `body` (`bind`, `connect`) with the address and its length.
    public func withSockaddr<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> Result) rethrows -> Result {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: bytes)
            buffer[bytes.count] = 0
        }
        return try withUnsafePointer(to: &address) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// A new stream socket (close-on-exec) connected to this address; the `errno` of the failing call otherwise.
    public func connectedStream() -> Result<Int32, UnixSocketError> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(UnixSocketError(call: "socket", path: path, errno: errno)) }
        guard withSockaddr({ connect(fd, $0, $1) }) == 0 else {
            let error = UnixSocketError(call: "connect", path: path, errno: errno)
            close(fd)
            return .failure(error)
        }
        return .success(fd)
    }
}

/// A system call on a Unix socket that failed: which, on what path, and why.
public struct UnixSocketError: Error, Sendable, CustomStringConvertible {
    /// The system call: `socket` or `connect`.
    public let call: String
    /// The socket's path.
    public let path: String
    /// The `errno` it set.
    public let errno: Int32
    /// Such as `connect /run/krb5-verifyd/mux: No such file or directory`.
    public var description: String { "\(call) \(path): \(String(cString: strerror(errno)))" }
}
