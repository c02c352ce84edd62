import KerberosSecrets
internal import CKrb5
internal import NIOCore

/// One login on one worker: its code runs on the worker's thread (the session's ``executor`` is the task's
/// executor preference), so the name, the armor, the key, every `krb5_init_creds_step`, the verification and the
/// cache are plain synchronous calls with the worker's context, and the krb5 objects they make stay local values of
/// the login's task. The one thing that leaves the worker is a KDC message: ``send(_:realm:tcpOnly:delivery:primaryOnly:)``
/// hands it to the event loop and suspends, holding no thread, until the reply, which resumes the login on its worker:
/// two hops per KDC message, there and back.
///
/// Every call is bounded by the session's deadline.
package struct KerberosSession: Sendable {
    let client: KerberosClient
    let worker: ContextWorker
    /// Where the login's code runs: the worker's thread, or the one-shot client's loop (its worker runs inline there).
    package let executor: any TaskExecutor
    /// When the login's answer is due.
    let deadline: NIODeadline
    let timeout: Duration

    /// The worker's context, for the login's code (which runs on the worker). Throws when called elsewhere, which is
    /// where a login goes on after the client shut down.
    package func context() throws(KerberosError) -> Context {
        try worker.context()
    }

    /// `body` with the worker's context, its errors as `KerberosError`s. Synchronous: the login already runs on
    /// the worker.
    package func onWorker<T>(_ body: (Context) throws -> T) throws(KerberosError) -> T {
        let context = try context()
        do { return try body(context) } catch { throw KerberosError(wrapping: error) }
    }

    // MARK: KDC messages

    /// A realm named in the timeout message, once known.
    private func timedOut(_ realm: String?) -> @Sendable () -> KerberosError {
        let timeout = self.timeout
        return { KerberosError.loginTimedOut(realm: realm, timeout: timeout) }
    }

    /// Sends one message to `realm`'s KDCs and awaits the first reply.
    func send(_ message: [UInt8], realm: String, tcpOnly: Bool, delivery: Delivery = .hedged, primaryOnly: Bool) async throws(KerberosError) -> KDCReply {
        let resolved = try await client.location(of: realm, session: self)
        let transport = client.transport
        let targets = transport.order(resolved.targets, primaryOnly: primaryOnly)
        guard !targets.isEmpty else {
            throw KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "No \(primaryOnly ? "primary " : "")KDC is configured for realm '\(realm)'", reason: .kdcUnreachable)
        }
        return try await transmit(Array(repeating: message, count: targets.count), to: targets, kind: .kdc,
                                  udpPreferenceLimit: resolved.location.udpPreferenceLimit, tcpOnly: tcpOnly, delivery: delivery, realm: realm)
    }

    /// Sends `messages[i]` to `targets[i]` on the transport (``KDCTransport``) and awaits the first reply of `kind`,
    /// under the session's deadline: the one way KDC, kpasswd and DNS messages leave.
    func transmit(_ messages: [[UInt8]], to targets: [KDCTarget], kind: ReplyKind, udpPreferenceLimit: Int, tcpOnly: Bool,
                  delivery: Delivery = .hedged, realm: String) async throws(KerberosError) -> KDCReply {
        let transport = client.transport
        return try await awaitStep(deadline: deadline, loop: client.group.next(), onTimeout: timedOut(realm)) { resumer in
            transport.send(messages, to: targets, kind: kind, udpPreferenceLimit: udpPreferenceLimit, tcpOnly: tcpOnly, delivery: delivery,
                           realm: realm, resumer: resumer)
        }
    }

    /// Which KDCs answered an exchange.
    final class Trace {
        var realm: String?
        var answeredByReplica = false
    }

    /// Drives a stepwise exchange to completion: each step on the worker, each message it asks for through
    /// ``send(_:realm:tcpOnly:delivery:primaryOnly:)``. With `realms`, a message for any other realm (a referral's)
    /// fails the exchange before it is sent.
    func drive(_ exchange: some StepwiseExchange, primaryOnly: Bool, trace: Trace, realms: Set<[UInt8]>? = nil) async throws(KerberosError) -> Credentials {
        var outcome = try onWorker { _ in try exchange.step([]) }
        while case .send(let request, let realm, let tcpOnly, let delivery) = outcome {
            if let realms, !realms.contains(Array(realm.utf8)) {
                throw KerberosError(code: Int32(KRB5KDC_ERR_WRONG_REALM), message: "The KDC referred the login to realm \"\(realm)\", which is not allowed",
                                    reason: .unknownPrincipal)
            }
            trace.realm = realm
            let answer = try await send(request, realm: realm, tcpOnly: tcpOnly, delivery: delivery, primaryOnly: primaryOnly)
            if !answer.kdc.isPrimary { trace.answeredByReplica = true }
            outcome = try onWorker { _ in try exchange.step(answer.bytes) }
        }
        return try onWorker { _ in try exchange.credentials() }
    }

    // MARK: Initial credentials

    /// Gets initial credentials for `setup`, first fetching FAST armor when its options ask for anonymous-PKINIT or
    /// keytab armor, and retrying on a primary KDC after a failure answered by a replica (MIT's `use_primary`).
    package func initialCredentials(_ setup: InitialCredentialsSetup) async throws(KerberosError) -> Credentials {
        let armor = try await armorCache(for: setup)
        let trace = Trace()
        do {
            return try await exchange(setup, armor: armor, primaryOnly: false, trace: trace)
        } catch {
            guard Self.retriesOnPrimary(error), trace.answeredByReplica, let realm = trace.realm,
                  (try? await client.location(of: realm, session: self))?.location.hasPrimary == true else { throw error }
            do {
                return try await exchange(setup, armor: armor, primaryOnly: true, trace: Trace())
            } catch let primaryError {
                // The primary unreachable (but time left): the replica's answer stands, as in MIT's gic_pwd.c.
                if primaryError.code == Int32(KRB5_KDC_UNREACH) && deadline > .now() { throw error }
                throw primaryError
            }
        }
    }

    /// The exchange of `setup`, armored with `armor` when one was fetched.
    private func exchange(_ setup: InitialCredentialsSetup, armor: CredentialCache?, primaryOnly: Bool, trace: Trace) async throws(KerberosError) -> Credentials {
        var options = setup.options
        options.armor = Self.armor(fetched: armor, configured: options.armor)
        let exchange = try onWorker { context in
            try InitialCredentialsExchange(context: context, client: setup.client, key: setup.key, options: options, onPasswordKey: setup.onPasswordKey)
        }
        // The name's own realm, and those a referral may lead to (Configuration.referralRealms).
        let realms = client.configuration.referralRealms.map { Set($0.map { Array($0.utf8) }).union([Array(setup.client.realm.utf8)]) }
        // The setup's attachments (a key's guard) live until the exchange's last step.
        defer { withExtendedLifetime(setup.attachments) {} }
        return try await drive(exchange, primaryOnly: primaryOnly, trace: trace, realms: realms)
    }

    /// The armor an exchange uses: the cache ``armorCache(for:)`` fetched, else a cache the options name, else none
    /// (anonymous PKINIT or keytab armor that could not be had).
    private static func armor(fetched: CredentialCache?, configured: Armor?) -> Armor? {
        switch (fetched, configured) {
        case (let fetched?, _): .cache(fetched)
        case (nil, .anonymousPKINIT?), (nil, .keytab?): nil
        default: configured
        }
    }

    /// Fetches the armor ticket `setup`'s options ask for (`Armor.ticketRequest(for:login:in:)`) into its MEMORY
    /// cache; nil when the options name a cache or no armor, or when none could be had and the login may go on
    /// without (`Armor.proceedsUnarmored(after:fastRequired:)`).
    private func armorCache(for setup: InitialCredentialsSetup) async throws(KerberosError) -> CredentialCache? {
        guard let request = try onWorker({ context in try setup.options.armor?.ticketRequest(for: setup.client, login: setup.options, in: context) }) else {
            return nil
        }
        do {
            _ = try await exchange(request.setup, armor: nil, primaryOnly: false, trace: Trace())
            return request.cache
        } catch {
            guard Armor.proceedsUnarmored(after: error, fastRequired: setup.options.fastRequired) else { throw error }
            return nil
        }
    }

    /// Asks the KDC which enctype, salt and string-to-key parameters it uses for the setup's client, without
    /// sending anything that carries a key, so the KDC counts no failure: MIT's own exchange with the setup's options
    /// and armor, stopped where it would make the password key (`InitialCredentialsExchange.encryptionInfo(fromReply:)`).
    /// Armored when the setup is, so the answer comes inside FAST, where no one on the path can change it.
    ///
    /// Returns `EncryptionType.null` info when the KDC's answer needs no password key (it offered only other
    /// mechanisms); throws the KDC's error for an unknown principal or a disabled account.
    package func encryptionInfo(_ setup: InitialCredentialsSetup) async throws(KerberosError) -> EncryptionInfo {
        let armor = try await armorCache(for: setup)
        var options = setup.options
        options.responder = nil
        options.prompter = nil
        options.preauthTypes = nil
        options.armor = Self.armor(fetched: armor, configured: options.armor)
        // A password krb5 never turns into a key: the step stops where it would.
        let exchange = try onWorker { context in try InitialCredentialsExchange(context: context, client: setup.client, key: .password(Secret("")), options: options) }
        var outcome = try onWorker { _ in try exchange.step([]) }
        // At most one resend over TCP (RESPONSE_TOO_BIG), as MIT's loop makes it.
        for _ in 0..<2 {
            guard case .send(let request, let realm, let tcpOnly, _) = outcome else { break }
            let reply = try await send(request, realm: realm, tcpOnly: tcpOnly, primaryOnly: false).bytes
            let (info, next) = try onWorker { _ in try exchange.encryptionInfo(fromReply: reply) }
            if let info { return info }
            guard let next, case .send(_, _, true, _) = next else { break }
            outcome = next
        }
        return EncryptionInfo(encryptionType: .null, salt: Array((setup.client.realm + setup.client.components.joined()).utf8), parameters: [])
    }

    /// MIT retries on the primary for anything but unreachable KDCs and an interrupted prompter.
    static func retriesOnPrimary(_ error: KerberosError) -> Bool {
        switch Int(error.code) {
        case KRB5_KDC_UNREACH, KRB5_REALM_CANT_RESOLVE, KRB5_REALM_UNKNOWN, KRB5_LIBOS_PWDINTR, KRB5_LIBOS_CANTREADPWD: false
        default: error.reason != .cancelled && error.reason != .invalidRequest
        }
    }

    // MARK: Password change

    /// A ticket for `kadmin/changepw` with the old password that `setup` carries, as MIT's
    /// `krb5_get_init_creds_password` asks for one on an expired password: 5 minutes, neither renewable,
    /// forwardable nor proxiable, not canonicalized, with the login's armor. Getting it proves the old password.
    package func passwordChangeTicket(_ setup: InitialCredentialsSetup) async throws(KerberosError) -> Credentials {
        var setup = setup
        setup.options.service = "kadmin/changepw@\(setup.client.realm)"
        setup.options.ticketLifetime = .seconds(300)
        setup.options.renewLifetime = .zero
        setup.options.forwardable = false
        setup.options.proxiable = false
        setup.options.canonicalize = nil
        setup.options.prompter = nil
        setup.options.responder = nil
        setup.options.expireCallback = nil
        return try await initialCredentials(setup)
    }

    /// Changes the password of `ticket`'s client to `newPassword` through kpasswd (``PasswordChangeExchange``): the
    /// requests are built and the reply read on the worker; the messages go to the realm's kpasswd servers with the
    /// failover of KDC messages.
    ///
    /// Returns what the server answered: a refusal (a password the policy rejects) is a result, not a throw.
    package func changePassword(with ticket: Credentials, newPassword: Secret) async throws(KerberosError) -> PasswordChangeResult {
        let realm = try onWorker { _ in try ticket.client.realm }
        let resolved = try await client.location(of: realm, role: .passwordChange, session: self)
        let targets = client.transport.order(resolved.targets, primaryOnly: false)
        let exchange = try onWorker { context in try PasswordChangeExchange(context: context, ticket: ticket) }
        // One request per server: each carries this host's address on the route to that server.
        let requests = try onWorker { _ in
            try targets.compactMap { target -> (KDCTarget, [UInt8])? in
                guard let local = target.localAddress else { return nil }
                return (target, try exchange.request(newPassword: newPassword, localAddress: local))
            }
        }
        guard !requests.isEmpty else {
            throw KerberosError(code: Int32(KRB5_KDC_UNREACH), message: "No kpasswd server of realm '\(realm)' can be reached", reason: .kdcUnreachable)
        }
        let bytes = try await transmit(requests.map(\.1), to: requests.map(\.0), kind: .passwordChange,
                                       udpPreferenceLimit: resolved.location.udpPreferenceLimit, tcpOnly: false, realm: realm).bytes
        return try onWorker { _ in try exchange.readReply(bytes) }
    }

    // MARK: Verification

    /// Verifies `credentials` as `krb5_verify_init_creds` does, without blocking: a service ticket for the server (a
    /// TGS exchange; none when the credentials already are a ticket for it), then `krb5_rd_req` with the keytab.
    /// Returns whether the check ran: false only when `nofail` is off and the keytab has no usable key.
    package func verify(_ credentials: Credentials, options: VerificationOptions) async throws(KerberosError) -> Bool {
        if options.nofail, let server = options.server, try onWorker({ _ in credentials.isTicket(for: server) }) {
            // The credentials are a ticket for the named server (the direct verification ticket), and a missing key fails
            // with nofail anyway: `krb5_rd_req` is the whole check, without a look into the keytab before it.
            try onWorker { context in try context.checkServiceTicket(credentials, server: server, keytab: options.keytab ?? Keytab.default(in: context)) }
            return true
        }
        let plan = try onWorker { context in try VerificationPlan(context: context, credentials: credentials, options: options) }
        guard !plan.servers.isEmpty else {
            if options.nofail {
                throw KerberosError(code: Int32(KRB5_KT_NOTFOUND), message: "No key in the keytab to verify the credentials with", reason: .verificationFailed)
            }
            return false
        }
        var lastFailure: KerberosError?
        for server in plan.servers {
            do {
                if try onWorker({ _ in credentials.isTicket(for: server) }) {
                    // A ticket for the server itself (the direct verification ticket) needs no TGS exchange.
                    try onWorker { context in try context.checkServiceTicket(credentials, server: server, keytab: plan.keytab) }
                } else {
                    let exchange = try onWorker { context in try ServiceTicketExchange(context: context, ticketGrantingTicket: credentials, server: server) }
                    let ticket = try await drive(exchange, primaryOnly: false, trace: Trace())
                    try onWorker { context in try context.checkServiceTicket(ticket, server: server, keytab: plan.keytab) }
                }
                return true
            } catch {
                if error.reason == .kdcUnreachable || error.reason == .cancelled { throw error }
                lastFailure = error
            }
        }
        let failure = lastFailure ?? KerberosError(code: Int32(KRB5_KT_NOTFOUND), message: "No server to verify the credentials with", reason: .verificationFailed)
        throw failure.reason == .verificationFailed ? failure : KerberosError(code: failure.code, message: failure.message, reason: .verificationFailed)
    }
}

/// The servers a verification tries and the keytab it checks with; made on the worker.
final class VerificationPlan {
    let keytab: Keytab
    let servers: [Principal]

    init(context: Context, credentials: Credentials, options: VerificationOptions) throws {
        keytab = try options.keytab ?? Keytab.default(in: context)
        if let server = options.server {
            servers = context.keytabHasKey(keytab, for: server) ? [server] : []
        } else {
            // MIT: every host principal with a key in the keytab, each once (by its bytes: canonically equivalent
            // spellings are different principals to krb5).
            var seen: Set<[UInt8]> = []
            var found: [Principal] = []
            for entry in (try? keytab.entries()) ?? [] where seen.insert(Array(entry.principal.utf8)).inserted {
                guard let principal = try? Principal(parsing: entry.principal, in: context), principal.components.first == "host" else { continue }
                found.append(principal)
            }
            servers = found
        }
    }
}
