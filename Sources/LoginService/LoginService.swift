public import Kerberos
public import LoginProtocol
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Dispatch
import Synchronization

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

    /// Starts `threads` krb5 worker threads, each with its own context, and the engine's event loop.
    public init(configuration: LoginConfiguration, threads: Int = 2, resultCacheTTL: Duration? = nil) throws {
        self.configuration = configuration
        self.client = try KerberosClient(configuration: .init(krb5: configuration.krb5, threads: threads, loginTimeout: configuration.loginTimeout))
        self.resultCache = resultCacheTTL.map { ResultCache(ttl: $0) }
        let context = try Context(configuration.krb5)
        self.names = try LoginNames(configuration: configuration, context: context)
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
        resolver.withLock { context in
            do throws(LoginRefusal) {
                return .principal(try names.client(name, in: context).name())
            } catch {
                return .refused(error.result)
            }
        }
    }

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

    private func step(_ conversation: LoginConversation, passwordOnly: Bool, completion: @escaping @Sendable (LoginStep) -> Void) {
        client.start { completion(await self.run(conversation, passwordOnly: passwordOnly)) }
    }

    private func run(_ conversation: LoginConversation, passwordOnly: Bool) async -> LoginStep {
        let step = await LoginAttempt(session: client.session(), configuration: configuration, names: names, conversation: conversation,
                                      learnt: learnt, passwordOnly: passwordOnly).run()
        if case .finished(let result, _) = step, !result.ok { resultCache?.invalidate(principal: result.principal ?? conversation.principal) }
        return step
    }

    /// Runs the exchange once for programs that make one login and exit (such as `krb5-login`): a
    /// one-thread engine of its own, bounded by the login timeout. `context` only checks the name.
    ///
    /// > Warning: Blocks the calling thread until answered; never call from Swift's cooperative pool.
    public static func stepBlocking(_ conversation: LoginConversation, configuration: LoginConfiguration, context: Context) -> LoginStep {
        let names: LoginNames
        do throws(KerberosError) { names = try LoginNames(configuration: configuration, context: context) } catch {
            return .finished(.failed(.internal, "Cannot read the krb5 configuration: \(error.message)", principal: conversation.principal), info: [])
        }
        do throws(LoginRefusal) { _ = try names.client(conversation.principal, in: context) } catch {
            return .finished(error.result, info: [])
        }
        let client: KerberosClient
        do throws(KerberosError) {
            client = try KerberosClient(configuration: .init(krb5: configuration.krb5, threads: 1, loginTimeout: configuration.loginTimeout))
        } catch {
            return .finished(.failed(.internal, "Cannot read the krb5 configuration: \(error.message)", principal: conversation.principal), info: [])
        }
        let result = Locked<LoginStep?>(nil)
        let done = DispatchSemaphore(value: 0)
        client.start {
            let step = await LoginAttempt(session: client.session(), configuration: configuration, names: names, conversation: conversation,
                                          learnt: LearntPreauth(), passwordOnly: false).run()
            result.withLock { $0 = step }
            done.signal()
        }
        done.wait()
        client.shutdownBlocking()
        return result.withLock { $0! }
    }
}

/// Thrown from the responder or prompter when the person must answer first.
private struct NeedsAnswers: Error {}

/// What the callbacks of one attempt collect, on the worker, for the attempt to read afterwards.
private final class AttemptNotes: Sendable {
    private struct Notes {
        var info: [String] = []
        var missing: [LoginQuestion] = []
    }
    private let notes = Locked(Notes())
    var info: [String] { notes.withLock { $0.info } }
    var missing: [LoginQuestion] { notes.withLock { $0.missing } }
    func add(info message: String) { notes.withLock { $0.info.append(message) } }
    func need(_ questions: [LoginQuestion]) { notes.withLock { $0.missing = questions } }
}

/// One replay of the exchange: every krb5 call on the session's worker, every KDC message on the engine's event
/// loop, the whole bounded by the session's deadline.
struct LoginAttempt: Sendable {
    let session: KerberosSession
    /// The service's configuration; once the client is known, as it applies to the client's realm.
    var configuration: LoginConfiguration
    let names: LoginNames
    let conversation: LoginConversation
    let learnt: LearntPreauth
    /// A login that can answer nothing but the password (saslauthd): no question will follow.
    let passwordOnly: Bool
    /// Whether this attempt's requests are armored (known once the armor cache was fetched or found).
    var armored = false

    func run() async -> LoginStep {
        let names = self.names
        let asked = conversation.principal
        let resolved: Result<(name: String, realm: String), LoginRefusal>
        do {
            resolved = try await session.run { context in
                do throws(LoginRefusal) {
                    let client = try names.client(asked, in: context)
                    return .success((client.name(), client.realm))
                } catch {
                    return .failure(error)
                }
            }
        } catch {
            return .finished(.failed(LoginResult.Failure(error.reason), Self.message(for: error), principal: asked), info: [])
        }
        switch resolved {
        case .failure(let refusal):
            return .finished(refusal.result, info: [])
        case .success(let client):
            var attempt = self
            attempt.configuration = configuration.applying(realm: client.realm)
            return await attempt.run(principal: client.name, realm: client.realm)
        }
    }

    private func run(principal: String, realm: String) async -> LoginStep {
        let notes = AttemptNotes()
        let answers = conversation.answers
        do throws(KerberosError) {
            let armor = try await armorCache(realm: realm)
            var attempt = self
            attempt.armored = armor
            let direct = configuration.verify && configuration.directVerificationTicket && configuration.outputCache == nil
            let setup = makeSetup(principal: principal, armor: armor, notes: notes, directVerification: direct)
            let credentials: Pinned<Credentials>
            do throws(KerberosError) {
                credentials = try await attempt.initialCredentials(principal: principal, password: answers.password, setup: setup, notes: notes)
            } catch {
                if !notes.missing.isEmpty { return .questions(id: conversation.await(notes.missing), notes.missing, info: notes.info) }
                throw error
            }
            // The ticket must be for the principal asked for (or the KDC's canonical spelling of it when
            // canonicalization was asked for), whatever the KDC chose to answer.
            let issued = try await session.run(credentials) { _, credentials in try credentials.client.name() }
            let canonicalized = configuration.canonicalize || configuration.enterpriseNames
            if issued != principal && !canonicalized {
                return .finished(.failed(.badCredentials, "The KDC issued credentials for \(issued), not \(principal)", principal: principal), info: notes.info)
            }
            if configuration.verify {
                let configuration = self.configuration
                _ = try await session.verify(credentials) { context in
                    VerificationOptions(server: try Self.verificationServer(configuration, context), keytab: try Self.verificationKeytab(configuration, context), nofail: true)
                }
            }
            let outputCache = configuration.outputCache
            let expires = try await session.run(credentials) { context, credentials in
                if let name = outputCache {
                    let cache = try CredentialCache(resolving: name, in: context)
                    try cache.initialize(for: credentials.client)
                    try cache.store(credentials)
                }
                return credentials.endTime
            }
            return .finished(.success(principal: issued, verified: configuration.verify, expires: expires), info: notes.info)
        } catch {
            if error.reason == .verificationFailed || error.reason == .kdcUnreachable {
                // A cached armor ticket may be what failed; get a fresh one next time (a later step of the session
                // may be past the deadline: the worker then drops it with the next armor fetch).
                let key = ArmorCache.key(realm)
                _ = try? await session.run { context in context.discardReusable(key) }
            }
            return .finished(.failed(LoginResult.Failure(error.reason), Self.message(for: error), principal: principal), info: notes.info)
        }
    }

    /// The request as the worker builds it: the client, the base options with the worker's armor cache, the
    /// responder and prompter that replay the conversation's answers, the direct verification ticket.
    private func makeSetup(principal: String, armor: Bool, notes: AttemptNotes, directVerification: Bool) -> @Sendable (Context, Secret?) throws -> InitialCredentialsSetup {
        let configuration = self.configuration
        let answers = conversation.answers
        let asked = conversation.principal
        let names = self.names
        return { context, password in
            // Parsed as the name checks parsed it, so an enterprise name stays one.
            let client: Principal
            do throws(LoginRefusal) { client = try names.client(principal, in: context) } catch {
                throw KerberosError(code: -1765328250, message: error.result.message ?? "Not a principal name", reason: .invalidRequest)  // KRB5_PARSE_MALFORMED
            }
            var options = InitialCredentialsOptions()
            if configuration.canonicalize || configuration.enterpriseNames { options.canonicalize = true }
            options.ticketLifetime = configuration.ticketLifetime
            options.renewLifetime = configuration.renewLifetime
            options.forwardable = configuration.forwardable
            options.preauthOptions = configuration.preauthOptions.map { ($0.name, $0.value) }
            options.fastRequired = configuration.fastRequired
            if armor, let cached = context.reusable(ArmorCache.key(client.realm), make: { ArmorCache(cache: nil, expires: .distantPast) }) as ArmorCache?,
               let cache = cached.cache {
                options.armor = .cache(cache)
            }
            options.responder = Responder { questions in
                try Self.respond(questions, answers: answers, asked: asked, notes: notes)
            }
            options.prompter = Prompter { round in
                if let banner = round.banner, !banner.isEmpty { notes.add(info: banner) }
                return try Self.prompt(round, answers: answers, notes: notes)
            }
            options.expireCallback = { expiry in
                if let message = Self.expiryMessage(expiry) { notes.add(info: message) }
            }
            // A ticket straight from the AS only for the server's own realm: a user of another realm is
            // verified through the TGS path (cross-realm), since the AS of the user's realm cannot issue it.
            // Nor with canonicalization: AD then answers with the service's canonical name, which MIT refuses
            // for any AS service but krbtgt ("KDC reply did not match expectations").
            if directVerification && options.canonicalize != true {
                let server = try Self.verificationServer(configuration, context)
                if server.realm == client.realm { options.service = server.name() }
            }
            return InitialCredentialsSetup(client: client, password: password, options: options)
        }
    }

    /// The exchange, sending the encrypted timestamp in the first request when that is known to be safe (learnt
    /// etype info for password-only logins) or configured (optimistic preauth); MIT's password change on an
    /// expired password (kpasswd) through the conversation's prompter.
    private func initialCredentials(principal: String, password: Secret?, setup: @escaping @Sendable (Context, Secret?) throws -> InitialCredentialsSetup,
                                    notes: AttemptNotes) async throws(KerberosError) -> Pinned<Credentials> {
        do {
            return try await exchange(principal: principal, password: password, setup: setup)
        } catch where error.reason == .passwordExpired && error.name == "KRB5KDC_ERR_KEY_EXP" && !passwordOnly {
            // (A password-only login cannot answer the new-password questions: it ends as password-expired.)
            // The password change is not steppable in MIT 1.20: krb5_get_init_creds_password asks the prompter for
            // the new password, changes it through kpasswd and logs in. It blocks the worker on the network; the
            // session's deadline still bounds the answer.
            return try await session.make { context in
                let request = try setup(context, password)
                return try context.initialCredentials(for: request.client, password: password, options: request.options)
            }
        }
    }

    private func exchange(principal: String, password: Secret?, setup: @escaping @Sendable (Context, Secret?) throws -> InitialCredentialsSetup) async throws(KerberosError) -> Pinned<Credentials> {
        guard let password else {
            return try await session.initialCredentials { context in try setup(context, nil) }
        }
        let plain: @Sendable (Context) throws -> InitialCredentialsSetup = { context in try setup(context, password) }
        if passwordOnly && configuration.learnedPreauth {
            var info: EncryptionInfo
            if let known = learnt.encryptionInfo(for: principal) { info = known } else { info = try await learn(principal: principal, setup: setup) }
            var relearnt = false
            while true {
                do {
                    return try await oneExchange(principal: principal, password: password, info: info, setup: setup)
                } catch where error.reason == .badPassword && !relearnt {
                    // Either the password is wrong or the principal's key changed salt or enctype since it was
                    // learnt. Asking again counts no failure at the KDC; retry only when it changed.
                    relearnt = true
                    let current = try await learn(principal: principal, setup: setup)
                    guard current != info else { throw error }
                    info = current
                }
            }
        }
        let optimistic = configuration.optimisticPreauth && !learnt.refusesOptimistic(principal)
        guard optimistic else { return try await session.initialCredentials(plain) }
        do {
            return try await session.initialCredentials { context in
                var request = try setup(context, password)
                request.options.preauthTypes = [.encryptedTimestamp]
                return request
            }
        } catch where error.reason == .badPassword {
            // MIT does not fall back by itself: an optimistic timestamp made with the default salt fails
            // for a principal whose salt differs. Retry the normal exchange and remember the principal.
            let credentials = try await session.initialCredentials(plain)
            learnt.refuseOptimistic(principal)
            return credentials
        }
    }

    /// One exchange with learnt etype info: the key made in process (``StringToKey``) and handed to krb5 through a
    /// MEMORY keytab of this attempt's own (`krb5_init_creds_set_keytab`), wiped by krb5 when its last handle
    /// closes; MIT's password path when the enctype is not one ``StringToKey`` makes or the KDC sent no etype info.
    private func oneExchange(principal: String, password: Secret, info: EncryptionInfo,
                             setup: @escaping @Sendable (Context, Secret?) throws -> InitialCredentialsSetup) async throws(KerberosError) -> Pinned<Credentials> {
        guard info.allowsOptimisticPreauth, let key = StringToKey.key(password: password, info: info) else {
            return try await session.initialCredentials { context in try setup(context, password) }
        }
        return try await session.initialCredentials { context in
            var request = try setup(context, nil)
            request.options.preauthTypes = [.encryptedTimestamp]
            request.options.encryptionTypes = [info.encryptionType]
            request.options.salt = info.salt
            // Exchanges of several logins interleave on one worker, so each takes a MEMORY keytab of its own from the
            // worker's pool (MIT never frees a MEMORY keytab, so they are reused, not made per login).
            let pool = context.reusable("login.keytabs") { KeytabPool() }
            let keytab = try pool.take(context)
            try keytab.add(principal: request.client, encryptionType: info.encryptionType, key: key)
            var result = InitialCredentialsSetup(client: request.client, keytab: keytab, options: request.options)
            result.attachments.append(KeyGuard(pool: pool, keytab: keytab, client: request.client, encryptionType: info.encryptionType))
            return result
        }
    }

    /// Asks the KDC for the principal's etype info and remembers it.
    private func learn(principal: String, setup: @escaping @Sendable (Context, Secret?) throws -> InitialCredentialsSetup) async throws(KerberosError) -> EncryptionInfo {
        let info = try await session.encryptionInfo { context in
            var request = try setup(context, nil)
            request.options.responder = nil
            request.options.prompter = nil
            request.options.expireCallback = nil
            request.options.service = nil
            return request
        }
        // Etype info that came without FAST could have been chosen by whoever sits on the path: it is
        // trusted only for a while, so one downgrade does not persist.
        learnt.remember(info, for: principal, armored: armored)
        return info
    }

    /// Makes sure the worker holds a valid armor cache for `realm` (a realm's KDC accepts only its own armor),
    /// fetching a new one through the engine a minute before its ticket expires. Returns whether there is one.
    private func armorCache(realm: String) async throws(KerberosError) -> Bool {
        guard configuration.armor != .none else { return false }
        let key = ArmorCache.key(realm)
        let valid = try await session.run { context in
            guard let cached = context.reusable(key, make: { ArmorCache(cache: nil, expires: .distantPast) }) as ArmorCache?,
                  cached.cache != nil else { return false }
            return cached.expires.timeIntervalSinceNow > 60
        }
        if valid { return true }
        let configuration = self.configuration
        do {
            let cache: Pinned<CredentialCache> = try await session.make { context in try CredentialCache.newUnique(in: context) }
            let credentials = try await session.initialCredentials { context in
                var options = InitialCredentialsOptions()
                options.outCache = cache.onWorker
                switch configuration.armor {
                case .anonymous:
                    options.anonymous = true
                    return InitialCredentialsSetup(client: try Principal.anonymous(realm: realm, in: context), password: nil, options: options)
                case .keytab, .none:
                    let keytab = try Self.verificationKeytab(configuration, context)
                    let client = try Self.armorPrincipal(configuration, in: keytab, realm: realm, context: context)
                    return InitialCredentialsSetup(client: client, keytab: keytab, options: options)
                }
            }
            try await session.run(credentials) { context, credentials in
                context.discardReusable(key)
                _ = context.reusable(key) { ArmorCache(cache: cache.onWorker, expires: credentials.endTime) }
            }
            return true
        } catch {
            if configuration.fastRequired || error.reason == .kdcUnreachable || error.reason == .cancelled { throw error }
            return false
        }
    }

    /// Whose TGT armors logins of `realm` with keytab armor: ``LoginConfiguration/armorPrincipal``, else the
    /// keytab's computer account of that realm (`NAME$@REALM`: Active Directory refuses service principals
    /// as clients), else its first entry of that realm, else its first entry.
    private static func armorPrincipal(_ configuration: LoginConfiguration, in keytab: Keytab, realm: String, context: Context) throws -> Principal {
        if let name = configuration.armorPrincipal { return try Principal(parsing: name, in: context) }
        let principals = try keytab.entries().map(\.principal)
        let ofRealm = principals.filter { $0.hasSuffix("@\(realm)") }
        let computer = ofRealm.first { $0.dropLast(realm.utf8.count + 1).hasSuffix("$") }
        guard let name = computer ?? ofRealm.first ?? principals.first else {
            throw KerberosError.emptyKeytab(keytab.name)
        }
        return try Principal(parsing: name, in: context)
    }

    private static func verificationKeytab(_ configuration: LoginConfiguration, _ context: Context) throws -> Keytab {
        try context.reusable("verify.keytab.\(configuration.keytab ?? "")") {
            if let name = configuration.keytab { return try Keytab(resolving: name, in: context) }
            return try Keytab.default(in: context)
        }
    }

    /// The configured service principal, else `host/<this host>` as krb5 canonicalises it.
    private static func verificationServer(_ configuration: LoginConfiguration, _ context: Context) throws -> Principal {
        try context.reusable("verify.server.\(configuration.serverPrincipal ?? "")") {
            guard let name = configuration.serverPrincipal else { return try Principal.service("host", in: context) }
            return try Principal(parsing: name, in: context)
        }
    }

    private static func respond(_ questions: [ResponderQuestion], answers: LoginAnswers, asked: String, notes: AttemptNotes) throws -> ResponderAnswers {
        var result = ResponderAnswers()
        var unanswered: [LoginQuestion] = []
        for question in questions {
            switch question {
            case .password:
                if let password = answers.password { result.password = password }
                else { unanswered.append(.password(prompt: "Password for \(asked)")) }
            case .otp(let challenge):
                if let otp = answers.otp { result.otp = otp } else { unanswered.append(.otp(challenge)) }
            case .pkinit(let identities):
                let known = identities.filter { answers.pkinit[$0.identity] != nil }
                if known.isEmpty { unanswered.append(.pkinit(identities)) }
                for identity in known { result.pkinit[identity.identity] = answers.pkinit[identity.identity] }
            case .other(let name, let challenge):
                if let raw = answers.raw[name] { result.raw[name] = raw } else { unanswered.append(.raw(name: name, challenge: challenge)) }
            }
        }
        // A round with both a password and an OTP question (FAST offering both) needs only one of them.
        if unanswered.contains(where: { if case .password = $0 { true } else { false } }),
           result.otp != nil || !result.pkinit.isEmpty {
            unanswered.removeAll { if case .password = $0 { true } else { false } }
        }
        if questions.contains(where: { if case .otp = $0 { true } else { false } }), result.password != nil {
            unanswered.removeAll { if case .otp = $0 { true } else { false } }
        }
        if !unanswered.isEmpty {
            notes.need(unanswered)
            throw NeedsAnswers()
        }
        return result
    }

    private static func prompt(_ round: PromptRound, answers: LoginAnswers, notes: AttemptNotes) throws -> [Secret] {
        var replies: [Secret] = []
        var unanswered: [LoginQuestion] = []
        var textIndex = 0
        for prompt in round.prompts {
            let reply: Secret?
            switch prompt.kind {
            case .password:
                reply = answers.password
                if reply == nil { unanswered.append(.password(prompt: prompt.text)) }
            case .newPassword:
                reply = answers.newPassword
                if reply == nil { unanswered.append(.newPassword(prompt: prompt.text)) }
            case .newPasswordAgain:
                reply = answers.newPasswordAgain
                if reply == nil { unanswered.append(.newPasswordAgain(prompt: prompt.text)) }
            case .preauth, .other:
                reply = textIndex < answers.text.count ? answers.text[textIndex] : nil
                textIndex += 1
                if reply == nil { unanswered.append(.text(prompt: prompt.text, hidden: prompt.hidden)) }
            }
            if let reply { replies.append(reply) }
        }
        if !unanswered.isEmpty {
            notes.need(unanswered)
            throw NeedsAnswers()
        }
        return replies
    }

    static func expiryMessage(_ expiry: PasswordExpiry) -> String? {
        guard let date = expiry.passwordExpiration ?? expiry.accountExpiration else { return nil }
        let what = expiry.passwordExpiration != nil ? "Password" : "Account"
        let days = Int((date.timeIntervalSinceNow / 86400).rounded(.down))
        let when = days >= 1 ? "in \(days) day\(days == 1 ? "" : "s")" : "within a day"
        return "\(what) expires \(when)"
    }

    /// krb5's message for the failure; krb5 never puts secrets in messages.
    static func message(for error: KerberosError) -> String {
        switch error.reason {
        case .badPassword: "Authentication failed"
        case .verificationFailed: "Credentials could not be verified: \(error.message)"
        default: error.message
        }
    }
}

/// A worker's FAST armor cache and when its ticket expires.
final class ArmorCache {
    /// The reusable's key for `realm`'s armor.
    static func key(_ realm: String) -> String { "login.armor.\(realm)" }
    let cache: CredentialCache?
    let expires: Date
    init(cache: CredentialCache?, expires: Date) {
        self.cache = cache
        self.expires = expires
    }
}

/// A worker's MEMORY keytabs for the one-exchange path, each used by one login at a time. Touched only on its
/// worker's thread.
final class KeytabPool {
    private var free: [Keytab] = []

    func take(_ context: Context) throws -> Keytab {
        if let keytab = free.popLast() { return keytab }
        return try Keytab(resolving: "MEMORY:krb5-login-keys-\(UInt64.random(in: 0...UInt64.max))", in: context)
    }

    func give(_ keytab: Keytab) { free.append(keytab) }
}

/// Removes a login's key from its MEMORY keytab (krb5 wipes the key's memory) and returns the keytab to the pool,
/// when the request is released: on the worker, on every path, after the exchange's last step.
final class KeyGuard {
    let pool: KeytabPool
    let keytab: Keytab
    let client: Principal
    let encryptionType: EncryptionType

    init(pool: KeytabPool, keytab: Keytab, client: Principal, encryptionType: EncryptionType) {
        self.pool = pool
        self.keytab = keytab
        self.client = client
        self.encryptionType = encryptionType
    }

    deinit {
        // Returned to the pool only when the key is gone, so no later login can meet it.
        if (try? keytab.remove(principal: client, encryptionType: encryptionType)) != nil { pool.give(keytab) }
    }
}
