import Foundation
import Kerberos
import LoginProtocol
import LoginService
import NIOCore
import NIOPosix
import TestRealm
import Testing
@testable import VerifyDaemon

/// The gate on its own, with a daemon that needs no KDC (``OfflineDaemon``): nothing here reaches a KDC.
@Suite("Login gate (unit)")
struct LoginGateTests {
    @Test("names that fail their checks are refused at arrival: a typed name refusal, answered after the failure floor")
    func nameRefusals() async throws {
        let offline = try OfflineDaemon { $0.failureFloor = .milliseconds(30) }
        for name in ["", "WELLKNOWN/ANONYMOUS@EXAMPLE.ORG", "alice@OTHER.ORG"] {
            guard case .failure(let refusal) = offline.daemon.gate.admit(name: name, clientAddress: "192.0.2.1") else {
                Issue.record("\(name) is refused")
                continue
            }
            #expect(refusal.kind == .name && !refusal.result.ok && refusal.delay == .milliseconds(30))
        }
        guard case .success(let login) = offline.daemon.gate.admit(name: "alice", clientAddress: "192.0.2.1") else {
            Issue.record("a plain name of the default realm is admitted")
            return
        }
        #expect(login.principal == "alice@EXAMPLE.ORG" && login.peer == "addr:192.0.2.1")
        guard case .success(let noAddress) = offline.daemon.gate.admit(name: "alice", clientAddress: "") else { return }
        #expect(noAddress.peer == nil, "an empty client address is no throttle key")
        await offline.stop()
    }

    @Test("peers outside allowed_uids and allowed_gids are refused; an unknown peer only when a list is set")
    func peers() async throws {
        let restricted = try OfflineDaemon { $0.allowedUIDs = [4242] }
        #expect(restricted.daemon.gate.admitPeer(PeerCredentials(pid: 1, uid: 4242, gid: 1), listener: .sasl))
        #expect(!restricted.daemon.gate.admitPeer(PeerCredentials(pid: 1, uid: 4243, gid: 1), listener: .conversation))
        #expect(!restricted.daemon.gate.admitPeer(nil, listener: .sasl))
        await restricted.stop()
        let open = try OfflineDaemon()
        #expect(open.daemon.gate.admitPeer(nil, listener: .sasl))
        await open.stop()
    }

    @Test("an empty saslauthd password fails without an exchange, after the failure floor, and nothing stays in flight")
    func emptyPassword() async throws {
        let offline = try OfflineDaemon { $0.failureFloor = .milliseconds(50) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let request = SaslauthdRequest(login: "alice", password: Secret(""), service: "imap", realm: "", clientAddress: "192.0.2.1")
        let start = ContinuousClock.now
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<LoginResult, Never>) in
            offline.daemon.gate.verifyPassword(request, peer: nil, on: group.next()) { continuation.resume(returning: $0) }
        }
        #expect(result.failure == .badCredentials && result.message == "empty password")
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(offline.daemon.counts.inFlight == 0)
        try await group.shutdownGracefully()
        await offline.stop()
    }

    @Test("a conversation's parking places are limited and given back")
    func parking() async throws {
        let offline = try OfflineDaemon { $0.maxParkedConversations = 1 }
        #expect(offline.daemon.gate.park())
        #expect(!offline.daemon.gate.park())
        #expect(offline.daemon.counts.parked == 1)
        offline.daemon.gate.unpark()
        #expect(offline.daemon.counts.parked == 0)
        await offline.stop()
    }

    @Test("saslauthd reply texts: guessing outcomes read 'authentication failed', others name the failure")
    func saslReasons() {
        #expect(SaslauthdHandler.reason(.failed(.badCredentials, "x")) == "authentication failed")
        #expect(SaslauthdHandler.reason(.failed(.unknownPrincipal, "x")) == "authentication failed")
        #expect(SaslauthdHandler.reason(.failed(.kdcUnreachable, "x")) == "kdc unreachable")
    }
}

/// One ``ConversationGate`` on an event loop of its own, fed client messages as the handler forwards them, with every
/// message it sends kept in order.
final class ConversationProbe: Sendable {
    let loop: any EventLoop
    private let conversation: NIOLoopBound<ConversationGate>
    private let sent = Locked<[ServerMessage]>([])
    private let stream: AsyncStream<ServerMessage>

    init(_ gate: LoginGate, on loop: any EventLoop) async throws {
        let (stream, continuation) = AsyncStream.makeStream(of: ServerMessage.self)
        let sent = self.sent
        conversation = try await loop.submit {
            NIOLoopBound(gate.conversation(on: loop) { message in
                sent.withLock { $0.append(message) }
                continuation.yield(message)
            }, eventLoop: loop)
        }.get()
        self.loop = loop
        self.stream = stream
    }

    /// Runs `body` on the conversation's loop and waits for it: what the gate did at once is done on return.
    func on(_ body: @escaping @Sendable (ConversationGate) -> Void) async throws {
        try await loop.submit { [conversation] in body(conversation.value) }.get()
    }

    func receive(_ messages: ClientMessage...) async throws {
        try await on { conversation in for message in messages { conversation.received(.success(message)) } }
    }

    /// The conversation's result, once sent (every message before it is in ``messages``).
    func result() async -> LoginResult? {
        for await message in stream { if case .result(let result) = message { return result } }
        return nil
    }

    var messages: [ServerMessage] { sent.withLock { $0 } }
}

/// The policy's order for a conversation, message by message, with a daemon that needs no KDC (its KDC, 127.0.0.1:1,
/// refuses every exchange at once: `kdc-unreachable`).
@Suite("Conversation gate: the policy's sequence (unit)")
struct ConversationGateTests {
    static func login(_ principal: String, address: String? = "192.0.2.1") -> ClientMessage {
        .login(LoginRequest(principal: principal, password: Secret("guess"), clientAddress: address))
    }

    /// Runs `body` with a daemon that needs no KDC (changed by `configure`) and an event loop for its conversations;
    /// both are stopped however `body` ends.
    static func withGate(_ configure: (inout DaemonConfiguration) -> Void = { _ in },
                         _ body: (OfflineDaemon, any EventLoop) async throws -> Void) async throws {
        let offline = try OfflineDaemon(configure)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            try await body(offline, group.next())
        } catch {
            try await group.shutdownGracefully()
            await offline.stop()
            throw error
        }
        try await group.shutdownGracefully()
        await offline.stop()
    }

    /// The `login` lines logged: each request is logged once, when it ends.
    static func loggedLogins(_ offline: OfflineDaemon) -> [String] {
        offline.logs.entries.filter { $0.contains(" login [") }
    }

    @Test("a refused peer ends the conversation with invalid-request before any message; what the client sends after counts for nothing")
    func refusedPeer() async throws {
        try await Self.withGate({ $0.allowedUIDs = [4242] }) { offline, loop in
            let probe = try await ConversationProbe(offline.daemon.gate, on: loop)
            try await probe.on { $0.connected(peer: PeerCredentials(pid: 1, uid: 4243, gid: 1)) }
            try await probe.receive(Self.login("alice"))
            let result = try #require(await probe.result())
            #expect(result.failure == .invalidRequest && result.message == "peer not allowed")
            #expect(probe.messages.count == 1, "only the result: \(probe.messages)")
            #expect(Self.loggedLogins(offline).count == 1)
            #expect(offline.daemon.counts.inFlight == 0)
        }
    }

    @Test("the protocol's order: answers before a login, a second login and a message while the login runs each end it with invalid-request")
    func protocolOrder() async throws {
        try await Self.withGate { offline, loop in
            let cases: [([ClientMessage], String)] = [
                ([.answers(id: 1, LoginAnswers(password: Secret("x")))], "answers for round 1, but no questions are open"),
                ([Self.login("alice"), Self.login("alice")], "a message arrived while the login was running; wait for questions or the result"),
                ([Self.login("alice"), .answers(id: 1, LoginAnswers(password: Secret("x")))],
                 "a message arrived while the login was running; wait for questions or the result"),
            ]
            for (messages, reason) in cases {
                let probe = try await ConversationProbe(offline.daemon.gate, on: loop)
                try await probe.on { $0.connected(peer: nil) }
                // In one task on the loop: the login's step cannot have ended before the next message arrives.
                try await probe.on { conversation in for message in messages { conversation.received(.success(message)) } }
                let result = try #require(await probe.result())
                #expect(result.failure == .invalidRequest && result.message == reason, "\(result)")
            }
            // The logins that were running are still accounted for and logged once each when their exchange ends.
            try await expectEventually("every exchange ended") { offline.daemon.counts.inFlight == 0 }
            try await expectEventually("3 results and 2 abandoned exchanges logged") { Self.loggedLogins(offline).count == 5 }
        }
    }

    @Test("a login's sequence: the name's checks, the step, the failure floor after the exchange began, one log line")
    func loginSequence() async throws {
        try await Self.withGate({ $0.failureFloor = .milliseconds(40) }) { offline, loop in

            let refusedName = try await ConversationProbe(offline.daemon.gate, on: loop)
            var start = ContinuousClock.now
            try await refusedName.receive(Self.login("alice@OTHER.ORG"))
            #expect(try #require(await refusedName.result()).failure == .unknownPrincipal)
            #expect(ContinuousClock.now - start >= .milliseconds(40), "a name refused at once is answered after the floor")

            let unreachable = try await ConversationProbe(offline.daemon.gate, on: loop)
            start = ContinuousClock.now
            try await unreachable.receive(Self.login("alice"))
            let result = try #require(await unreachable.result())
            #expect(result.failure == .kdcUnreachable && result.principal == "alice@EXAMPLE.ORG", "\(result)")
            #expect(ContinuousClock.now - start >= .milliseconds(40))
            #expect(offline.daemon.counts.inFlight == 0 && offline.daemon.counts.parked == 0)
            let logged = Self.loggedLogins(offline)
            #expect(logged.count == 2, "\(logged)")
            #expect(logged.last?.contains("alice@EXAMPLE.ORG") == true && logged.last?.contains("kdc-unreachable") == true, "\(logged)")
        }
    }

    @Test("an address that failed is throttled in a conversation as in saslauthd: refused without an exchange, after the penalty")
    func throttledConversation() async throws {
        let offline = try OfflineDaemon {
            $0.throttleFailures = 1
            $0.throttlePenalty = .milliseconds(60)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let first = try await ConversationProbe(offline.daemon.gate, on: group.next())
        try await first.receive(Self.login("alice", address: "192.0.2.9"))
        #expect(try #require(await first.result()).failure == .kdcUnreachable)

        let second = try await ConversationProbe(offline.daemon.gate, on: group.next())
        let start = ContinuousClock.now
        try await second.receive(Self.login("bob", address: "192.0.2.9"))
        let refused = try #require(await second.result())
        #expect(refused.failure == .badCredentials && refused.message == "Authentication failed", "\(refused)")
        #expect(ContinuousClock.now - start >= .milliseconds(60), "answered no sooner than the penalty")
        #expect(offline.logs.entries.contains { $0.contains("refused without asking the KDC: throttled") && $0.contains("bob@EXAMPLE.ORG") })
        #expect(offline.daemon.counts.inFlight == 0)
        try await group.shutdownGracefully()
        await offline.stop()
    }

    @Test("a client that leaves while its login runs: the exchange is still accounted for and logged, and nothing is sent")
    func clientLeaves() async throws {
        try await Self.withGate { offline, loop in
            let probe = try await ConversationProbe(offline.daemon.gate, on: loop)
            try await probe.on { conversation in
                conversation.received(.success(Self.login("alice")))
                conversation.clientLeft()
            }
            try await expectEventually("the abandoned exchange ended") { offline.daemon.counts.inFlight == 0 && !Self.loggedLogins(offline).isEmpty }
            #expect(Self.loggedLogins(offline).first?.contains("kdc-unreachable") == true)
            try await probe.on { _ in }
            #expect(probe.messages.isEmpty, "\(probe.messages)")
        }
    }
}
