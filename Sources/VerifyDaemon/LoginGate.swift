import Kerberos
import Logging
import LoginProtocol
import LoginService
import NIOCore

/// The one policy in front of both listeners: what a login passes before the KDC sees it, and what its
/// outcome changes afterwards.
///
/// - At its arrival (``admit(name:clientAddress:)``): the name's checks (``LoginService/resolve(_:)``: empty,
///   malformed, `WELLKNOWN/ANONYMOUS`, a realm outside the allow-list), answered at once.
/// - Before each KDC exchange (``reserve(_:password:)``): the client address's throttle, then the canonical
///   principal's, which counts the attempt as it starts. A throttled principal whose password is the one
///   that last logged it in goes on anyway (``PasswordVerifiers``); anything else throttled is refused
///   without the KDC, after a penalty.
/// - After it (``release(_:_:result:password:)``): wrong credentials count against the principal and the
///   address, `kdc-unreachable` against the address; a success clears the principal and remembers its
///   password's verifier.
///
/// A peer's uid is never a throttle key: a mail server logs in all its users from one uid, and one user's
/// typos must not lock out the others.
final class LoginGate: Sendable {
    /// A login that passed the checks at its arrival.
    struct Login: Sendable {
        /// The canonical principal name: the throttle's and the result cache's key, and what is logged.
        let principal: String
        /// The client's address key (`addr:…`), when the request named one.
        let peer: String?
    }

    /// How an exchange was let through.
    enum Reservation: Sendable {
        /// Counted against the principal's limit.
        case counted
        /// The principal or address is throttled, but the password is the one that last succeeded.
        case verifiedBypass
    }

    /// A login refused without a KDC exchange; answered no sooner than `delay` after it arrived.
    struct Refusal: Error {
        let result: LoginResult
        let delay: Duration
    }

    private let service: LoginService
    private let principals: Throttle
    private let peers: Throttle
    private let verifiers = PasswordVerifiers()
    private let failureFloor: Duration
    private let logger: Logger

    init(configuration: DaemonConfiguration, service: LoginService, logger: Logger) {
        let policy = Throttle.Policy(failures: configuration.throttleFailures, window: configuration.throttleWindow,
                                     backoff: configuration.throttleBackoff, maxBackoff: configuration.throttleMaxBackoff,
                                     penalty: configuration.throttlePenalty)
        self.service = service
        self.principals = Throttle(policy: policy)
        self.peers = Throttle(policy: policy)
        self.failureFloor = configuration.failureFloor
        self.logger = logger
    }

    /// The checks at a request's arrival: the login's canonical principal, or the answer refusing it.
    func admit(name: String, clientAddress: String?) -> Result<Login, Refusal> {
        switch service.resolve(name) {
        case .principal(let principal):
            return .success(Login(principal: principal, peer: clientAddress.flatMap { $0.isEmpty ? nil : "addr:\($0)" }))
        case .refused(let result):
            return .failure(Refusal(result: result, delay: failureFloor))
        }
    }

    /// Lets one KDC exchange of `login` go ahead, or refuses it because its address or its principal is
    /// throttled. Every success must be followed by one ``release(_:_:result:password:)``.
    func reserve(_ login: Login, password: Secret?) -> Result<Reservation, Refusal> {
        var verdict = login.peer.map { peers.check($0) } ?? .allowed
        var throttled = login.peer ?? ""
        if verdict == .allowed {
            verdict = principals.reserve(Self.throttleKey(login.principal))
            throttled = login.principal
        }
        guard case .refused(let penalty) = verdict else { return .success(.counted) }
        if let password, verifiers.matches(password, for: login.principal) {
            logger.info("throttled, but the password is the one that last succeeded", metadata: ["principal": .string(login.principal)])
            return .success(.verifiedBypass)
        }
        logger.notice("refused without asking the KDC: throttled", metadata: [
            "principal": .string(login.principal), "key": .string(throttled), "penalty_ms": .stringConvertible(penalty.milliseconds),
        ])
        return .failure(Refusal(result: .failed(.badCredentials, "Authentication failed", principal: login.principal),
                                delay: max(penalty, failureFloor)))
    }

    /// The principal's throttle key: its canonical name folded to lower case. Active Directory's names are
    /// case-insensitive (`ALICE`, `Alice` and `alice` are one account, and the DC counts their failures as one),
    /// so spellings must not multiply the throttle's budget. On a case-sensitive realm two principals that differ
    /// only in case share one budget, which can only throttle sooner, never later.
    static func throttleKey(_ principal: String) -> String { principal.lowercased() }

    /// Ends an exchange let through by ``reserve(_:password:)``; `result` is nil when it ended at questions.
    func release(_ login: Login, _ reservation: Reservation, result: LoginResult?, password: Secret?) {
        let guessing = result?.failure == .badCredentials || result?.failure == .unknownPrincipal
        switch reservation {
        case .counted:
            let failed: Bool? = result.map { $0.ok ? false : (guessing ? true : nil) } ?? nil
            if principals.release(Self.throttleKey(login.principal), failed: failed) {
                logger.warning("throttling engaged", metadata: ["key": .string(login.principal)])
            }
        case .verifiedBypass:
            // The password that last succeeded failed: it was changed or revoked elsewhere.
            if guessing { verifiers.forget(login.principal) }
        }
        if let result, result.ok, let password {
            verifiers.remember(password, for: login.principal)
        }
        if let peer = login.peer, guessing || result?.failure == .kdcUnreachable, peers.recordFailure(peer) {
            logger.warning("throttling engaged", metadata: ["key": .string(peer)])
        }
    }
}

extension Duration {
    /// The whole milliseconds in this duration.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
