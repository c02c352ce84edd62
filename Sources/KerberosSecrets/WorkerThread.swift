#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A detached POSIX thread that runs one closure: what `Foundation.Thread` would do, without linking Foundation
/// into every program that uses the package. The engine's krb5 workers and the daemon's saslauthd acceptors start
/// their threads with it.
package enum WorkerThread {
    /// What the new thread runs; retained for it and released by it.
    private final class Start: Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts a detached thread named `name` that runs `body`.
    ///
    /// The corresponding C function is `pthread_create`.
    package static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let start = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        let code = spawn(start)
        if code != 0 {
            Unmanaged<Start>.fromOpaque(start).release()
            preconditionFailure("pthread_create failed with \(code)")
        }
    }

    private static func spawn(_ argument: UnsafeMutableRawPointer) -> Int32 {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        return pthread_create(&thread, &attributes, run, argument)
    }

    private static let run: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { raw in
        let start = Unmanaged<Start>.fromOpaque(raw!).takeRetainedValue()
        nameThisThread(start.name)
        start.body()
        return nil
    }

    /// Names the calling thread for ps, top and debuggers (Linux keeps 15 bytes; `pthread_setname_np` needs
    /// `_GNU_SOURCE`, which Glibc's module does not import).
    private static func nameThisThread(_ name: String) {
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}
