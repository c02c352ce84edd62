import Foundation
import Kerberos
import LoginProtocol
import LoginService
import NIOCore
import NIOPosix
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
