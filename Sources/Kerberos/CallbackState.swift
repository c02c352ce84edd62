import KerberosSecrets
import CKrb5
import Dispatch

/// What krb5's prompter, responder and expire callbacks need during one call, reached through their
/// `void *data` argument. The first error a Swift callback throws is kept and rethrown by the caller
/// after the C function returns.
final class CallbackState {
    let context: Context
    let prompter: Prompter?
    let responder: Responder?
    let expire: ((PasswordExpiry) -> Void)?
    private(set) var thrownError: (any Error)?
    /// Whether the responder answered a question a second factor decides (an OTP, a question this library does
    /// not decode) since last reset: the next request carries a one-time value.
    var answeredOneTimeValue = false

    init(context: Context, prompter: Prompter?, responder: Responder?, expire: ((PasswordExpiry) -> Void)?) {
        self.context = context
        self.prompter = prompter
        self.responder = responder
        self.expire = expire
    }

    /// The pointer handed to krb5 as callback data; valid while the request object keeps this alive.
    var opaque: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    var hasPrompter: Bool { prompter != nil }

    /// Records an error thrown by a Swift callback and returns the krb5 code that makes krb5 stop.
    func fail(_ error: any Error) -> krb5_error_code {
        if thrownError == nil { thrownError = error }
        if let kerberosError = error as? KerberosError { return kerberosError.code }
        return krb5_error_code(KRB5_LIBOS_PWDINTR)
    }
}

/// Runs an `async` callback from a dedicated (non-cooperative) thread and waits for its result.
///
/// The calling thread blocks on a semaphore while the closure runs on Swift's concurrency pool; this
/// is why krb5 calls with async callbacks must run on threads such as `KerberosExecutor`'s.
func waitForAsync<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Locked<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let outcome: Result<T, any Error>
        do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
        result.withLock { $0 = outcome }
        done.signal()
    }
    done.wait()
    return try result.withLock { $0! }.get()
}
