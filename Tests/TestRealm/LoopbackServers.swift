import Foundation
import KerberosSecrets

extension TestRealm {
    /// A port on 127.0.0.1 free for both TCP and UDP a moment ago (bound to port 0 for TCP, then the same port for UDP).
    public static func freePort() throws -> Int {
        for _ in 0..<50 {
            let tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(tcp) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = 0
            let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(tcp, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard bound == 0 else { continue }
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(tcp, $0, &length) } }
            let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(udp) }
            let udpBound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(udp, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            if udpBound == 0 { return Int(UInt16(bigEndian: address.sin_port)) }
        }
        throw TestRealmError("no free port")
    }
}

/// A KDC that never answers: a UDP socket and a TCP listener on one port that take what clients send and never reply.
/// What it has been sent is read from the kernel when asked, so a count is exact at that moment: the datagrams waiting
/// are read and dropped, the connections waiting are accepted and held open until ``stop()``.
public final class BlackHoleKDC: @unchecked Sendable {
    public let port: Int
    private let udp: Int32
    private let tcp: Int32
    private let seen = Locked(Seen())

    private struct Seen: Sendable {
        var datagrams = 0
        var connections: [Int32] = []
        var stopped = false
    }

    public init() throws {
        port = try TestRealm.freePort()
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        tcp = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(udp, $0, size) == 0 && bind(tcp, $0, size) == 0 }
        }
        // A backlog as deep as the kernel allows: every connection of a test's concurrent logins completes and hangs.
        guard bound, listen(tcp, 4096) == 0 else {
            let reason = String(cString: strerror(errno))
            close(udp)
            close(tcp)
            throw TestRealmError("black hole KDC on port \(port): \(reason)")
        }
    }

    deinit { stop() }

    /// How many datagrams it has been sent so far.
    public var datagramsReceived: Int { take().datagrams }

    /// Datagrams and TCP connections so far: anything a client sent.
    public var contacts: Int {
        let seen = take()
        return seen.datagrams + seen.connections
    }

    public var address: String { "127.0.0.1:\(port)" }

    /// Closes the sockets and the connections it holds; later counts are what was seen until then.
    public func stop() {
        seen.withLock { seen in
            guard !seen.stopped else { return }
            seen.connections.forEach { close($0) }
            close(udp)
            close(tcp)
            seen.stopped = true
        }
    }

    /// Reads the datagrams waiting and accepts the connections waiting; returns the totals.
    private func take() -> (datagrams: Int, connections: Int) {
        seen.withLock { seen in
            if !seen.stopped {
                var buffer = [UInt8](repeating: 0, count: 65_536)
                while recv(udp, &buffer, buffer.count, 0) >= 0 { seen.datagrams += 1 }
                while case let connection = accept(tcp, nil, nil), connection >= 0 { seen.connections.append(connection) }
            }
            return (seen.datagrams, seen.connections.count)
        }
    }
}
