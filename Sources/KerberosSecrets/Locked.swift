#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a `pthread_mutex_t`.
///
/// Used instead of `Synchronization.Mutex` because ThreadSanitizer sees pthread locking (it intercepts
/// `pthread_mutex_lock`) but not the futex inside the uninstrumented standard library, so `make tsan`
/// reports only real races.
///
/// The value must be `Sendable`: a lock hands its value from thread to thread, so a non-`Sendable` value
/// such as a krb5 `Context` (one thread at a time, MIT's rule) cannot hide behind one.
package final class Locked<Value: Sendable>: @unchecked Sendable {
    // Invariant: `value` is only touched while `mutex` is held.
    private var value: Value
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    /// Guards `value` with a new mutex (`pthread_mutex_init`).
    package init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with exclusive access to the value.
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
