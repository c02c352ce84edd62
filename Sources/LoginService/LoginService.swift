public import Kerberos
public import LoginProtocol
import Foundation
import Synchronization

/// Verified logins on a pool of dedicated krb5 threads: initial credentials (armored as configured),
/// then `krb5_verify_init_creds` with nofail against the keytab.
///
/// Used by `krb5-verifyd` for every request and by `krb5-login` in process. A conversation waiting for
/// a person holds no thread: ``step(_:)`` runs one complete attempt and returns either the result or
/// the questions still unanswered.
public final class LoginService: Sendable {
    /// How every login is performed.
    public let configuration: LoginConfiguration
    private let executor: KerberosExecutor
    /// The opt-in success cache for password logins (nil when off).
    public let resultCache: ResultCache?
    /// What earlier logins taught about principals' keys (shared by the workers).
    private let learnt = LearntPreauth()
    /// The checks every name passes before a KDC exchange (realm allow-list, anonymous refusal).
    private let names: LoginNames
    /// A context of the service's own for ``resolve(_:)``, which callers use from any thread, one at a time.
    private let resolver: Mutex<Context>

    /// Starts `threads` krb5 worker threads, each with its own context.
    public init(configuration: LoginConfiguration, threads: Int = 2, resultCacheTTL: Duration? = nil) throws {
        self.configuration = configuration
        self.executor = try KerberosExecutor(threads: threads, configuration: configuration.krb5)
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

    /// Finishes queued work and stops the threads.
    public func shutdown() {
        executor.shutdown()
    }

    /// Logs in with a password only, as saslauthd does: any further question fails the login.
    public func verifyPassword(principal: String, password: Secret) async -> LoginResult {
        await withCheckedContinuation { continuation in
            verifyPassword(principal: principal, password: password) { continuation.resume(returning: $0) }
        }
    }

    /// Logs in with a password only and calls `completion` on a worker thread; never touches Swift's
    /// cooperative pool, so an event loop can use it directly. The result cache, when on, is keyed on
    /// `principal` as given: callers pass the canonical name from ``resolve(_:)``.
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

    /// Runs the exchange once and calls `completion` on a worker thread (no Swift concurrency involved).
    public func step(_ conversation: LoginConversation, completion: @escaping @Sendable (LoginStep) -> Void) {
        step(conversation, passwordOnly: false, completion: completion)
    }

    private func step(_ conversation: LoginConversation, passwordOnly: Bool, completion: @escaping @Sendable (LoginStep) -> Void) {
        let configuration = self.configuration
        executor.submit { context, _ in
            guard let context else {
                completion(.finished(.failed(.internal, "The login service is shutting down", principal: conversation.principal), info: []))
                return
            }
            let step = LoginAttempt(context: context, configuration: configuration, names: self.names, conversation: conversation,
                                    learnt: self.learnt, passwordOnly: passwordOnly).run()
            if case .finished(let result, _) = step, !result.ok { self.resultCache?.invalidate(principal: result.principal ?? conversation.principal) }
            completion(step)
        }
    }

    /// Runs the exchange once on the calling thread with a context of its own; for programs that
    /// make one login and exit (such as `krb5-login`).
    ///
    /// > Warning: Blocks; never call from Swift's cooperative pool.
    public static func stepBlocking(_ conversation: LoginConversation, configuration: LoginConfiguration, context: Context) -> LoginStep {
        let names: LoginNames
        do throws(KerberosError) { names = try LoginNames(configuration: configuration, context: context) } catch {
            return .finished(.failed(.internal, "Cannot read the krb5 configuration: \(error.message)", principal: conversation.principal), info: [])
        }
        return LoginAttempt(context: context, configuration: configuration, names: names, conversation: conversation,
                            learnt: LearntPreauth(), passwordOnly: false).run()
    }
}

/// Thrown from the responder or prompter when the person must answer first.
private struct NeedsAnswers: Error {}

/// One replay of the exchange on a worker thread.
struct LoginAttempt {
    let context: Context
    /// The service's configuration; once the client is known, as it applies to the client's realm.
    var configuration: LoginConfiguration
    let names: LoginNames
    let conversation: LoginConversation
    let learnt: LearntPreauth
    /// A login that can answer nothing but the password (saslauthd): no question will follow.
    let passwordOnly: Bool

    func run() -> LoginStep {
        let client: Principal
        do throws(LoginRefusal) {
            client = try names.client(conversation.principal, in: context)
        } catch {
            return .finished(error.result, info: [])
        }
        var attempt = self
        attempt.configuration = configuration.applying(realm: client.realm)
        return attempt.run(for: client)
    }

    private func run(for client: Principal) -> LoginStep {
        var info: [String] = []
        var missing: [LoginQuestion] = []
        let answers = conversation.answers
        let principal = client.name()
        do {
            var options = try baseOptions(for: client)
            options.responder = Responder { questions in
                try respond(questions, answers: answers, missing: &missing)
            }
            options.prompter = Prompter { round in
                if let banner = round.banner, !banner.isEmpty { info.append(banner) }
                return try prompt(round, answers: answers, missing: &missing)
            }
            options.expireCallback = { expiry in
                if let message = Self.expiryMessage(expiry) { info.append(message) }
            }
            // A ticket straight from the AS only for the server's own realm: a user of another realm is
            // verified through the TGS path (cross-realm), since the AS of the user's realm cannot issue it.
            // Nor with canonicalization: AD then answers with the service's canonical name, which MIT refuses
            // for any AS service but krbtgt ("KDC reply did not match expectations").
            if configuration.verify && configuration.directVerificationTicket && configuration.outputCache == nil,
               options.canonicalize != true, try verificationServer().realm == client.realm {
                options.service = try verificationServer().name()
            }
            let credentials: Credentials
            do {
                credentials = try initialCredentials(client: client, password: answers.password, options: options)
            } catch is NeedsAnswers {
                return .questions(id: conversation.await(missing), missing, info: info)
            }
            // The ticket must be for the principal asked for (or the KDC's canonical spelling of it when
            // canonicalization was asked for), whatever the KDC chose to answer.
            if options.canonicalize != true && credentials.client != principal {
                return .finished(.failed(.badCredentials, "The KDC issued credentials for \(credentials.client), not \(principal)", principal: principal), info: info)
            }
            if configuration.verify {
                try context.verify(credentials, options: verificationOptions())
            }
            if let name = configuration.outputCache {
                let cache = try CredentialCache(resolving: name, in: context)
                try cache.initialize(for: Principal(parsing: credentials.client, in: context))
                try cache.store(credentials)
            }
            return .finished(.success(principal: credentials.client, verified: configuration.verify, expires: credentials.endTime), info: info)
        } catch let error as KerberosError {
            if error.reason == .verificationFailed || error.reason == .kdcUnreachable {
                // A cached armor ticket may be what failed; get a fresh one next time.
                context.discardReusable(ArmorCache.key(client.realm))
            }
            return .finished(.failed(LoginResult.Failure(error.reason), Self.message(for: error), principal: principal), info: info)
        } catch {
            return .finished(.failed(.internal, "Unexpected error", principal: principal), info: info)
        }
    }

    /// `krb5_get_init_creds_password`, sending the encrypted timestamp in the first request when that is
    /// known to be safe (learnt etype info for password-only logins) or configured (optimistic preauth).
    private func initialCredentials(client: Principal, password: Secret?, options: InitialCredentialsOptions) throws -> Credentials {
        var options = options
        let name = client.name()
        guard let password else {
            return try context.initialCredentials(for: client, password: nil, options: options)
        }
        if passwordOnly && configuration.learnedPreauth {
            return try LearntPreauth.withOneRelearn(
                known: learnt.encryptionInfo(for: name),
                learn: { try learn(client, options: options) },
                attempt: { info in
                    guard info.allowsOptimisticPreauth else {
                        return try context.initialCredentials(for: client, password: password, options: options)
                    }
                    var options = options
                    options.preauthTypes = [.encryptedTimestamp]
                    options.encryptionTypes = [info.encryptionType]
                    options.salt = info.salt
                    return try initialCredentials(client: client, password: password, info: info, options: options)
                })
        }
        let optimistic = configuration.optimisticPreauth && !learnt.refusesOptimistic(name)
        guard optimistic else {
            return try context.initialCredentials(for: client, password: password, options: options)
        }
        options.preauthTypes = [.encryptedTimestamp]
        do {
            return try context.initialCredentials(for: client, password: password, options: options)
        } catch let error as KerberosError where error.reason == .badPassword {
            // MIT does not fall back by itself: an optimistic timestamp made with the default salt fails
            // for a principal whose salt differs. Retry the normal exchange and remember the principal.
            options.preauthTypes = nil
            let credentials = try context.initialCredentials(for: client, password: password, options: options)
            learnt.refuseOptimistic(name)
            return credentials
        }
    }

    /// One optimistic login with learnt etype info: the key made in process (``StringToKey``) and handed to
    /// `krb5_get_init_creds_keytab` through the worker's private MEMORY keytab, removed (and wiped by krb5)
    /// right after; MIT's password path when the enctype is not one ``StringToKey`` makes.
    private func initialCredentials(client: Principal, password: Secret, info: EncryptionInfo, options: InitialCredentialsOptions) throws -> Credentials {
        guard let key = StringToKey.key(password: password, info: info) else {
            return try context.initialCredentials(for: client, password: password, options: options)
        }
        let keytab = try context.reusable("login.keys") { try Keytab(resolving: "MEMORY:krb5-login-keys-\(UInt64.random(in: 0...UInt64.max))", in: context) }
        try keytab.add(principal: client, encryptionType: info.encryptionType, key: key)
        defer { try? keytab.remove(principal: client, encryptionType: info.encryptionType) }
        return try context.initialCredentials(for: client, keytab: keytab, options: options)
    }

    /// Asks the KDC for `client`'s etype info and remembers it.
    private func learn(_ client: Principal, options: InitialCredentialsOptions) throws -> EncryptionInfo {
        var request = options
        request.responder = nil
        request.prompter = nil
        request.expireCallback = nil
        request.preauthTypes = nil
        request.encryptionTypes = nil
        request.salt = nil
        let info = try context.encryptionInfo(for: client, options: request)
        // Etype info that came without FAST could have been chosen by whoever sits on the path: it is
        // trusted only for a while, so one downgrade does not persist.
        learnt.remember(info, for: client.name(), armored: request.armor != nil)
        return info
    }

    private func baseOptions(for client: Principal) throws -> InitialCredentialsOptions {
        var options = InitialCredentialsOptions()
        options.ticketLifetime = configuration.ticketLifetime
        options.renewLifetime = configuration.renewLifetime
        options.forwardable = configuration.forwardable
        options.preauthOptions = configuration.preauthOptions.map { ($0.name, $0.value) }
        options.fastRequired = configuration.fastRequired
        if configuration.canonicalize || configuration.enterpriseNames { options.canonicalize = true }
        if let armor = try armorCache(for: client) { options.armor = .cache(armor) }
        return options
    }

    /// The worker's armor cache for the client's realm (a realm's KDC accepts only its own armor),
    /// renewed a minute before its ticket expires.
    private func armorCache(for client: Principal) throws -> CredentialCache? {
        guard configuration.armor != .none else { return nil }
        let key = ArmorCache.key(client.realm)
        if let cached = context.reusable(key, make: { ArmorCache(cache: nil, expires: .distantPast) }) as ArmorCache?,
           let cache = cached.cache, cached.expires.timeIntervalSinceNow > 60 {
            return cache
        }
        do {
            let getTicket: (InitialCredentialsOptions) throws -> Credentials
            switch configuration.armor {
            case .anonymous:
                getTicket = { try context.anonymousCredentials(realm: client.realm, options: $0) }
            case .keytab:
                let keytab = try verificationKeytab()
                let armorClient = try armorPrincipal(in: keytab, realm: client.realm)
                getTicket = { try context.initialCredentials(for: armorClient, keytab: keytab, options: $0) }
            case .none:
                return nil
            }
            var expires = Date.distantPast
            let cache = try context.newArmorCache { options in
                let credentials = try getTicket(options)
                expires = credentials.endTime
                return credentials
            }
            context.discardReusable(key)
            _ = context.reusable(key) { ArmorCache(cache: cache, expires: expires) }
            return cache
        } catch {
            if configuration.fastRequired { throw error }
            return nil
        }
    }

    /// Whose TGT armors logins of `realm` with keytab armor: ``LoginConfiguration/armorPrincipal``, else the
    /// keytab's computer account of that realm (`NAME$@REALM`: Active Directory refuses service principals
    /// as clients), else its first entry of that realm, else its first entry.
    private func armorPrincipal(in keytab: Keytab, realm: String) throws -> Principal {
        if let name = configuration.armorPrincipal { return try Principal(parsing: name, in: context) }
        let principals = try keytab.entries().map(\.principal)
        let ofRealm = principals.filter { $0.hasSuffix("@\(realm)") }
        let computer = ofRealm.first { $0.dropLast(realm.utf8.count + 1).hasSuffix("$") }
        guard let name = computer ?? ofRealm.first ?? principals.first else {
            throw KerberosError(code: -1, message: "Keytab \(keytab.name) has no entries", reason: .invalidRequest)
        }
        return try Principal(parsing: name, in: context)
    }

    private func verificationKeytab() throws -> Keytab {
        try context.reusable("verify.keytab.\(configuration.keytab ?? "")") {
            if let name = configuration.keytab { return try Keytab(resolving: name, in: context) }
            return try Keytab.default(in: context)
        }
    }

    /// The configured service principal, else `host/<this host>` as krb5 canonicalises it.
    private func verificationServer() throws -> Principal {
        try context.reusable("verify.server.\(configuration.serverPrincipal ?? "")") {
            guard let name = configuration.serverPrincipal else { return try Principal.service("host", in: context) }
            return try Principal(parsing: name, in: context)
        }
    }

    private func verificationOptions() throws -> VerificationOptions {
        VerificationOptions(server: try verificationServer(), keytab: try verificationKeytab(), nofail: true)
    }

    private func respond(_ questions: [ResponderQuestion], answers: LoginAnswers, missing: inout [LoginQuestion]) throws -> ResponderAnswers {
        var result = ResponderAnswers()
        var unanswered: [LoginQuestion] = []
        for question in questions {
            switch question {
            case .password:
                if let password = answers.password { result.password = password }
                else { unanswered.append(.password(prompt: "Password for \(conversation.principal)")) }
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
            missing = unanswered
            throw NeedsAnswers()
        }
        return result
    }

    private func prompt(_ round: PromptRound, answers: LoginAnswers, missing: inout [LoginQuestion]) throws -> [Secret] {
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
            missing = unanswered
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
