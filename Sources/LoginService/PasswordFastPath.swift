import Kerberos
import KerberosEngine

/// The password exchange made as short as it is safe to make, with one password key per login, always made by
/// `CStringToKey` (directly, or through its stand-in for libk5crypto when MIT's exchange makes the key):
/// - with etype info learnt from an earlier login of the principal (password-only logins): the key goes to krb5 in
///   a MEMORY keytab and the encrypted timestamp or challenge in the first request, one KDC exchange;
/// - without: MIT's own exchange, armored when armor is configured, which asks the KDC (PREAUTH_REQUIRED, or an
///   AS-REP without preauth); the etype info its key was made for is learnt once the login succeeded, so only
///   info that produced a working key, inside the login's own (armored) exchange, is ever kept;
/// - with optimistic preauth configured: MIT's timestamp with the default salt in the first request.
///
/// A refused key never counts twice at the KDC: before a second attempt, the KDC's etype info is asked again in
/// a way that counts no failure (``KerberosSession/encryptionInfo(_:)``, armored when the login is), and the
/// second attempt is made only when it differs from what the first key was made for.
struct PasswordFastPath {
    let session: KerberosSession
    /// The service's configuration as it applies to the client's realm.
    let configuration: LoginConfiguration
    let learnt: LearntPreauth
    /// Whether to use and keep learnt etype info (``LoginExchange/learnsEtypeInfo``).
    let learnsEtypeInfo: Bool

    /// The exchange with `password` (nil: the responder or prompter asks for it).
    func exchange(_ request: RequestSetup, password: Secret?) async throws(KerberosError) -> Credentials {
        guard let password else { return try await mitExchange(request, password: nil) }
        let principal = request.principal
        if learnsEtypeInfo && configuration.learnedPreauth {
            do {
                guard let known = learnt.encryptionInfo(for: principal) else {
                    return try await learning(request, password: password)
                }
                return try await LearntPreauth.withOneRelearn(known: known) { () async throws(KerberosError) in
                    try await ask(request)
                } attempt: { info async throws(KerberosError) in
                    let credentials = try await oneExchange(request, password: password, info: info)
                    if info != known { learnt.remember(info, for: principal) }
                    return credentials
                }
            } catch where error.reason == .clockSkew {
                // The timestamp made on this host's clock was refused. MIT's own exchange corrects the clock from the
                // KDC's error when kdc_timesync is on (the default), and says clock-skew when it is off.
                return try await mitExchange(request, password: password)
            }
        }
        guard configuration.optimisticPreauth && !learnt.refusesOptimistic(principal) else {
            return try await mitExchange(request, password: password)
        }
        return try await optimistic(request, password: password)
    }

    /// MIT's own exchange for the request (its key, if it needs one, made by the stand-in).
    private func mitExchange(_ request: RequestSetup, password: Secret?) async throws(KerberosError) -> Credentials {
        try await session.initialCredentials(try session.onWorker { _ in try request.make(password: password) })
    }

    /// MIT's exchange (its key made by the stand-in); the etype info of its key is learnt when the login succeeds.
    private func learning(_ request: RequestSetup, password: Secret) async throws(KerberosError) -> Credentials {
        let keyInfo = Locked<EncryptionInfo?>(nil)
        var setup = try session.onWorker { _ in try request.make(password: password) }
        setup.onPasswordKey = { info in keyInfo.withLock { $0 = info } }
        let credentials = try await session.initialCredentials(setup)
        if let info = keyInfo.withLock({ $0 }) { learnt.remember(info, for: request.principal) }
        return credentials
    }

    /// MIT's optimistic timestamp with the default salt. A refusal is a wrong password unless the principal's key
    /// takes another salt or enctype than the optimistic key was made for; only then is the login tried again,
    /// with the principal's own etype info, and the principal remembered.
    private func optimistic(_ request: RequestSetup, password: Secret) async throws(KerberosError) -> Credentials {
        let keyInfo = Locked<EncryptionInfo?>(nil)
        var setup = try session.onWorker { _ in try request.make(password: password) }
        setup.options.preauthTypes = [.encryptedTimestamp]
        setup.onPasswordKey = { info in keyInfo.withLock { $0 = info } }
        do {
            return try await session.initialCredentials(setup)
        } catch where error.reason == .badPassword {
            guard let used = keyInfo.withLock({ $0 }) else { throw error }
            let current = try await ask(request)
            guard current.encryptionType != .null, !Self.sameKey(current, used) else { throw error }
            let credentials = try await oneExchange(request, password: password, info: current)
            learnt.refuseOptimistic(request.principal)
            return credentials
        }
    }

    /// Whether two etype infos make the same key from one password (explicit default parameters equal none).
    static func sameKey(_ a: EncryptionInfo, _ b: EncryptionInfo) -> Bool {
        func parameters(_ info: EncryptionInfo) -> [UInt8] {
            info.parameters.isEmpty ? (EncryptionInfo.defaultParameters(info.encryptionType) ?? []) : info.parameters
        }
        return a.encryptionType == b.encryptionType && a.salt == b.salt && parameters(a) == parameters(b)
    }

    /// One exchange with learnt etype info: the key made in process (``StringToKey``) and handed to krb5 through a
    /// MEMORY keytab of this attempt's own (`krb5_init_creds_set_keytab`), wiped by krb5 when its last handle
    /// closes; MIT's password path when the enctype is not one ``StringToKey`` makes or the KDC sent no etype info.
    private func oneExchange(_ request: RequestSetup, password: Secret, info: EncryptionInfo) async throws(KerberosError) -> Credentials {
        let realm = request.client.realm
        // The PBKDF2 is CPU work: it runs here, on the session's worker.
        guard info.allowsOptimisticPreauth, !(request.armored && learnt.refusesArmoredOneExchange(realm)),
              let key = StringToKey.key(password: password, info: info) else {
            return try await mitExchange(request, password: password)
        }
        // Inside FAST the first request carries an encrypted challenge (RFC 6113 section 5.4.6), not the
        // timestamp: Active Directory and Heimdal refuse PA-ENC-TIMESTAMP in an armored request (KDC_ERR_POLICY).
        let preauth: PreauthType = request.armored ? .encryptedChallenge : .encryptedTimestamp
        do {
            return try await oneExchange(request, key: key, info: info, preauth: preauth)
        } catch where request.armored && (error.name == "KRB5KDC_ERR_POLICY" || error.reason == .preauthUnavailable) {
            // A KDC that takes neither in an armored first request: MIT's path, which answers the KDC's own padata.
            // Remembered for the realm once that path worked (a disabled account also answers KDC_ERR_POLICY).
            let credentials = try await mitExchange(request, password: password)
            learnt.refuseArmoredOneExchange(realm)
            return credentials
        }
    }

    private func oneExchange(_ request: RequestSetup, key: Secret, info: EncryptionInfo, preauth: PreauthType) async throws(KerberosError) -> Credentials {
        let setup = try session.onWorker { context in
            var setup = try request.make(password: nil)
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
        return try await session.initialCredentials(setup)
    }

    /// The principal's etype info as the KDC gives it now, asked in a way that counts no failure (armored when the
    /// login is). Not remembered: only a key that worked makes info worth keeping.
    private func ask(_ request: RequestSetup) async throws(KerberosError) -> EncryptionInfo {
        try await session.encryptionInfo(try session.onWorker { _ in try request.makeForEncryptionInfo() })
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
