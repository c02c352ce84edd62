import Kerberos
import KerberosEngine
import LoginProtocol

/// One login, or one replay of a conversation's login, as one synchronous run on the session's worker: the name
/// (parsed once) → armor → the key → every `krb5_init_creds_step` → verification → the cache, each a plain call
/// with the worker's context. It leaves the worker only to send a KDC message (``KerberosSession``), and ends with
/// the result or the questions still open (``LoginStep``); the whole is bounded by the session's deadline.
///
/// The orchestration only; the parts are ``ArmorProvider`` (FAST armor and its fallback), ``RequestSetup``
/// (the request and its callbacks, answered by ``AnswerMapping``) and ``PasswordFastPath`` (learnt etype info,
/// optimistic preauth).
struct LoginExchange {
    let session: KerberosSession
    /// The service's configuration (applied to the client's realm once it is known).
    let configuration: LoginConfiguration
    let names: LoginNames
    let conversation: LoginConversation
    let learnt: LearntPreauth
    /// A login that can answer nothing but the password (saslauthd): no question will follow.
    let passwordOnly: Bool
    /// Whether a login with a password uses and keeps the principal's learnt etype info (``PasswordFastPath``):
    /// password-only logins, which many of the same users repeat. (`krb5-login`'s one login per process has none.)
    var learnsEtypeInfo: Bool { passwordOnly }

    /// Runs on the session's worker (``KerberosClient/withSession(timeout:_:)``).
    func run() async -> LoginStep {
        let context: Context, client: Principal
        do throws(KerberosError) {
            context = try session.context()
        } catch {
            return .finished(.failed(LoginResult.Failure(error.reason), AnswerMapping.message(for: error), principal: conversation.principal), info: [])
        }
        // The name is parsed once for the whole login, as the name checks parse it (an enterprise name stays one).
        do throws(LoginRefusal) { client = try names.client(conversation.principal, in: context) } catch { return .finished(error.result, info: []) }
        let name = client.name(), realm = client.realm
        var configuration = configuration.applying(realm: realm)
        // A session's cache needs a ticket-granting ticket, not the AS's ticket for the verifying service.
        if conversation.wantsCredentials { configuration.directVerificationTicket = false }
        let armor = ArmorProvider(session: session, configuration: configuration)
        let notes = AttemptNotes()
        do throws(KerberosError) {
            let request = RequestSetup(context: context, configuration: configuration, client: client, principal: name, conversation: conversation,
                                       armored: try await armor.prepare(for: client), notes: notes)
            let credentials: Credentials
            do throws(KerberosError) {
                credentials = try await initialCredentials(request, configuration: configuration, notes: notes)
            } catch {
                if !notes.missing.isEmpty { return .questions(id: conversation.await(notes.missing), notes.missing, info: notes.info) }
                throw error
            }
            // The ticket must be for the principal asked for (or the KDC's canonical spelling of it when
            // canonicalization was asked for), whatever the KDC chose to answer.
            let issued = try session.onWorker { _ in try credentials.client.name() }
            if ExactName(issued) != ExactName(name) && !(configuration.canonicalize || configuration.enterpriseNames) {
                return .finished(.failed(.badCredentials, "The KDC issued credentials for \(issued), not \(name)", principal: name), info: notes.info)
            }
            if configuration.verify { try await verify(credentials, configuration: configuration) }
            let (expires, image) = try store(credentials, in: configuration.outputCache)
            var result = LoginResult.success(principal: issued, verified: configuration.verify, expires: expires)
            result.credentials = image
            return .finished(result, info: notes.info)
        } catch {
            // A cached armor ticket may be what failed; get a fresh one next time.
            if error.reason == .verificationFailed || error.reason == .kdcUnreachable { armor.discard(realm: realm) }
            return .finished(.failed(LoginResult.Failure(error.reason), AnswerMapping.message(for: error), principal: name), info: notes.info)
        }
    }

    /// The exchange (``PasswordFastPath``), and the change of an expired password (``changeExpiredPassword(_:password:notes:)``).
    private func initialCredentials(_ request: RequestSetup, configuration: LoginConfiguration, notes: AttemptNotes) async throws(KerberosError) -> Credentials {
        let password = conversation.answers.password
        if conversation.changesPassword {
            // Asked for, not forced by the KDC: the same path, with the questions ending attempts the same way.
            let asked = KerberosError(code: -1765328361, message: "A password change was asked for", reason: .passwordExpired)  // KRB5KDC_ERR_KEY_EXP
            return try await changeExpiredPassword(request, password: password, expired: asked, notes: notes, banner: nil)
        }
        let fastPath = PasswordFastPath(session: session, configuration: configuration, learnt: learnt, learnsEtypeInfo: learnsEtypeInfo)
        do {
            return try await fastPath.exchange(request, password: password)
        } catch where error.reason == .passwordExpired && error.name == "KRB5KDC_ERR_KEY_EXP" && !passwordOnly {
            // (A password-only login cannot answer the new-password questions: it ends as password-expired.)
            return try await changeExpiredPassword(request, password: password, expired: error, notes: notes, banner: "Password expired.  You must change it now.")
        }
    }

    /// What MIT's `krb5_get_init_creds_password` does on an expired password, on the engine: a `kadmin/changepw`
    /// ticket with the old password (which proves it), the new password asked twice (in this replay, the questions
    /// end the attempt until both answers are there), the kpasswd exchange, then the login with the new password.
    /// Prompts and banner are MIT's.
    /// A change the client asked for (``LoginConversation/changesPassword``) takes the same path without the banner.
    private func changeExpiredPassword(_ request: RequestSetup, password: Secret?, expired: KerberosError, notes: AttemptNotes,
                                       banner: String?) async throws(KerberosError) -> Credentials {
        guard let password else {
            notes.need([.password(prompt: "Password for \(conversation.principal)")])
            throw expired
        }
        let ticket = try await session.passwordChangeTicket(try session.onWorker { _ in try request.make(password: password) })
        let answers = conversation.answers
        guard let newPassword = answers.newPassword, let again = answers.newPasswordAgain else {
            if let banner { notes.add(info: banner) }
            notes.need([.newPassword(prompt: "Enter new password"), .newPasswordAgain(prompt: "Enter it again")])
            throw expired
        }
        guard newPassword.constantTimeEquals(again) else {
            throw KerberosError(code: -1765328253, message: "The new password and its confirmation differ", reason: .passwordExpired)  // KRB5_LIBOS_BADPWDMATCH
        }
        let result = try await session.changePassword(with: ticket, newPassword: newPassword)
        guard result.succeeded else {
            let reason = result.message.isEmpty ? result.codeText : "\(result.codeText): \(result.message)"
            throw KerberosError(code: -1765328150, message: "The password could not be changed: \(reason)", reason: .passwordExpired)  // KRB5_CHPW_FAIL
        }
        return try await session.initialCredentials(try session.onWorker { _ in try request.make(password: newPassword) })
    }

    /// Verification with nofail against the keytab.
    private func verify(_ credentials: Credentials, configuration: LoginConfiguration) async throws(KerberosError) {
        let options = try session.onWorker { context in
            VerificationOptions(server: try VerificationTarget.server(configuration, context), keytab: try VerificationTarget.keytab(configuration, context), nofail: true)
        }
        _ = try await session.verify(credentials, options: options)
    }

    /// Stores the credentials in `outputCache` when one is configured; returns when the ticket expires and, when
    /// the conversation asked for them, the credentials as a cache file's bytes.
    private func store(_ credentials: Credentials, in outputCache: String?) throws(KerberosError) -> (KerberosTime, Secret?) {
        let wantsCredentials = conversation.wantsCredentials
        return try session.onWorker { context in
            if let name = outputCache {
                let cache = try CredentialCache(resolving: name, in: context)
                try cache.initialize(for: credentials.client)
                try cache.store(credentials)
            }
            return (credentials.endTime, wantsCredentials ? try credentials.fileCacheImage() : nil)
        }
    }
}
