import Foundation
import LoginProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A blocking UNIX-socket client for tests: connect, send bytes, read replies, with timeouts. The default timeout
/// only stops a test from hanging on a wedged daemon; it is above ``TestRealm/loginTimeout``.
public final class SocketClient {
    public let fd: Int32

    public init(path: String, timeout: Double = 75) throws {
        guard let address = UnixSocketAddress(path: path) else { throw TestRealmError("socket path too long: \(path)") }
        do { fd = try address.connectedStream().get() } catch { throw TestRealmError("\(error)") }
        var time = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    public func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    public func send(_ text: String) { send(Array(text.utf8)) }

    /// Reads until the peer closes (or the timeout); returns everything read.
    public func readAll() -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return result }
            result += buffer[0..<count]
        }
    }

    /// Reads one line (without the newline); nil on close or timeout.
    public func readLine() -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = recv(fd, &byte, 1, 0)
            if count <= 0 { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    /// A short, unique socket path (UNIX socket paths are limited to 107 bytes).
    public static func temporaryPath(_ name: String) -> String {
        "/tmp/kv-\(getpid())-\(TestRealm.uniqueName(name)).sock"
    }
}
