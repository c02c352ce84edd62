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

    /// Reads the credentials of the peer of a connected UNIX socket; nil when `getsockopt` fails.
    static func of(descriptor: Int32) -> PeerCredentials? {
        var credentials = PeerCredentials(pid: 0, uid: 0, gid: 0)
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        return getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 ? credentials : nil
    }

    var description: String { "pid \(pid) uid \(uid) gid \(gid)" }

    /// Whether the configuration lets this peer in.
    func allowed(uids: [UInt32], gids: [UInt32]) -> Bool {
        if uids.isEmpty && gids.isEmpty { return true }
        return uids.contains(uid) || gids.contains(gid)
    }

    /// Whether the configuration lets a peer in whose credentials may be unknown (`nil`: `SO_PEERCRED`
    /// could not be read). Fails closed: with `allowed_uids` or `allowed_gids` set, an unknown peer is
    /// refused; with neither set, everyone is let in, known or not.
    static func admits(_ peer: PeerCredentials?, uids: [UInt32], gids: [UInt32]) -> Bool {
        if uids.isEmpty && gids.isEmpty { return true }
        guard let peer else { return false }
        return peer.allowed(uids: uids, gids: gids)
    }
}

/// Socket files that never exist at their path with another mode or group than configured.
///
/// `bind(2)` creates the file with the process umask's mode, and a `chmod` afterwards leaves a window in
/// which the socket is reachable (or merely visible) with the wrong mode. Instead the socket is bound in
/// a fresh private directory (mode 0700, made by `mkdtemp` next to the target, so on the same file
/// system), given its mode and group there, where no other user can reach it, and then `rename(2)`d onto
/// the target path: the path appears, or is atomically replaced, with the final mode already set. The
/// umask, which is process-wide, is never touched.
enum SocketFile {
    /// Binds a listener at `path` through `bind` (given the temporary path to bind), with `mode` and
    /// `group` set before the socket appears at `path`. An existing socket at `path` is replaced; any
    /// other kind of file there is an error.
    static func bind<Bound>(path: String, mode: UInt32, group: String?, _ bind: (String) async throws -> Bound,
                            close: (Bound) async -> Void) async throws -> Bound {
        let gid = try group.map(resolveGroup)
        var existing = stat()
        if lstat(path, &existing) == 0, existing.st_mode & S_IFMT != S_IFSOCK {
            throw ConfigurationError("\(path) exists and is not a socket")
        }
        let directory = try privateDirectory(beside: path)
        defer { rmdir(directory) }
        let temporary = directory + "/s"
        guard temporary.utf8.count < 108 else {
            throw ConfigurationError("socket path too long to bind beside it (\(temporary)): choose a shorter path than \(path)")
        }
        let bound = try await bind(temporary)
        do {
            guard chmod(temporary, mode_t(mode)) == 0 else { throw ConfigurationError("cannot chmod \(temporary): \(String(cString: strerror(errno)))") }
            if let gid, chown(temporary, uid_t.max, gid) != 0 {
                throw ConfigurationError("cannot chgrp \(temporary): \(String(cString: strerror(errno)))")
            }
            guard rename(temporary, path) == 0 else { throw ConfigurationError("cannot rename \(temporary) to \(path): \(String(cString: strerror(errno)))") }
        } catch {
            unlink(temporary)
            await close(bound)
            throw error
        }
        return bound
    }

    /// A new directory of mode 0700 in the directory of `path`.
    static func privateDirectory(beside path: String) throws -> String {
        let parent = path.lastIndex(of: "/").map { path[..<$0] }.map { $0.isEmpty ? "/" : String($0) } ?? "."
        var template = Array((parent == "/" ? "" : parent).utf8CString.dropLast()) + Array("/.kvXXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw ConfigurationError("cannot make a private directory beside \(path): \(String(cString: strerror(errno)))")
        }
        return String(cString: made)
    }

    static func resolveGroup(_ group: String) throws -> gid_t {
        if let number = UInt32(group) { return number }
        if let entry = getgrnam(group) { return entry.pointee.gr_gid }
        throw ConfigurationError("unknown socket group \(group)")
    }
}
