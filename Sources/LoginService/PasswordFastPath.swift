import Kerberos

/// The password exchange made as short as it is safe to make: with etype info learnt from earlier logins
/// (password-only logins) or asked for first (`krb5-login`, whose process makes one login), the key is made in
/// process (``StringToKey``) and the encrypted timestamp goes in
/// the first request, through a MEMORY keytab; with optimistic preauth configured, MIT makes the timestamp
/// with the default salt. Anything else is MIT's normal password exchange.
struct PasswordFastPath: Sendable {
    let session: KerberosSession
    /// The service's configuration as it applies to the client's realm.
    let configuration: LoginConfiguration
    let learnt: LearntPreauth
    /// Whether to use learnt etype info, asking the KDC for it when none is known (``LoginAttempt/learnsEtypeInfo``).
    let learnsEtypeInfo: Bool

    /// The exchange with `password` (nil: the responder or prompter asks for it).
    func exchange(_ request: RequestSetup, password: Secret?) async throws(KerberosError) -> Pinned<Credentials> {
        guard let password else {
            return try await session.initialCredentials { context in try request.make(context, password: nil) }
        }
        let principal = request.principal
        if learnsEtypeInfo && configuration.learnedPreauth {
            do {
                return try await LearntPreauth.withOneRelearn(known: learnt.encryptionInfo(for: principal)) { () async throws(KerberosError) in
                    try await learn(request)
                } attempt: { info async throws(KerberosError) in
                    try await oneExchange(request, password: password, info: info)
                }
            } catch where error.reason == .clockSkew {
                // The timestamp made on this host's clock was refused. MIT's own exchange corrects the clock from the
                // KDC's error when kdc_timesync is on (the default), and says clock-skew when it is off.
                return try await session.initialCredentials { context in try request.make(context, password: password) }
            }
        }
        let plain: @Sendable (Context) throws -> InitialCredentialsSetup = { context in try request.make(context, password: password) }
        guard configuration.optimisticPreauth && !learnt.refusesOptimistic(principal) else {
            return try await session.initialCredentials(plain)
        }
        do {
            return try await session.initialCredentials { context in
                var setup = try request.make(context, password: password)
                setup.options.preauthTypes = [.encryptedTimestamp]
                return setup
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
    private func oneExchange(_ request: RequestSetup, password: Secret, info: EncryptionInfo) async throws(KerberosError) -> Pinned<Credentials> {
        let realm = Self.realm(of: request.principal)
        // The PBKDF2 is CPU work: it runs on the session's worker, never on the event loop that runs this task.
        guard info.allowsOptimisticPreauth, !(request.armored && learnt.refusesArmoredOneExchange(realm)),
              let key = try await session.run({ _ in StringToKey.key(password: password, info: info) }) else {
            return try await session.initialCredentials { context in try request.make(context, password: password) }
        }
        // Inside FAST the first request carries an encrypted challenge (RFC 6113 section 5.4.6), not the
        // timestamp: Active Directory and Heimdal refuse PA-ENC-TIMESTAMP in an armored request (KDC_ERR_POLICY).
        let preauth: PreauthType = request.armored ? .encryptedChallenge : .encryptedTimestamp
        do {
            return try await oneExchange(request, key: key, info: info, preauth: preauth)
        } catch where request.armored && (error.name == "KRB5KDC_ERR_POLICY" || error.reason == .preauthUnavailable) {
            // A KDC that takes neither in an armored first request: MIT's path, which answers the KDC's own padata.
            // Remembered for the realm once that path worked (a disabled account also answers KDC_ERR_POLICY).
            let credentials = try await session.initialCredentials { context in try request.make(context, password: password) }
            learnt.refuseArmoredOneExchange(realm)
            return credentials
        }
    }

    /// The realm of a principal name as `krb5_unparse_name` writes it (after its last unescaped `@`).
    static func realm(of principal: String) -> String {
        var realm = Substring(principal)
        var index = principal.endIndex
        while let at = principal[..<index].lastIndex(of: "@") {
            if at > principal.startIndex, principal[principal.index(before: at)] == "\\" { index = at; continue }
            realm = principal[principal.index(after: at)...]
            break
        }
        return String(realm)
    }

    private func oneExchange(_ request: RequestSetup, key: Secret, info: EncryptionInfo, preauth: PreauthType) async throws(KerberosError) -> Pinned<Credentials> {
        try await session.initialCredentials { context in
            var setup = try request.make(context, password: nil)
            setup.options.preauthTypes = [preauth]
            setup.options.encryptionTypes = [info.encryptionType]
            setup.options.salt = info.salt
            // Exchanges of several logins interleave on one worker, so each takes a MEMORY keytab of its own from the
            // worker's pool (MIT never frees a MEMORY keytab, so they are reused, not made per login).
            let pool = context.reusable("login.keytabs") { KeytabPool() }
            let keytab = try pool.take(context)
            try keytab.add(principal: setup.client, encryptionType: info.encryptionType, key: key)
            var result = InitialCredentialsSetup(client: setup.client, keytab: keytab, options: setup.options)
            result.attachments.append(KeyGuard(pool: pool, keytab: keytab, client: setup.client, encryptionType: info.encryptionType))
            return result
        }
    }

    /// Asks the KDC for the principal's etype info and remembers it.
    private func learn(_ request: RequestSetup) async throws(KerberosError) -> EncryptionInfo {
        let info = try await session.encryptionInfo { context in try request.makeForEncryptionInfo(context) }
        // The question goes without FAST (``KerberosSession/encryptionInfo(_:)``), so whoever sits on the path could
        // have chosen the answer: it is trusted only for a while, so one downgrade does not persist. (It cannot
        // expose the password: inside FAST the key it makes only answers an encrypted challenge.)
        learnt.remember(info, for: request.principal)
        return info
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
