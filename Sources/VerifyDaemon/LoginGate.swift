import KerberosSecrets
import Logging
import LoginProtocol
import LoginService
import NIOCore

/// The one policy in front of both listeners: what a connection and a login pass before the KDC sees them, what
/// their outcome changes afterwards, and how the answer goes out. The handlers only move bytes and keep their
/// timers; everything else they ask of the gate, in one call per request: ``verifyPassword(_:peer:listener:on:anyThread:_:)``
/// for a saslauthd or HTTP auth request, a ``ConversationGate`` (``conversation(on:send:)``) for each message of a
/// conversation, which runs the steps below in the policy's order.
///
/// - A connection's peer (``admitPeer(_:listener:)``): `allowed_uids` / `allowed_gids`.
/// - At a login's arrival (``admit(name:clientAddress:)``): the name's checks (``LoginService/resolve(_:)``:
///   empty, malformed, `WELLKNOWN/ANONYMOUS`, a realm outside the allow-list), answered at once.
/// - Before each KDC exchange (``reserve(_:password:_:)``): a slot of the client address's throttle, then one of
///   the canonical principal's, each counting the attempt as it starts; with every slot held by attempts in
///   flight, the attempt waits in line. A throttled attempt whose password is the one that last logged the
///   principal in goes on anyway (``PasswordVerifiers``, which rations such tests per source and principal);
///   anything else throttled is refused without the KDC (a typed ``Refusal``), after a penalty.
/// - The exchange itself (``verifyPassword(_:password:on:_:)``, ``step(_:_:on:_:)``), counted in flight.
/// - After it (``release(_:_:result:password:)``): wrong credentials count against the principal and the
///   address, `kdc-unreachable` against the address; a success clears the principal and remembers its
///   password's verifier; the slots go to the attempts in line.
/// - The answer (``answer(_:_:on:floor:_:)``): logged and counted, and a failure sent no sooner than the
///   failure floor after the exchange began.
/// - Conversations parked at a question (``park()``, ``unpark()``).
///
/// A peer's uid is never a throttle key: a mail server logs in all its users from one uid, and one user's
/// typos must not lock out the others.
final class LoginGate: Sendable {
    /// The listener a request came through, as logs and metrics name it.
    enum Listener: String, Sendable {
        case sasl
        case conversation
        case http
    }

    /// A login that passed the checks at its arrival.
    struct Login: Sendable {
        /// The canonical principal name: the throttle's and the result cache's key, and what is logged.
        let principal: String
        /// The client's address key (`addr:…`), when the request named one.
        let peer: String?

        /// The principal as the verifier table keys it: its bytes.
        var principalKey: ExactName { ExactName(principal) }
        /// The address as the address throttle keys it: its bytes.
        var peerKey: ExactName? { peer.map(ExactName.init) }
    }

    /// How an exchange was let through.
    struct Reservation: Sendable {
        /// Counted against the principal's limit; false: the principal or address is throttled, but the password
        /// is the one that last succeeded.
        let counted: Bool
        /// Holds one of the client address's slots.
        let peerHeld: Bool
    }

    /// A login refused without a KDC exchange; answered no sooner than `delay` after it arrived.
    struct Refusal: Error {
        /// Why: the name's checks or the throttle.
        enum Kind: Sendable, Equatable {
            /// The name failed its checks (``LoginService/resolve(_:)``).
            case name
            /// The principal or the client address is throttled.
            case throttled
        }
        let kind: Kind
        let result: LoginResult
        let delay: Duration
    }

    /// Where one request's answer goes: its listener, the principal it is logged under, the peer, and when it
    /// arrived (the logged latency counts from here).
    struct Request: Sendable {
        let listener: Listener
        var principal: String
        var peer: PeerCredentials?
        var arrived: NIODeadline
    }

    private let service: LoginService
    private let principals: Throttle
    private let peers: Throttle
    private let verifiers: PasswordVerifiers
    private let failureFloor: Duration
    /// The slowest recent guessing failures' exchange times: the failure answers' floor beyond `failureFloor`.
    private let timing = Locked(FailureTiming())
    /// The throttles' and the verifiers' time (a test's fixed clock, or the monotonic clock).
    private let clock: @Sendable () -> NIODeadline
    private let allowedUIDs: [UInt32]
    private let allowedGIDs: [UInt32]
    private let logger: Logger
    private let metrics: DaemonMetrics
    /// The daemon's state (shared with ``VerifyDaemon``, one lock): in-flight, parked and delayed counts.
    private let state: Locked<DaemonStateMachine<CheckedContinuation<Void, Never>>>

    init(configuration: DaemonConfiguration, service: LoginService, logger: Logger, metrics: DaemonMetrics,
         state: Locked<DaemonStateMachine<CheckedContinuation<Void, Never>>>, clock: @escaping @Sendable () -> NIODeadline = { .now() }) {
        let policy = Throttle.Policy(failures: configuration.throttleFailures, window: configuration.throttleWindow,
                                     backoff: configuration.throttleBackoff, maxBackoff: configuration.throttleMaxBackoff,
                                     penalty: configuration.throttlePenalty)
        self.service = service
        self.principals = Throttle(policy: policy)
        self.peers = Throttle(policy: policy)
        self.verifiers = PasswordVerifiers(sources: configuration.throttleFailures)
        self.clock = clock
        self.failureFloor = configuration.failureFloor
        self.allowedUIDs = configuration.allowedUIDs
        self.allowedGIDs = configuration.allowedGIDs
        self.logger = logger
        self.metrics = metrics
        self.state = state
    }

    /// Whether the process at the other end of a new connection may use it (`nil`: `SO_PEERCRED` unreadable);
    /// a refusal is logged.
    func admitPeer(_ peer: PeerCredentials?, listener: Listener) -> Bool {
        guard !PeerCredentials.admits(peer, uids: allowedUIDs, gids: allowedGIDs) else { return true }
        let what = switch listener {
        case .sasl: "saslauthd connection refused"
        case .conversation: "conversation refused"
        case .http: "HTTP auth connection refused"
        }
        logger.warning("\(what)", metadata: ["peer": .string(peer?.description ?? "unknown (SO_PEERCRED unreadable)")])
        return false
    }

    /// Logs and counts a saslauthd (or HTTP auth) request that could not be decoded.
    func invalidRequest(_ error: any Error, peer: PeerCredentials?, listener: Listener = .sasl) {
        logger.notice(listener == .http ? "invalid HTTP auth request" : "invalid saslauthd request",
                      metadata: ["reason": .string("\(error)"), "peer": .string(peer?.description ?? "-")])
        metrics.record(listener: listener.rawValue, outcome: "invalid-request", latency: .zero)
    }

    /// The checks at a request's arrival: the login's canonical principal, or the answer refusing it.
    func admit(name: String, clientAddress: String?) -> Result<Login, Refusal> {
        switch service.resolve(name) {
        case .principal(let principal):
            return .success(Login(principal: principal, peer: clientAddress.flatMap { $0.isEmpty ? nil : "addr:\($0)" }))
        case .refused(let result):
            return .failure(Refusal(kind: .name, result: result, delay: failureFloor))
        }
    }

    /// Lets one KDC exchange of `login` go ahead, or refuses it because its address or its principal is
    /// throttled; `decided` runs once, at once or (the attempt waited for a slot) on the thread that freed the
    /// slot. Every success must be followed by one ``release(_:_:result:password:)``.
    ///
    /// The address's slot first, then the principal's, so an attempt never holds a principal's slot while it
    /// waits. Refused by either, a password is tested against the principal's verifier, under its ration
    /// (``PasswordVerifiers``): the one that last logged it in goes on to the KDC, anything else is refused.
    private func reserve(_ login: Login, password: Secret?, _ decided: @escaping @Sendable (Result<Reservation, Refusal>) -> Void) {
        guard let peer = login.peerKey else { return reservePrincipal(login, password: password, peerHeld: false, decided) }
        let afterPeer: Throttle.Waiter = { [self] verdict in
            switch verdict {
            case .allowed: reservePrincipal(login, password: password, peerHeld: true, decided)
            case .refused(let penalty): throttled(login, password: password, penalty: penalty, by: peer, peerHeld: false, decided)
            case .queued: break
            }
        }
        let verdict = peers.reserve(peer, now: clock(), waiter: afterPeer)
        if verdict != .queued { afterPeer(verdict) }
    }

    private func reservePrincipal(_ login: Login, password: Secret?, peerHeld: Bool, _ decided: @escaping @Sendable (Result<Reservation, Refusal>) -> Void) {
        let key = Self.throttleKey(login.principal)
        let afterPrincipal: Throttle.Waiter = { [self] verdict in
            switch verdict {
            case .allowed: decided(.success(Reservation(counted: true, peerHeld: peerHeld)))
            case .refused(let penalty): throttled(login, password: password, penalty: penalty, by: key, peerHeld: peerHeld, decided)
            case .queued: break
            }
        }
        let verdict = principals.reserve(key, now: clock(), waiter: afterPrincipal)
        if verdict != .queued { afterPrincipal(verdict) }
    }

    /// A throttled attempt: its password tested against the principal's verifier if its source has a test free.
    private func throttled(_ login: Login, password: Secret?, penalty: Duration, by key: ExactName, peerHeld: Bool,
                           _ decided: @escaping @Sendable (Result<Reservation, Refusal>) -> Void) {
        let source = login.peerKey ?? ExactName("")
        let outcome = password.map { verifiers.test($0, for: login.principalKey, from: source, penalty: penalty, now: clock()) } ?? .untested
        if outcome == .matched {
            logger.info("throttled, but the password is the one that last succeeded", metadata: ["principal": .string(login.principal)])
            return decided(.success(Reservation(counted: false, peerHeld: peerHeld)))
        }
        if peerHeld, let peer = login.peerKey {
            // A wrong guess tested here failed as surely as at the KDC: it counts against its address.
            peers.release(peer, failed: outcome == .mismatched ? true : nil, now: clock()).wake()
        }
        logger.notice("refused without asking the KDC: throttled", metadata: [
            "principal": .string(login.principal), "key": .string(key.description), "penalty_ms": .stringConvertible(penalty.milliseconds),
            "verifier": .string(outcome == .mismatched ? "tested" : "untested"),
        ])
        decided(.failure(Refusal(kind: .throttled, result: .failed(.badCredentials, "Authentication failed", principal: login.principal),
                                 delay: max(penalty, failureFloor))))
    }

    /// The principal's throttle key: its canonical name's bytes with ASCII letters folded to lower case. Active
    /// Directory's names are case-insensitive (`ALICE`, `Alice` and `alice` are one account, and the DC counts
    /// their failures as one), so spellings must not multiply the throttle's budget. On a case-sensitive realm
    /// two principals that differ only in ASCII case share one budget, which can only throttle sooner. Nothing
    /// beyond ASCII is folded: Unicode's folding would make `\u{212A}alice` (KELVIN SIGN) and `kalice` one key,
    /// and let guesses at one name throttle another.
    static func throttleKey(_ principal: String) -> ExactName { ExactName(principal).asciiCaseFolded }

    /// Ends an exchange let through by ``reserve(_:password:_:)``; `result` is nil when it ended at questions.
    /// The slots it held go to the attempts waiting for them.
    private func release(_ login: Login, _ reservation: Reservation, result: LoginResult?, password: Secret?) {
        let guessing = result?.failure == .badCredentials || result?.failure == .unknownPrincipal
        let now = clock()
        var released: [Throttle.Release] = []
        if reservation.counted {
            let failed: Bool? = result.map { $0.ok ? false : (guessing ? true : nil) } ?? nil
            let release = principals.release(Self.throttleKey(login.principal), failed: failed, now: now)
            if release.engagedBackoff { logger.warning("throttling engaged", metadata: ["key": .string(login.principal)]) }
            released.append(release)
        } else if guessing {
            // The password that last succeeded failed: it was changed or revoked elsewhere.
            verifiers.forget(login.principalKey)
        }
        if let result, result.ok, let password {
            verifiers.remember(password, for: login.principalKey, from: login.peerKey ?? ExactName(""))
        }
        if reservation.peerHeld, let peer = login.peerKey {
            let failed: Bool? = guessing || result?.failure == .kdcUnreachable ? true : nil
            let release = peers.release(peer, failed: failed, now: now)
            if release.engagedBackoff { logger.warning("throttling engaged", metadata: ["key": .string(peer.description)]) }
            released.append(release)
        }
        for release in released { release.wake() }
    }

    // MARK: Exchanges

    /// The gate of one conversation on `loop` (its channel's): each client message goes to it, and `send` runs on
    /// `loop` with each message for the client.
    func conversation(on loop: any EventLoop, send: @escaping (ServerMessage) -> Void) -> ConversationGate {
        ConversationGate(gate: self, loop: loop, send: send)
    }

    /// A saslauthd request (or an HTTP auth request's credentials, `listener: .http`) from its arrival to its answer: the name's checks, an empty password refused, the
    /// throttles, the password-only login, the outcome's accounting; `reply` runs with the result, logged and no
    /// sooner than its floor, on `loop` (a channel handler's), or with `anyThread` on whichever thread has the
    /// result (the acceptor's, for a result cached or refused at once; `loop`'s, for a delayed reply).
    func verifyPassword(_ request: SaslauthdRequest, peer: PeerCredentials?, listener: Listener = .sasl, on loop: any EventLoop, anyThread: Bool = false,
                        _ reply: @escaping @Sendable (LoginResult) -> Void) {
        let arrived = NIODeadline.now()
        /// The request's answer, logged under `principal`.
        func answering(as principal: String) -> @Sendable (LoginResult, Duration?) -> Void {
            let entry = Request(listener: listener, principal: principal, peer: peer, arrived: arrived)
            return { result, floor in self.answer(result, entry, on: loop, floor: floor) { reply(result) } }
        }
        let login: Login
        switch admit(name: LoginService.principal(for: request), clientAddress: request.clientAddress) {
        case .success(let admitted): login = admitted
        case .failure(let refusal): return answering(as: LoginService.principal(for: request))(refusal.result, refusal.delay)
        }
        let finish = answering(as: login.principal)
        let password = request.password
        if password.isEmpty { return finish(.failed(.badCredentials, "empty password", principal: login.principal), nil) }
        exchange(login, password: password, on: loop, anyThread: anyThread, { [service] done in
            service.verifyPassword(principal: login.principal, password: password) { done($0, $0) }
        }, refused: { finish($0.result, $0.delay) }, ended: { finish($0, nil) })
    }

    /// One replay of a conversation's exchange, if the throttles let it through; `ended` runs on `loop` with the
    /// step, or with the refusal. Its outcome is accounted for (throttle, in-flight count) whether or not anyone
    /// is left to hear it.
    func step(_ login: Login, _ conversation: LoginConversation, on loop: any EventLoop, _ ended: @escaping @Sendable (Result<LoginStep, Refusal>) -> Void) {
        exchange(login, password: conversation.password, on: loop, { [service] done in
            service.step(conversation) { step in
                let result: LoginResult? = if case .finished(let result, _) = step { result } else { nil }
                done(result, step)
            }
        }, refused: { ended(.failure($0)) }, ended: { ended(.success($0)) })
    }

    /// Reserve (waiting in line for a slot if need be), count in flight, run `body` on the service, release with its
    /// result, hop back to `loop` (unless `anyThread`: then go on where the result came). A refusal also comes on
    /// `loop` unless `anyThread`. The attempt counts as in flight from the start, so a draining shutdown waits
    /// for attempts in line too.
    private func exchange<Outcome: Sendable>(
        _ login: Login, password: Secret?, on loop: any EventLoop, anyThread: Bool = false,
        _ body: @escaping @Sendable (_ done: @escaping @Sendable (LoginResult?, Outcome) -> Void) -> Void,
        refused: @escaping @Sendable (Refusal) -> Void, ended: @escaping @Sendable (Outcome) -> Void
    ) {
        state.withLock { $0.loginStarted() }
        reserve(login, password: password) { [self] decision in
            let reservation: Reservation
            switch decision {
            case .success(let granted): reservation = granted
            case .failure(let refusal):
                let answer: @Sendable () -> Void = {
                    self.state.withLock { $0.loginEnded() }
                    refused(refusal)  // replies, or counts the reply as delayed
                    self.state.withLock { $0.replyMade() }?.resume()
                }
                if anyThread || loop.inEventLoop { answer() } else { loop.execute(answer) }
                return
            }
            metrics.inFlight.increment()
            let began = NIODeadline.now()
            body { result, outcome in
                if let failure = result?.failure, failure == .badCredentials || failure == .unknownPrincipal {
                    let took = NIODeadline.now() - began
                    self.timing.withLock { $0.record(.nanoseconds(took.nanoseconds)) }
                }
                let finish: @Sendable () -> Void = {
                    self.state.withLock { $0.loginEnded() }
                    self.metrics.inFlight.decrement()
                    self.release(login, reservation, result: result, password: password)
                    ended(outcome)  // replies, or counts the reply as delayed (``answer(_:_:on:floor:started:_:)``)
                    self.state.withLock { $0.replyMade() }?.resume()
                }
                if anyThread { finish() } else { loop.execute(finish) }
            }
        }
    }

    // MARK: Answers

    /// Logs and counts one finished request, then runs `reply` on `loop`: at once for a success, else no sooner
    /// than `floor` (a throttle's penalty) or the failure floor after `started` (default: the request's arrival;
    /// a conversation passes when its last exchange began). The failure floor is `failure_floor` or the slowest
    /// recent guessing failure's exchange (``FailureTiming``), whichever is longer, so that an unknown name is
    /// answered as late as a known one with a wrong password. While half of `max_connections` already wait out
    /// a delay, a further one waits out only the failure floor, so penalties cannot fill the daemon.
    func answer(_ result: LoginResult, _ request: Request, on loop: any EventLoop, floor: Duration? = nil, started: NIODeadline? = nil,
                _ reply: @escaping @Sendable () -> Void) {
        if result.ok {
            log(result, request)
            return reply()
        }
        let crowded = state.withLock { $0.isCrowdedWithDelays }
        let base = currentFailureFloor
        let floor = crowded ? base : max(floor ?? .zero, base)
        log(result, request, floor: floor)
        let remaining = (started ?? request.arrived) + TimeAmount(floor) - .now()
        if remaining <= .zero {
            reply()
            return
        }
        state.withLock { $0.replyDelayed() }
        loop.scheduleTask(in: remaining) { [self] in
            reply()
            state.withLock { $0.delayedReplySent() }?.resume()
        }
    }

    /// The floor of every failure's answer now: `failure_floor`, or the slowest recent guessing failure's exchange.
    var currentFailureFloor: Duration { max(failureFloor, timing.withLock { $0.slowest }) }

    /// Logs and counts one finished request (a failure with the `floor` its answer waits for); never with a secret.
    func log(_ result: LoginResult, _ request: Request, floor: Duration? = nil) {
        let latency = NIODeadline.now() - request.arrived
        let outcome = result.failure?.rawValue ?? "ok"
        metrics.record(listener: request.listener.rawValue, outcome: outcome, latency: .nanoseconds(latency.nanoseconds))
        let level: Logger.Level = result.ok ? .info : .notice
        guard logger.logLevel <= level else { return }
        var metadata: Logger.Metadata = [
            "listener": .string(request.listener.rawValue), "outcome": .string(outcome), "principal": .string(request.principal),
            "latency_ms": .stringConvertible(Double(latency.nanoseconds) / 1e6),
        ]
        // The name the KDC gave the ticket, when it differs from the one asked for (canonicalization, UPNs).
        if result.ok, let canonical = result.principal, canonical != request.principal { metadata["canonical_principal"] = .string(canonical) }
        if let peer = request.peer { metadata["peer_uid"] = .stringConvertible(peer.uid); metadata["peer_pid"] = .stringConvertible(peer.pid) }
        if let message = result.message { metadata["reason"] = .string(message) }
        if let floor { metadata["floor_ms"] = .stringConvertible(floor.milliseconds) }
        logger.log(level: level, "login", metadata: metadata)
    }

    // MARK: Parked conversations

    /// Reserves a parking place for a conversation at a question; false when the daemon is full.
    func park() -> Bool {
        guard state.withLock({ $0.park() }) else { return false }
        metrics.parked.increment()
        return true
    }

    /// Frees a place reserved by ``park()``.
    func unpark() {
        state.withLock { $0.unpark() }
        metrics.parked.decrement()
    }
}

extension Duration {
    /// The whole milliseconds in this duration.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
