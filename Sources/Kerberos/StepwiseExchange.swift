import KerberosSecrets
import CKrb5
internal import CStringToKey
#if canImport(Glibc)
internal import Glibc
#endif

/// How a message may be spread over a realm's KDCs (docs/engine.md, "Counted and one-time values").
package enum Delivery: Sendable, Equatable {
    /// Nothing a KDC counts: the same message may go to several KDCs (hedged).
    case hedged
    /// Pre-authentication data a KDC counts against its lockout (an encrypted timestamp or challenge): to one KDC
    /// at a time, the next only after a refusal or a long silence, so a wrong password counts once where KDCs share
    /// their counters.
    case counted
    /// A one-time value (an OTP, any answer a second factor decides): to one KDC at a time, the next only after a
    /// refusal, and a KDC's silence is not held against it (a person may be approving a push).
    case oneTime
}

/// What one krb5 step asks for next.
package enum StepOutcome: Sendable {
    /// Send `request` to a KDC of `realm` and step again with its reply; `tcpOnly` after RESPONSE_TOO_BIG.
    case send(request: [UInt8], realm: String, tcpOnly: Bool, delivery: Delivery)
    /// The exchange is complete.
    case complete
}

/// A krb5 exchange driven one message at a time (`krb5_init_creds_step`, `krb5_tkt_creds_step`).
///
/// Not `Sendable`: it belongs to the context (and so the worker thread) that made it.
package protocol StepwiseExchange: AnyObject {
    /// Feeds the KDC's reply (empty for the first call) and returns what to do next. Never blocks on the network.
    func step(_ reply: [UInt8]) throws -> StepOutcome
    /// The credentials once the exchange is complete.
    func credentials() throws -> Credentials
}

/// What an initial-credentials exchange authenticates with.
package enum InitialKey {
    /// A password (nil: the responder's or the prompter's answer).
    case password(Secret?)
    /// A key from a keytab.
    case keytab(Keytab)
}

/// An AS exchange: `krb5_init_creds_init` with the options of an ``InitialCredentialsRequest``, then steps.
///
/// The corresponding C type is `krb5_init_creds_context`, freed with `krb5_init_creds_free`.
package final class InitialCredentialsExchange: StepwiseExchange {
    let context: Context
    let request: InitialCredentialsRequest
    let client: Principal
    /// What the last step that made a password key asked for: the enctype, salt and parameters MIT passed to the
    /// string-to-key (CStringToKey records them), that is the KDC's etype info as this exchange received it.
    package private(set) var passwordKeyRequest: EncryptionInfo?
    /// How the last request made was to be delivered (a resend over TCP keeps it).
    private var lastDelivery = Delivery.hedged
    /// Told ``passwordKeyRequest`` after each step that made a password key.
    private let onPasswordKey: ((EncryptionInfo) -> Void)?
    private let raw: OpaquePointer

    /// Starts an exchange. `options.armor` must already be a cache (``Armor/cache(_:)`` or ``Armor/cacheName(_:)``):
    /// fetching armor is an exchange of its own, which the caller runs first.
    ///
    /// The corresponding C functions are `krb5_init_creds_init`, `krb5_init_creds_set_service`,
    /// `krb5_init_creds_set_password` (krb5 keeps its own copy of the password, wiped when freed) and
    /// `krb5_init_creds_set_keytab`.
    package init(context: Context, client: Principal, key: InitialKey, options: InitialCredentialsOptions,
         onPasswordKey: ((EncryptionInfo) -> Void)? = nil) throws {
        if case .password(let password?) = key, password.containsNUL {
            throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "The password contains a NUL byte", reason: .invalidRequest)
        }
        self.context = context
        self.client = client
        self.onPasswordKey = onPasswordKey
        let request = try InitialCredentialsRequest(context: context, client: client, options: options)
        self.request = request
        var handle: OpaquePointer?
        try context.check(krb5_init_creds_init(context.raw, client.raw, request.state.hasPrompter ? prompterTrampoline : nil,
                                               request.state.opaque, request.startTime, request.opt, &handle))
        guard let handle else { throw KerberosError(code: Int32(ENOMEM), message: "krb5_init_creds_init returned no context", reason: .other) }
        raw = handle
        do {
            if let service = request.service { try context.check(krb5_init_creds_set_service(context.raw, raw, service)) }
            switch key {
            case .password(let password?):
                let code = password.withCString { krb5_init_creds_set_password(context.raw, raw, $0) }
                try context.check(code)
            case .password(nil):
                break
            case .keytab(let keytab):
                try context.check(krb5_init_creds_set_keytab(context.raw, raw, keytab.raw))
            }
        } catch {
            krb5_init_creds_free(context.raw, raw)
            throw error
        }
    }

    deinit {
        krb5_init_creds_free(context.raw, raw)
    }

    /// The corresponding C function is `krb5_init_creds_step`; it runs the prompter and responder when the
    /// KDC's reply asks questions, and string-to-key and decryption; it never sends.
    package func step(_ reply: [UInt8]) throws -> StepOutcome {
        try step(reply, questionOnly: false)
    }

    /// A step that stops where MIT would make the password key: the KDC's reply (PREAUTH_REQUIRED, inside FAST when
    /// armored, or an AS-REP) has told which enctype, salt and parameters the key takes, and nothing that carries
    /// the key is made or sent, so the KDC counts no failure. Returns them; nil when the step made no key (a KDC
    /// that offered only other mechanisms). Throws the KDC's error (an unknown principal, a disabled account).
    package func encryptionInfo(fromReply reply: [UInt8]) throws -> (info: EncryptionInfo?, outcome: StepOutcome?) {
        do {
            let outcome = try step(reply, questionOnly: true)
            return (passwordKeyRequest, outcome)
        } catch {
            if let info = passwordKeyRequest { return (info, nil) }
            throw error
        }
    }

    private func step(_ reply: [UInt8], questionOnly: Bool) throws -> StepOutcome {
        s2k_begin_step(questionOnly ? 1 : 0)
        defer {
            var asked = s2k_request()
            if s2k_end_step(&asked) == 1 {
                let info = withUnsafeBytes(of: asked.salt) { salt in
                    withUnsafeBytes(of: asked.parameters) { parameters in
                        EncryptionInfo(encryptionType: EncryptionType(rawValue: asked.enctype), salt: Array(salt.prefix(asked.saltLength)),
                                       parameters: Array(parameters.prefix(asked.parametersLength)))
                    }
                }
                passwordKeyRequest = info
                if !questionOnly { onPasswordKey?(info) }
            }
        }
        request.state.answeredOneTimeValue = false
        let outcome = try withExtendedLifetime(request) {
            try runStep(context: context, reply: reply, state: request.state) { input, output, realm, flags in
                krb5_init_creds_step(context.raw, raw, input, output, realm, flags)
            }
        }
        guard case .send(let message, let realm, let tcpOnly, _) = outcome else { return outcome }
        // The first request carries pre-authentication only when the options put it there (optimistic or learnt);
        // every later one answers the KDC (PREAUTH_REQUIRED, a clock correction) and may carry it. A resend over TCP
        // is the same message.
        if !tcpOnly {
            lastDelivery = request.state.answeredOneTimeValue ? .oneTime
                : (!reply.isEmpty || request.hasPreauthTypes) ? .counted : .hedged
        }
        return .send(request: message, realm: realm, tcpOnly: tcpOnly, delivery: lastDelivery)
    }

    /// The corresponding C function is `krb5_init_creds_get_creds`.
    package func credentials() throws -> Credentials {
        var creds = krb5_creds()
        try context.check(krb5_init_creds_get_creds(context.raw, raw, &creds))
        return Credentials(takingOwnershipOf: creds, context: context)
    }
}

/// A TGS exchange for a service ticket with a TGT: `krb5_tkt_creds_init`, then steps.
///
/// The corresponding C type is `krb5_tkt_creds_context`, freed with `krb5_tkt_creds_free`.
package final class ServiceTicketExchange: StepwiseExchange {
    let context: Context
    private let cache: CredentialCache
    private let raw: OpaquePointer

    /// Starts a request for a ticket to `server` with `ticketGrantingTicket`, kept in a private MEMORY cache.
    ///
    /// The corresponding C function is `krb5_tkt_creds_init` (it copies the input credentials).
    package init(context: Context, ticketGrantingTicket: Credentials, server: Principal) throws {
        self.context = context
        let cache = try CredentialCache.newUnique(in: context)
        self.cache = cache
        guard let clientName = ticketGrantingTicket.raw.client else {
            throw KerberosError(code: Int32(KRB5_NO_TKT_SUPPLIED), message: "The credentials have no client", reason: .invalidRequest)
        }
        do {
            try context.check(krb5_cc_initialize(context.raw, cache.raw, clientName))
            try cache.store(ticketGrantingTicket)
        } catch {
            try? cache.destroy()
            throw error
        }
        var input = krb5_creds()
        input.client = clientName
        input.server = server.raw
        var handle: OpaquePointer?
        let code = withExtendedLifetime((ticketGrantingTicket, server)) {
            krb5_tkt_creds_init(context.raw, cache.raw, &input, 0, &handle)
        }
        guard code == 0, let handle else {
            let error = code == 0 ? KerberosError(code: Int32(ENOMEM), message: "krb5_tkt_creds_init returned no context", reason: .other) : context.error(code)
            try? cache.destroy()  // a MEMORY cache outlives its handle; the TGT copy goes now
            throw error
        }
        raw = handle
    }

    deinit {
        krb5_tkt_creds_free(context.raw, raw)
        try? cache.destroy()
    }

    /// The corresponding C function is `krb5_tkt_creds_step`.
    package func step(_ reply: [UInt8]) throws -> StepOutcome {
        try runStep(context: context, reply: reply, state: nil) { input, output, realm, flags in
            krb5_tkt_creds_step(context.raw, raw, input, output, realm, flags)
        }
    }

    /// The corresponding C function is `krb5_tkt_creds_get_creds`.
    package func credentials() throws -> Credentials {
        var creds = krb5_creds()
        try context.check(krb5_tkt_creds_get_creds(context.raw, raw, &creds))
        return Credentials(takingOwnershipOf: creds, context: context)
    }
}

/// One `*_step` call: hands krb5 the reply, frees what it returns on every path, and maps its answer.
private func runStep(context: Context, reply: [UInt8], state: CallbackState?,
                     _ call: (UnsafeMutablePointer<krb5_data>, UnsafeMutablePointer<krb5_data>, UnsafeMutablePointer<krb5_data>, UnsafeMutablePointer<UInt32>) -> krb5_error_code) throws -> StepOutcome {
    var output = krb5_data()
    var realm = krb5_data()
    var flags: UInt32 = 0
    defer {
        krb5_free_data_contents(context.raw, &output)
        krb5_free_data_contents(context.raw, &realm)
    }
    let code: krb5_error_code = reply.withUnsafeBytes { bytes in
        var input = krb5_data(magic: 0, length: UInt32(bytes.count),
                              data: UnsafeMutablePointer(mutating: bytes.baseAddress?.assumingMemoryBound(to: CChar.self)))
        return call(&input, &output, &realm, &flags)
    }
    if let error = state?.thrownError {
        if let kerberosError = error as? KerberosError { throw kerberosError }
        throw error
    }
    let tooBig = Int(code) == KRB5KRB_ERR_RESPONSE_TOO_BIG
    if !tooBig { try context.check(code) }
    guard tooBig || flags & UInt32(KRB5_INIT_CREDS_STEP_FLAG_CONTINUE) != 0 else { return .complete }
    return .send(request: Array(output.buffer), realm: String(krb5Data: realm), tcpOnly: tooBig, delivery: .hedged)
}

extension Context {
    /// Checks a service ticket against the key in `keytab`, as `krb5_verify_init_creds` does after its TGS
    /// exchange: an AP-REQ made with the ticket must be accepted by `server`'s key. No network.
    ///
    /// The corresponding C functions are `krb5_mk_req_extended` and `krb5_rd_req` (with the replay cache off).
    package func checkServiceTicket(_ ticket: Credentials, server: Principal, keytab: Keytab) throws(KerberosError) {
        var sender: krb5_auth_context?
        var apReq = krb5_data()
        try check(krb5_mk_req_extended(raw, &sender, 0, nil, &ticket.raw, &apReq), reason: .verificationFailed)
        defer {
            krb5_free_data_contents(raw, &apReq)
            krb5_auth_con_free(raw, sender)
        }
        var receiver: krb5_auth_context?
        try check(krb5_auth_con_init(raw, &receiver))
        defer { krb5_auth_con_free(raw, receiver) }
        krb5_auth_con_setflags(raw, receiver, 0)
        let code = withExtendedLifetime((server, keytab)) { krb5_rd_req(raw, &receiver, &apReq, server.raw, keytab.raw, nil, nil) }
        if code != 0 { throw error(code, reason: .verificationFailed) }
    }

    /// Whether `keytab` holds a key for `server`.
    ///
    /// The corresponding C function is `krb5_kt_get_entry`.
    package func keytabHasKey(_ keytab: Keytab, for server: Principal) -> Bool {
        var entry = krb5_keytab_entry()
        guard krb5_kt_get_entry(raw, keytab.raw, server.raw, 0, 0, &entry) == 0 else { return false }
        krb5_free_keytab_entry_contents(raw, &entry)
        return true
    }
}
