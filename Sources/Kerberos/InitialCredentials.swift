public import KerberosSecrets
import CKrb5

/// Everything `krb5_get_init_creds_opt_set_*` can set for one initial-credentials request, plus
/// the start time, the in-ticket service, the prompter and the responder.
///
/// `nil` leaves krb5's default (from `krb5.conf`) in place.
public struct InitialCredentialsOptions {
    /// Requested ticket lifetime (`krb5_get_init_creds_opt_set_tkt_life`); the KDC may clamp it.
    public var ticketLifetime: Duration?
    /// Requested renewable lifetime (`krb5_get_init_creds_opt_set_renew_life`).
    public var renewLifetime: Duration?
    /// Request a forwardable ticket (`krb5_get_init_creds_opt_set_forwardable`).
    public var forwardable: Bool?
    /// Request a proxiable ticket (`krb5_get_init_creds_opt_set_proxiable`).
    public var proxiable: Bool?
    /// Ask the KDC to canonicalize the client name (`krb5_get_init_creds_opt_set_canonicalize`).
    public var canonicalize: Bool?
    /// Request anonymous credentials (`krb5_get_init_creds_opt_set_anonymous`); see ``Context/anonymousCredentials(realm:options:)``.
    public var anonymous: Bool = false
    /// The session-key encryption types to offer, in preference order (`krb5_get_init_creds_opt_set_etype_list`).
    public var encryptionTypes: [EncryptionType]?
    /// Client addresses to put in the ticket (`krb5_get_init_creds_opt_set_address_list`).
    public var addresses: AddressList?
    /// Pre-authentication types to try, in order (`krb5_get_init_creds_opt_set_preauth_list`). Setting
    /// `[.encryptedTimestamp]` makes krb5 send the timestamp in the first request ("optimistic preauth").
    public var preauthTypes: [PreauthType]?
    /// The salt for the password's string-to-key (`krb5_get_init_creds_opt_set_salt`); normally learnt from the KDC.
    public var salt: [UInt8]?
    /// Whether an expired password may be changed through the prompter
    /// (`krb5_get_init_creds_opt_set_change_password_prompt`; krb5's default is yes).
    public var changePasswordPrompt: Bool?
    /// Pre-authentication options, such as `("X509_user_identity", "FILE:cert.pem,key.pem")`
    /// or `("X509_anchors", "FILE:ca.pem")` (`krb5_get_init_creds_opt_set_pa`).
    public var preauthOptions: [(name: String, value: String)] = []
    /// FAST armor for the request (`krb5_get_init_creds_opt_set_fast_ccache` and friends).
    public var armor: Armor?
    /// Fail unless the exchange is protected by FAST (`KRB5_FAST_REQUIRED`).
    public var fastRequired: Bool = false
    /// A cache to read existing credentials and configuration from (`krb5_get_init_creds_opt_set_in_ccache`).
    public var inCache: CredentialCache?
    /// A cache to initialise and store the new credentials in (`krb5_get_init_creds_opt_set_out_ccache`).
    public var outCache: CredentialCache?
    /// Called with the password and account expiry the KDC reports (`krb5_get_init_creds_opt_set_expire_callback`).
    public var expireCallback: ((PasswordExpiry) -> Void)?
    /// Answers the pre-authentication questions of each round (`krb5_get_init_creds_opt_set_responder`).
    public var responder: Responder?
    /// Asks for whatever the responder left unanswered: passwords, pass phrases, a new password.
    public var prompter: Prompter?
    /// Whether to ask the KDC to include a PAC (`krb5_get_init_creds_opt_set_pac_request`).
    public var requestPAC: Bool?
    /// Post-date the ticket: start this long after now.
    public var startTimeOffset: Duration?
    /// The service to request instead of `krbtgt/REALM`, such as `kadmin/changepw`.
    public var service: String?

    /// Options that leave every krb5 default in place.
    public init() {}
}

/// Which addresses go into the ticket.
public enum AddressList: Sendable {
    /// No addresses: the ticket works from anywhere (krb5's usual default).
    case addressless
    /// This host's local addresses (`krb5_os_localaddr`).
    case local
}

/// A pre-authentication type number (`KRB5_PADATA_*`).
public struct PreauthType: RawRepresentable, Hashable, Sendable {
    /// The `KRB5_PADATA_*` number.
    public let rawValue: Int32
    /// A type from its `KRB5_PADATA_*` number, for types without a constant here.
    public init(rawValue: Int32) { self.rawValue = rawValue }
    /// PA-ENC-TIMESTAMP: the password-derived key encrypts the time.
    public static let encryptedTimestamp = PreauthType(rawValue: Int32(KRB5_PADATA_ENC_TIMESTAMP))
    /// PA-ENCRYPTED-CHALLENGE, used inside FAST.
    public static let encryptedChallenge = PreauthType(rawValue: Int32(KRB5_PADATA_ENCRYPTED_CHALLENGE))
    /// PKINIT (PA-PK-AS-REQ).
    public static let pkinit = PreauthType(rawValue: Int32(KRB5_PADATA_PK_AS_REQ))
    /// OTP (PA-OTP-REQUEST).
    public static let otp = PreauthType(rawValue: Int32(KRB5_PADATA_OTP_REQUEST))
    /// SPAKE.
    public static let spake = PreauthType(rawValue: Int32(KRB5_PADATA_SPAKE))
}

/// Where FAST armor comes from.
public enum Armor {
    /// A cache that already holds a TGT usable as armor, by name (`krb5_get_init_creds_opt_set_fast_ccache_name`).
    case cacheName(String)
    /// A cache that already holds an armor TGT (`krb5_get_init_creds_opt_set_fast_ccache`).
    case cache(CredentialCache)
    /// Anonymous PKINIT: the library first gets `WELLKNOWN/ANONYMOUS` credentials for the client's realm
    /// into a private MEMORY cache and arms with them (what `kinit -n` then `kinit -T` does).
    case anonymousPKINIT
    /// A service key: the library first gets a TGT for `principal` (nil: the keytab's first entry) with the
    /// keytab into a private MEMORY cache, as SSSD does with the host keytab.
    case keytab(Keytab, principal: Principal?)
}

/// How the KDC derives a principal's key from its password: what ``Context/encryptionInfo(for:options:)``
/// learns from the etype-info of a "pre-authentication required" reply.
public struct EncryptionInfo: Sendable, Hashable {
    /// The encryption type of the key the KDC will use for the reply; ``EncryptionType/null`` when the
    /// KDC sent no etype-info.
    public var encryptionType: EncryptionType
    /// The string-to-key salt (the default salt, realm and name components, when the KDC sent none).
    public var salt: [UInt8]
    /// The string-to-key parameters (such as an iteration count); empty for the enctype's default.
    public var parameters: [UInt8]

    /// Encryption info with the given members.
    public init(encryptionType: EncryptionType, salt: [UInt8], parameters: [UInt8]) {
        self.encryptionType = encryptionType
        self.salt = salt
        self.parameters = parameters
    }
}

/// Password and account expiry reported in the KDC's reply.
public struct PasswordExpiry: Sendable {
    /// When the password expires, if the KDC said.
    public var passwordExpiration: KerberosTime?
    /// When the account expires, if the KDC said.
    public var accountExpiration: KerberosTime?
    /// Whether the times came from the last-request field (rather than the key-expiration field).
    public var isLastRequest: Bool
}

extension Context {
    /// Gets initial credentials (normally a TGT) with a password.
    ///
    /// With `password` nil, the responder's password question or the prompter asks for it.
    /// The password bytes are handed to krb5 as a C string valid only during the call.
    ///
    /// The corresponding C function is `krb5_get_init_creds_password`.
    /// > Warning: Blocks on the network (and on the prompter). Call from a dedicated thread, such as
    /// > `KerberosExecutor/run(_:)`, never from Swift's cooperative pool or an event loop.
    public func initialCredentials(for client: Principal, password: Secret?, options: InitialCredentialsOptions = InitialCredentialsOptions()) throws -> Credentials {
        if let password, password.containsNUL {
            throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "The password contains a NUL byte", reason: .invalidRequest)
        }
        let request = try InitialCredentialsRequest(context: self, client: client, options: options)
        var creds = krb5_creds()
        let code: krb5_error_code = withExtendedLifetime(request) {
            let call = { (passwordPointer: UnsafePointer<CChar>?) in
                krb5_get_init_creds_password(
                    self.raw, &creds, client.raw, passwordPointer,
                    request.state.hasPrompter ? prompterTrampoline : nil, request.state.opaque,
                    request.startTime, request.service, request.opt)
            }
            if let password { return password.withCString { call($0) } }
            return call(nil)
        }
        try request.finish(code)
        return Credentials(takingOwnershipOf: creds, context: self)
    }

    /// Gets initial credentials with a key from a keytab (a service logging in as itself).
    ///
    /// The corresponding C function is `krb5_get_init_creds_keytab`.
    /// > Warning: Blocks on the network.
    public func initialCredentials(for client: Principal, keytab: Keytab, options: InitialCredentialsOptions = InitialCredentialsOptions()) throws -> Credentials {
        let request = try InitialCredentialsRequest(context: self, client: client, options: options)
        var creds = krb5_creds()
        let code = withExtendedLifetime(request) {
            krb5_get_init_creds_keytab(raw, &creds, client.raw, keytab.raw, request.startTime, request.service, request.opt)
        }
        try request.finish(code)
        return Credentials(takingOwnershipOf: creds, context: self)
    }

    /// Gets anonymous credentials for `realm` (`WELLKNOWN/ANONYMOUS@realm` as the client, shown as
    /// `WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS`) through anonymous PKINIT; the KDC certificate is checked
    /// against the configured `pkinit_anchors`.
    ///
    /// The corresponding C function is `krb5_get_init_creds_password` with `krb5_get_init_creds_opt_set_anonymous`.
    /// > Warning: Blocks on the network.
    public func anonymousCredentials(realm: String? = nil, options: InitialCredentialsOptions = InitialCredentialsOptions()) throws -> Credentials {
        var options = options
        options.anonymous = true
        let client = try Principal.anonymous(realm: realm ?? defaultRealm(), in: self)
        return try initialCredentials(for: client, password: nil, options: options)
    }

    /// Asks the KDC which encryption type, salt and string-to-key parameters it uses for `client`'s
    /// password key, by sending an AS-REQ without pre-authentication and reading the etype-info it
    /// answers with. No password is involved, and the KDC counts no failed login.
    ///
    /// `options` shapes the request like a real login's (its encryption types, FAST armor).
    /// The corresponding C function is `krb5_get_etype_info`.
    /// > Warning: Blocks on the network.
    public func encryptionInfo(for client: Principal, options: InitialCredentialsOptions = InitialCredentialsOptions()) throws -> EncryptionInfo {
        let request = try InitialCredentialsRequest(context: self, client: client, options: options)
        var enctype: krb5_enctype = 0
        var salt = krb5_data()
        var parameters = krb5_data()
        let code = withExtendedLifetime(request) { krb5_get_etype_info(raw, client.raw, request.opt, &enctype, &salt, &parameters) }
        defer {
            krb5_free_data_contents(raw, &salt)
            krb5_free_data_contents(raw, &parameters)
        }
        try request.finish(code)
        return EncryptionInfo(encryptionType: EncryptionType(rawValue: enctype), salt: Array(salt.buffer), parameters: Array(parameters.buffer))
    }

    /// Runs `setup` with the blocking call for its key (``initialCredentials(for:password:options:)`` or
    /// ``initialCredentials(for:keytab:options:)``).
    /// > Warning: Blocks on the network.
    func initialCredentials(_ setup: InitialCredentialsSetup) throws -> Credentials {
        switch setup.key {
        case .password(let password): try initialCredentials(for: setup.client, password: password, options: setup.options)
        case .keytab(let keytab): try initialCredentials(for: setup.client, keytab: keytab, options: setup.options)
        }
    }
}

/// The armor code both the blocking calls and `KerberosClient` use: which request gets an armor ticket, and
/// when a login goes on without one.
extension Armor {
    /// The cache this armor names, or nil when its ticket must be fetched (``ticketRequest(for:login:in:)``).
    func namedCache(in context: Context) throws -> CredentialCache? {
        switch self {
        case .cacheName(let name): try CredentialCache(resolving: name, in: context)
        case .cache(let cache): cache
        case .anonymousPKINIT, .keytab: nil
        }
    }

    /// The request for this armor's ticket, with a new private MEMORY cache as its output cache; nil for armor that
    /// names a cache. Anonymous PKINIT takes the login's `X509_anchors`; keytab armor the given principal or the
    /// keytab's first.
    ///
    /// krb5 itself fills the cache, so that besides the TGT it records that the KDC offers FAST (the `fast_avail`
    /// configuration entry); requests armored with the cache are then armored from their first message, and
    /// nothing (not even an optimistic encrypted timestamp) goes out unprotected.
    package func ticketRequest(for client: Principal, login options: InitialCredentialsOptions, in context: Context) throws -> (setup: InitialCredentialsSetup, cache: CredentialCache)? {
        var setup: InitialCredentialsSetup
        switch self {
        case .cacheName, .cache:
            return nil
        case .anonymousPKINIT:
            var armorOptions = InitialCredentialsOptions()
            armorOptions.anonymous = true
            armorOptions.preauthOptions = options.preauthOptions.filter { $0.name == "X509_anchors" }
            setup = InitialCredentialsSetup(client: try Principal.anonymous(realm: client.realm, in: context), password: nil, options: armorOptions)
        case .keytab(let keytab, let principal):
            setup = InitialCredentialsSetup(client: try principal ?? keytab.firstPrincipal(), keytab: keytab)
        }
        let cache = try CredentialCache.newUnique(in: context)
        setup.options.outCache = cache
        return (setup, cache)
    }

    /// Whether a login goes on unarmored when its armor ticket could not be had (SSSD's "try"): not when FAST is
    /// required, and not when no KDC answered or the login was cancelled, which the login itself would meet too.
    package static func proceedsUnarmored(after error: KerberosError, fastRequired: Bool) -> Bool {
        !fastRequired && error.reason != .kdcUnreachable && error.reason != .cancelled
    }
}

extension Keytab {
    /// The principal of the first entry.
    func firstPrincipal() throws(KerberosError) -> Principal {
        guard let first = try entries().first else {
            throw KerberosError.emptyKeytab(name)
        }
        return try Principal(parsing: first.principal, in: context)
    }
}

/// One `krb5_get_init_creds_opt` and everything it points to, alive for the duration of a call.
final class InitialCredentialsRequest {
    let context: Context
    let opt: UnsafeMutablePointer<krb5_get_init_creds_opt>
    let state: CallbackState
    let startTime: krb5_deltat
    let service: String?
    // krb5 keeps these pointers rather than copying them, so they are allocated here, not borrowed from
    // Swift arrays for the length of a closure, and freed in deinit, after the options are.
    private var encryptionTypes: UnsafeMutableBufferPointer<krb5_enctype>?
    private var preauthTypes: UnsafeMutableBufferPointer<krb5_preauthtype>?
    /// Whether the options name pre-authentication types, which krb5 then puts in the first request.
    var hasPreauthTypes: Bool { preauthTypes != nil }
    private var saltStorage: UnsafeMutableRawBufferPointer?
    private var salt: UnsafeMutablePointer<krb5_data>?
    private var localAddresses: UnsafeMutablePointer<UnsafeMutablePointer<krb5_address>?>?
    private var armor: CredentialCache?
    private let keepAlive: [AnyObject]

    init(context: Context, client: Principal, options: InitialCredentialsOptions) throws {
        self.context = context
        var opt: UnsafeMutablePointer<krb5_get_init_creds_opt>?
        try context.check(krb5_get_init_creds_opt_alloc(context.raw, &opt))
        self.opt = opt!
        self.state = CallbackState(context: context, prompter: options.prompter, responder: options.responder, expire: options.expireCallback)
        self.startTime = krb5_deltat(clamping: options.startTimeOffset.map(\.seconds) ?? 0)
        self.service = options.service
        self.keepAlive = [options.inCache, options.outCache].compactMap { $0 }
        try apply(options, client: client)
    }

    deinit {
        krb5_get_init_creds_opt_free(context.raw, opt)
        encryptionTypes?.deallocate()
        preauthTypes?.deallocate()
        salt?.deallocate()
        if let saltStorage {
            Secret.wipe(saltStorage)
            saltStorage.deallocate()
        }
        if let localAddresses { krb5_free_addresses(context.raw, localAddresses) }
    }

    private func apply(_ options: InitialCredentialsOptions, client: Principal) throws {
        let raw = context.raw
        if let value = options.ticketLifetime { krb5_get_init_creds_opt_set_tkt_life(opt, krb5_deltat(clamping: value.seconds)) }
        if let value = options.renewLifetime { krb5_get_init_creds_opt_set_renew_life(opt, krb5_deltat(clamping: value.seconds)) }
        if let value = options.forwardable { krb5_get_init_creds_opt_set_forwardable(opt, value ? 1 : 0) }
        if let value = options.proxiable { krb5_get_init_creds_opt_set_proxiable(opt, value ? 1 : 0) }
        if let value = options.canonicalize { krb5_get_init_creds_opt_set_canonicalize(opt, value ? 1 : 0) }
        if options.anonymous { krb5_get_init_creds_opt_set_anonymous(opt, 1) }
        if let value = options.changePasswordPrompt { krb5_get_init_creds_opt_set_change_password_prompt(opt, value ? 1 : 0) }
        if let types = options.encryptionTypes {
            let list = Self.allocate(types.map(\.rawValue))
            encryptionTypes = list
            krb5_get_init_creds_opt_set_etype_list(opt, list.baseAddress, Int32(list.count))
        }
        if let types = options.preauthTypes {
            let list = Self.allocate(types.map(\.rawValue))
            preauthTypes = list
            krb5_get_init_creds_opt_set_preauth_list(opt, list.baseAddress, Int32(list.count))
        }
        switch options.addresses {
        case .addressless?:
            krb5_get_init_creds_opt_set_address_list(opt, nil)
        case .local?:
            var addresses: UnsafeMutablePointer<UnsafeMutablePointer<krb5_address>?>?
            try context.check(krb5_os_localaddr(raw, &addresses))
            localAddresses = addresses
            krb5_get_init_creds_opt_set_address_list(opt, addresses)
        case nil:
            break
        }
        if let bytes = options.salt {
            let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
            storage.copyBytes(from: bytes)
            saltStorage = storage
            let data = UnsafeMutablePointer<krb5_data>.allocate(capacity: 1)
            data.initialize(to: krb5_data(magic: 0, length: UInt32(bytes.count), data: storage.baseAddress!.assumingMemoryBound(to: CChar.self)))
            salt = data
            krb5_get_init_creds_opt_set_salt(opt, data)
        }
        for (name, value) in options.preauthOptions {
            if name == "X509_user_identity" {
                // MIT's PKINIT module keeps the identity in its per-context state and refuses a second one
                // ("X509_user_identity can not be given twice"), so it is set once per context.
                if let current = context.pkinitIdentity {
                    guard current == value else {
                        throw KerberosError(code: Int32(KRB5_PREAUTH_FAILED), message: "This context already uses the PKINIT identity \(current); MIT's PKINIT module holds one identity per context, so use a new Context for \(value)", reason: .invalidRequest)
                    }
                    continue
                }
                context.pkinitIdentity = value
            }
            try context.check(krb5_get_init_creds_opt_set_pa(raw, opt, name, value), reason: .invalidRequest)
        }
        if let value = options.requestPAC {
            try context.check(krb5_get_init_creds_opt_set_pac_request(raw, opt, value ? 1 : 0))
        }
        if let cache = options.inCache { try context.check(krb5_get_init_creds_opt_set_in_ccache(raw, opt, cache.raw)) }
        if let cache = options.outCache { try context.check(krb5_get_init_creds_opt_set_out_ccache(raw, opt, cache.raw)) }
        if options.expireCallback != nil {
            try context.check(krb5_get_init_creds_opt_set_expire_callback(raw, opt, expireTrampoline, state.opaque))
        }
        if options.responder != nil {
            try context.check(krb5_get_init_creds_opt_set_responder(raw, opt, responderTrampoline, state.opaque))
        }
        if let armorSource = options.armor {
            do {
                let cache: CredentialCache
                if let named = try armorSource.namedCache(in: context) {
                    cache = named
                } else if let request = try armorSource.ticketRequest(for: client, login: options, in: context) {
                    _ = try context.initialCredentials(request.setup)
                    cache = request.cache
                } else {
                    preconditionFailure("armor either names a cache or has a ticket to fetch")
                }
                armor = cache
                try context.check(krb5_get_init_creds_opt_set_fast_ccache(raw, opt, cache.raw))
            } catch {
                guard Armor.proceedsUnarmored(after: KerberosError(wrapping: error), fastRequired: options.fastRequired) else { throw error }
            }
        }
        if options.fastRequired {
            // MIT's KRB5_FAST_REQUIRED only checks that the KDC advertises FAST; without an armor cache the
            // exchange still runs unarmored. Here "required" means armored, so no armor fails closed.
            guard armor != nil else {
                throw KerberosError(code: Int32(KRB5_PREAUTH_FAILED), message: "FAST is required but no armor ticket is available", reason: .preauthUnavailable)
            }
            try context.check(krb5_get_init_creds_opt_set_fast_flags(raw, opt, krb5_flags(KRB5_FAST_REQUIRED)))
        }
    }

    /// A list krb5 may keep a pointer into: at least one element allocated, so the pointer is never nil.
    private static func allocate<Element>(_ elements: [Element]) -> UnsafeMutableBufferPointer<Element> {
        let storage = UnsafeMutableBufferPointer<Element>.allocate(capacity: max(elements.count, 1))
        _ = storage.initialize(from: elements)
        return UnsafeMutableBufferPointer(rebasing: storage[0..<elements.count])
    }

    /// Rethrows an error a callback threw, or turns `code` into a ``KerberosError``.
    func finish(_ code: krb5_error_code) throws {
        if let error = state.thrownError { throw error }
        try context.check(code)
    }
}

extension Duration {
    /// Whole seconds, rounded down.
    var seconds: Int64 { components.seconds }
}

/// Expire callback entry point with krb5's exact signature (`krb5_expire_callback_func`); state arrives in `data`.
/// A function, not a stored C function pointer: the symbol-graph extractor cannot read a stored one's clang type back.
private func expireTrampoline(_ context: krb5_context?, _ data: UnsafeMutableRawPointer?, _ passwordExpiration: krb5_timestamp,
                              _ accountExpiration: krb5_timestamp, _ isLastRequest: krb5_boolean) {
    guard let data else { return }
    let state = Unmanaged<CallbackState>.fromOpaque(data).takeUnretainedValue()
    state.expire?(PasswordExpiry(
        passwordExpiration: KerberosTime(krb5TimestampIfSet: passwordExpiration),
        accountExpiration: KerberosTime(krb5TimestampIfSet: accountExpiration),
        isLastRequest: isLastRequest != 0))
}
