import KerberosSecrets
internal import CKrb5
#if canImport(Glibc)
internal import Glibc
#endif

/// What one krb5 step asks for next.
enum StepOutcome: Sendable {
    /// Send `request` to a KDC of `realm` and step again with its reply; `tcpOnly` after RESPONSE_TOO_BIG.
    case send(request: [UInt8], realm: String, tcpOnly: Bool)
    /// The exchange is complete.
    case complete
}

/// A krb5 exchange driven one message at a time (`krb5_init_creds_step`, `krb5_tkt_creds_step`).
///
/// Not `Sendable`: it belongs to the context (and so the worker thread) that made it.
protocol StepwiseExchange: AnyObject {
    /// Feeds the KDC's reply (empty for the first call) and returns what to do next. Never blocks on the network.
    func step(_ reply: [UInt8]) throws -> StepOutcome
    /// The credentials once the exchange is complete.
    func credentials() throws -> Credentials
}

/// What an initial-credentials exchange authenticates with.
enum InitialKey {
    /// A password (nil: the responder's or the prompter's answer).
    case password(Secret?)
    /// A key from a keytab.
    case keytab(Keytab)
}

/// An AS exchange: `krb5_init_creds_init` with the options of an ``InitialCredentialsRequest``, then steps.
///
/// The corresponding C type is `krb5_init_creds_context`, freed with `krb5_init_creds_free`.
final class InitialCredentialsExchange: StepwiseExchange {
    let context: Context
    let request: InitialCredentialsRequest
    let client: Principal
    private let raw: OpaquePointer

    /// Starts an exchange. `options.armor` must already be a cache (``Armor/cache(_:)`` or ``Armor/cacheName(_:)``):
    /// fetching armor is an exchange of its own, which the caller runs first.
    ///
    /// The corresponding C functions are `krb5_init_creds_init`, `krb5_init_creds_set_service`,
    /// `krb5_init_creds_set_password` (krb5 keeps its own copy of the password, wiped when freed) and
    /// `krb5_init_creds_set_keytab`.
    init(context: Context, client: Principal, key: InitialKey, options: InitialCredentialsOptions) throws {
        if case .password(let password?) = key, password.containsNUL {
            throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "The password contains a NUL byte", reason: .invalidRequest)
        }
        self.context = context
        self.client = client
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
    func step(_ reply: [UInt8]) throws -> StepOutcome {
        try withExtendedLifetime(request) {
            try runStep(context: context, reply: reply, state: request.state) { input, output, realm, flags in
                krb5_init_creds_step(context.raw, raw, input, output, realm, flags)
            }
        }
    }

    /// The corresponding C function is `krb5_init_creds_get_creds`.
    func credentials() throws -> Credentials {
        var creds = krb5_creds()
        try context.check(krb5_init_creds_get_creds(context.raw, raw, &creds))
        return Credentials(takingOwnershipOf: creds, context: context)
    }
}

/// A TGS exchange for a service ticket with a TGT: `krb5_tkt_creds_init`, then steps.
///
/// The corresponding C type is `krb5_tkt_creds_context`, freed with `krb5_tkt_creds_free`.
final class ServiceTicketExchange: StepwiseExchange {
    let context: Context
    private let cache: CredentialCache
    private let raw: OpaquePointer

    /// Starts a request for a ticket to `server` with `ticketGrantingTicket`, kept in a private MEMORY cache.
    ///
    /// The corresponding C function is `krb5_tkt_creds_init` (it copies the input credentials).
    init(context: Context, ticketGrantingTicket: Credentials, server: Principal) throws {
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
    func step(_ reply: [UInt8]) throws -> StepOutcome {
        try runStep(context: context, reply: reply, state: nil) { input, output, realm, flags in
            krb5_tkt_creds_step(context.raw, raw, input, output, realm, flags)
        }
    }

    /// The corresponding C function is `krb5_tkt_creds_get_creds`.
    func credentials() throws -> Credentials {
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
    return .send(request: Array(output.buffer), realm: String(krb5Data: realm), tcpOnly: tooBig)
}

extension Context {
    /// Checks a service ticket against the key in `keytab`, as `krb5_verify_init_creds` does after its TGS
    /// exchange: an AP-REQ made with the ticket must be accepted by `server`'s key. No network.
    ///
    /// The corresponding C functions are `krb5_mk_req_extended` and `krb5_rd_req` (with the replay cache off).
    func checkServiceTicket(_ ticket: Credentials, server: Principal, keytab: Keytab) throws(KerberosError) {
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
    func keytabHasKey(_ keytab: Keytab, for server: Principal) -> Bool {
        var entry = krb5_keytab_entry()
        guard krb5_kt_get_entry(raw, keytab.raw, server.raw, 0, 0, &entry) == 0 else { return false }
        krb5_free_keytab_entry_contents(raw, &entry)
        return true
    }
}
