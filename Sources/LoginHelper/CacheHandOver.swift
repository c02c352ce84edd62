#if canImport(Glibc)
import Glibc
#endif

/// Gives a credential cache file that this process has just written to the session's user, without
/// following symlinks: the directory may belong to that user, who could swap the path for a link to any
/// file between krb5's write and the hand-over.
enum CacheHandOver {
    /// Why the hand-over was refused.
    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    /// Opens `path` without following a final symlink, checks that it is a regular file with one link owned by
    /// this process's effective uid (the cache krb5 just wrote), then sets owner and mode 0600 on the descriptor.
    ///
    /// The corresponding C calls are `open(O_NOFOLLOW)`, `fstat`, `fchmod` and `fchown`.
    static func give(path: String, uid: UInt32, gid: UInt32) throws(Refused) {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else {
            let code = errno
            throw Refused(description: code == ELOOP ? "it is a symbolic link" : String(cString: strerror(code)))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw Refused(description: String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw Refused(description: "it is not a regular file") }
        guard info.st_nlink == 1 else { throw Refused(description: "it has \(info.st_nlink) hard links") }
        guard info.st_uid == geteuid() else { throw Refused(description: "it is owned by uid \(info.st_uid), not by this process") }
        // Mode first: the file is never the user's while readable by others.
        guard fchmod(fd, 0o600) == 0, fchown(fd, uid, gid) == 0 else { throw Refused(description: String(cString: strerror(errno))) }
    }
}
