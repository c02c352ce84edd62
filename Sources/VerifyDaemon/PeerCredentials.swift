import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The process at the other end of a UNIX socket (`SO_PEERCRED`).
struct PeerCredentials: Sendable, CustomStringConvertible {
    var pid: Int32
    var uid: UInt32
    var gid: UInt32

    /// Reads the peer's credentials; on the channel's event loop this completes at once.
    static func of(_ channel: any Channel) -> EventLoopFuture<PeerCredentials?> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        // Glibc's `struct ucred` needs _GNU_SOURCE; PeerCredentials has the same layout (pid_t, uid_t, gid_t).
        let future: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(level: .socket, name: .init(rawValue: SO_PEERCRED))
        return future.map { Optional($0) }.recover { _ in nil }
    }

    var description: String { "pid \(pid) uid \(uid) gid \(gid)" }

    /// Whether the configuration lets this peer in.
    func allowed(uids: [UInt32], gids: [UInt32]) -> Bool {
        if uids.isEmpty && gids.isEmpty { return true }
        return uids.contains(uid) || gids.contains(gid)
    }
}

/// Socket file permissions and group.
enum SocketFile {
    static func configure(path: String, mode: UInt32, group: String?) throws {
        guard chmod(path, mode_t(mode)) == 0 else { throw ConfigurationError("cannot chmod \(path): \(String(cString: strerror(errno)))") }
        guard let group else { return }
        let gid: gid_t
        if let number = UInt32(group) { gid = number }
        else if let entry = getgrnam(group) { gid = entry.pointee.gr_gid }
        else { throw ConfigurationError("unknown socket group \(group)") }
        guard chown(path, uid_t.max, gid) == 0 else { throw ConfigurationError("cannot chgrp \(path): \(String(cString: strerror(errno)))") }
    }
}
