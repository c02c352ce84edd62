package import Kerberos
import KerberosEngine
public import KerberosSecrets
public import LoginProtocol
import CStringToKey
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Verified logins over the non-blocking engine (``KerberosClient``): initial credentials (armored as configured),
/// then verification with nofail against the keytab, each login bounded by ``LoginConfiguration/loginTimeout``.
///
/// Used by `krb5-verifyd` for every request and by `krb5-login` in process. A conversation waiting for
/// a person holds no thread: ``step(_:)`` runs one complete attempt and returns either the result or
/// the questions still unanswered. No thread waits on a KDC either: the engine's worker threads only compute.
public final class LoginService: Sendable {
    /// How every login is performed.
    public let configuration: LoginConfiguration
    private let client: KerberosClient
    /// The opt-in success cache for password logins (nil when off).
    public let resultCache: ResultCache?
    /// What earlier logins taught about principals' keys (shared by the workers).
    private let learnt = LearntPreauth()
    /// The checks every name passes before a KDC exchange (realm allow-list, anonymous refusal).
    private let names: LoginNames
    /// A context of the service's own for ``resolve(_:)``, which callers use from any thread, one at a time.
    private let resolver: Mutex<Context>
    /// The names ``resolve(_:)`` resolved to a principal: a mail server logs in the same users all day, and the
    /// same configuration gives the same answer. Keyed by the typed bytes (``ExactName``): `jose\u{301}` and
    /// `josé` are two principals to krb5, though one `String` to Swift. Refused names are not kept, so names
    /// refused at once cannot flush it. Bounded: emptied when full.
    /// (`Locked`, a pthread mutex, which ThreadSanitizer sees: it reported Synchronization's `Mutex`, whose futex it
    /// does not, as a race.)
    private let resolved = Locked<[ExactName: String]>([:])
    /// How many names ``resolved`` keeps, and the longest it keeps (a saslauthd field's limit).
    static let resolvedNamesKept = (count: 4096, length: 256)

    /// Starts `threads` krb5 worker threads, each with its own context, and the engine's event loop.
    public init(configuration: LoginConfiguration, threads: Int = 2, resultCacheTTL: Duration? = nil) throws {
        self.configuration = configuration
        let context = try Context(configuration.krb5)
        let names = try LoginNames(configuration: configuration, context: context)
        self.names = names
        // A referral (canonicalize, enterprise names) may lead only to the realms names may name.
        self.client = try KerberosClient(configuration: .init(krb5: configuration.krb5, threads: threads, loginTimeout: configuration.loginTimeout,
                                                              referralRealms: names.allowedRealms))
        self.resultCache = resultCacheTTL.map { ResultCache(ttl: $0) }
        self.resolver = Mutex(context)
    }

    /// The realms whose principals may log in (``LoginConfiguration/realms`` or its default).
    public var allowedRealms: Set<String> { names.allowedRealms }

    /// The canonical name of the principal `name` stands for (`alice@REALM`, as `krb5_unparse_name` writes
    /// it), or the answer that refuses the login without any KDC exchange: an empty or malformed name,
    /// `WELLKNOWN/ANONYMOUS`, a realm outside ``allowedRealms``.
    ///
    /// Parsing reads only the loaded configuration (no I/O), so an event loop may call this.
    public func resolve(_ name: String) -> ResolvedName {
        let key = ExactName(name)
        if let known = resolved.withLock({ $0[key] }) { return .principal(known) }
        let resolution = resolver.withLock { context -> ResolvedName in
            do throws(LoginRefusal) {
                return .principal(try names.client(name, in: context).name())
            } catch {
                return .refused(error.result)
            }
        }
        if case .principal(let principal) = resolution, key.bytes.count <= Self.resolvedNamesKept.length {
            resolved.withLock { names in
                if names.count >= Self.resolvedNamesKept.count { names.removeAll(keepingCapacity: true) }
                names[key] = principal
            }
        }
        return resolution
    }

    /// The password keys made so far on the worker that the next login runs on (`CStringToKey`'s counts for that
    /// thread): by the fast string-to-key, and by libk5crypto.
    func keysMadeOnNextWorker() async throws(KerberosError) -> (fast: UInt64, libk5crypto: UInt64) {
        try await client.withSession { session throws(KerberosError) in
            try session.onWorker { _ in
                let counts = s2k_counts_on_this_thread()
                return (counts.fast, counts.libk5crypto)
            }
        }
    }

    /// How many names ``resolve(_:)`` keeps now.
    var resolvedNameCount: Int { resolved.withLock { $0.count } }

    /// Lets running logins finish their current step, then stops the threads; suspends until they have
    /// stopped, without blocking a thread.
    public func shutdown() async {
        await client.shutdown()
    }

    /// Lets running logins finish their current step, then stops the threads.
    ///
    /// > Warning: Blocks the calling thread until the engine's threads have stopped; from async code use
    /// > `await shutdown()`.
    @available(*, noasync, message: "blocks the calling thread; use 'await shutdown()'")
    public func shutdownBlocking() {
        client.shutdownBlocking()
    }

    /// Logs in with a password only, as saslauthd does: any further question fails the login.
    public func verifyPassword(principal: String, password: Secret) async -> LoginResult {
        await withCheckedContinuation { continuation in
            verifyPassword(principal: principal, password: password) { continuation.resume(returning: $0) }
        }
    }

    /// Logs in with a password only and calls `completion` when answered (within the login timeout). The
    /// result cache, when on, is keyed on `principal` as given: callers pass the canonical name from ``resolve(_:)``.
    public func verifyPassword(principal: String, password: Secret, completion: @escaping @Sendable (LoginResult) -> Void) {
        if let cached = resultCache?.lookup(principal: principal, password: password) {
            completion(cached)
            return
        }
        let cache = resultCache
        step(LoginConversation(principal: principal, password: password), passwordOnly: true) { step in
            switch step {
            case .finished(let result, _):
                cache?.store(principal: principal, password: password, result: result)
                completion(result)
            case .questions:
                completion(.failed(.badCredentials, "The KDC asked for more than a password", principal: principal))
            }
        }
    }

    /// Runs the exchange once with every answer given so far.
    public func step(_ conversation: LoginConversation) async -> LoginStep {
        await withCheckedContinuation { continuation in
            step(conversation) { continuation.resume(returning: $0) }
        }
    }

    /// Runs the exchange once and calls `completion` when answered (within the login timeout).
    public func step(_ conversation: LoginConversation, completion: @escaping @Sendable (LoginStep) -> Void) {
        step(conversation, passwordOnly: false, completion: completion)
    }

    /// Runs the attempt on a worker (``KerberosClient/startSession(timeout:_:)``); `completion` is called there.
    private func step(_ conversation: LoginConversation, passwordOnly: Bool, completion: @escaping @Sendable (LoginStep) -> Void) {
        client.startSession { session in completion(await self.run(conversation, session: session, passwordOnly: passwordOnly)) }
    }

    private func run(_ conversation: LoginConversation, session: KerberosSession, passwordOnly: Bool) async -> LoginStep {
        let step = await LoginExchange(session: session, configuration: configuration, names: names, conversation: conversation,
                                      learnt: learnt, passwordOnly: passwordOnly).run()
        if case .finished(let result, _) = step, !result.ok { resultCache?.invalidate(principal: result.principal ?? conversation.principal) }
        return step
    }

    /// Runs the exchange once for programs that make one login and exit (``InProcessLogin``), bounded by the
    /// login timeout, on the calling thread and with `context` alone: the thread is the engine's event loop and its
    /// worker for the login (``KerberosClient/withOneShotSession(context:configuration:_:)``), so the login starts no
    /// thread and hands nothing between threads, as kinit.
    ///
    /// With `finishing`, an exchange that ends (rather than asking questions) calls it with its result and messages,
    /// on the calling thread, before its event loop is shut down; `finishing` ends the process. NIO ends a loop that
    /// runs on the caller's thread only through libdispatch (two threads started, 0.3–0.5 ms), which a program that
    /// exits after its login need not pay.
    ///
    /// > Warning: Blocks the calling thread until answered; never call from Swift's cooperative pool.
    @available(*, noasync, message: "blocks the calling thread until answered")
    package static func stepBlocking(_ conversation: LoginConversation, configuration: LoginConfiguration, context: Context,
                                     finishing: ((LoginResult, _ info: [String]) -> Never)? = nil) -> LoginStep {
        let names: LoginNames
        do throws(KerberosError) { names = try LoginNames(configuration: configuration, context: context) } catch {
            return .finished(.failed(.internal, "Cannot read the krb5 configuration: \(error.message)", principal: conversation.principal), info: [])
        }
        do throws(LoginRefusal) { _ = try names.client(conversation.principal, in: context) } catch {
            return .finished(error.result, info: [])
        }
        let client = KerberosClient.Configuration(krb5: configuration.krb5, loginTimeout: configuration.loginTimeout, referralRealms: names.allowedRealms)
        let ending = finishing.map { OnCallingThread(caller: pthread_self(), finish: $0) }
        return KerberosClient.withOneShotSession(context: context, configuration: client) { session in
            // One login per process: MIT's own exchange, which asks the KDC for what the key takes when it needs to
            // (an AS-REP without preauth needs no second message); its key is made by CStringToKey's stand-in.
            let step = await LoginExchange(session: session, configuration: configuration, names: names, conversation: conversation,
                                          learnt: LearntPreauth(), passwordOnly: false).run()
            if case .finished(let result, let info) = step, let ending {
                precondition(pthread_equal(pthread_self(), ending.caller) != 0, "a one-shot login's task left the calling thread")
                ending.finish(result, info)
            }
            return step
        }
    }
}

/// A program's end of its login (``LoginService/stepBlocking(_:configuration:context:finishing:)``), handed into the
/// one-shot login's task, which runs on the thread that made it (checked before the call): the closure never
/// crosses threads.
private struct OnCallingThread: @unchecked Sendable {
    let caller: pthread_t
    let finish: (LoginResult, [String]) -> Never
}
