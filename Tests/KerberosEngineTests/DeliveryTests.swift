import Foundation
@testable import KerberosEngine
import Kerberos
import NIOCore
import TestRealm
import Testing

/// Issue #20: the engine's rules for counted and one-time values, against real KDCs that share one database (so they
/// share lockout counters and OTP verdicts), as AD's PDC or an LDAP back end do: a request carrying a one-time value
/// reaches one KDC, however slow its second factor; a wrong password counts once, however slow the first KDC; a
/// UDP-only KDC whose reply does not fit a datagram ends the login with an error that says so.
@Suite("Engine: counted and one-time values reach one KDC", .serialized, .onTestThreads)
struct DeliveryTests {
    let engine: EngineRealm
    init() throws { engine = try EngineRealm.shared.get() }

    var realm: TestRealm { engine.realm }
    var verification: VerificationRequest { VerificationRequest(server: realm["LOCALHOST_PRINCIPAL"], keytab: realm["HOST_KEYTAB"]) }

    func client(_ config: String, timeout: Duration = TestRealm.loginTimeout) throws -> KerberosClient {
        try KerberosClient(configuration: .init(krb5: .files(config), threads: 2, loginTimeout: timeout))
    }

    /// The lines of an extra KDC's log that name `principal`.
    func logLines(_ port: Int, naming principal: String) -> [Substring] {
        ((try? String(contentsOfFile: engine.extraLog(port), encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains(" \(principal)@") }
    }

    @Test("an OTP code behind a RADIUS server that takes 1.5 s reaches the second factor once, and the KDC that waited is not held against later logins")
    func oneTimeValueReachesOneKDC() async throws {
        let radius = try SlowKDCProxy(upstreamPort: Int(realm["RADIUS_PORT"])!, delay: .milliseconds(1500))
        defer { radius.stop() }
        let first = try engine.startExtraKDC(udp: true, radiusServer: radius.address)
        let second = try engine.startExtraKDC(udp: true, radiusServer: radius.address)
        let client = try client(try engine.config(kdcs: ["127.0.0.1:\(first)", "127.0.0.1:\(second)"]))
        let bob = try realm.addOTPUser(prefix: "pushotp")
        let secret = realm["OTP_SECRET"]
        // Long enough for the 1.5 s wait and a loaded run, inside the code's 30 s step.
        let code = currentTOTP(secret: secret, margin: 12)
        let ticket = try await client.initialCredentials(verification: verification) { context in
            var options = InitialCredentialsOptions()
            options.armor = .anonymousPKINIT
            options.responder = Responder { _ in ResponderAnswers(otp: OTPAnswer(token: 0, value: Secret(code))) }
            return InitialCredentialsSetup(client: try Principal(parsing: bob, in: context), password: nil, options: options)
        }
        #expect(ticket.verified && ticket.client.hasPrefix(bob + "@"))
        // (Were the KDC's RADIUS client to retransmit its one request while it waits, that would be the same datagram;
        // a second KDC would make another.)
        #expect(radius.distinctRequests == 1, "the second factor saw \(radius.distinctRequests) Access-Requests")

        // The first KDC waited 1.5 s on RADIUS; a password login right after still goes to it first.
        let password = try await client.initialCredentials(for: engine.user, password: Secret(engine.password), verification: verification)
        #expect(password.verified)
        #expect(!logLines(first, naming: engine.user).isEmpty, "the first KDC answered the password login")
        #expect(logLines(second, naming: engine.user).isEmpty, "the second KDC was not asked: \(logLines(second, naming: engine.user))")
        await client.shutdown()
    }

    @Test("a wrong password sent with optimistic preauth to a first KDC that takes 1.5 s counts one failure in the shared database")
    func wrongPasswordCountsOnce() async throws {
        _ = try? realm.kadmin("addpol", "-maxfailure", "20", "deliverylock")
        let user = try realm.addPrincipal(prefix: "lock", password: "Lock-Passw0rd1", attributes: ["+requires_preauth", "-policy", "deliverylock"])
        let slow = try SlowKDCProxy(upstreamPort: try engine.startExtraKDC(udp: true), delay: .milliseconds(1500))
        defer { slow.stop() }
        let fast = try engine.startExtraKDC(udp: true)
        let client = try client(try engine.config(kdcs: [slow.address, "127.0.0.1:\(fast)"]))
        var options = LoginOptions()
        options.preauthTypes = [.encryptedTimestamp]   // the first request carries the timestamp
        do {
            _ = try await client.initialCredentials(for: user, password: Secret("Wrong-Passw0rd1"), options: options)
            Issue.record("a wrong password logged in")
        } catch {
            #expect(error.reason == .badPassword, "\(error)")
        }
        let record = try realm.kadmin("getprinc", user)
        #expect(record.contains("Failed password attempts: 1"), "\(record)")
        await client.shutdown()
    }

    @Test("a UDP-only KDC whose reply does not fit a datagram ends the login with an error that says so, not at the deadline")
    func udpOnlyResponseTooBig() async throws {
        let kdc = try engine.startExtraKDC(udp: true, extraDefaults: ["kdc_max_dgram_reply_size = 10"])
        let client = try client(try engine.config(kdcs: ["udp/127.0.0.1:\(kdc)"]), timeout: .seconds(120))
        do {
            _ = try await client.initialCredentials(for: engine.user, password: Secret(engine.password))
            Issue.record("logged in through a KDC that cannot answer over UDP")
        } catch {
            #expect(error.name == "KRB5KRB_ERR_RESPONSE_TOO_BIG", "\(error)")
            #expect(error.message.contains("does not fit a datagram") && error.message.contains("UDP"), "\(error.message)")
        }
        await client.shutdown()
    }

    @Test("a counted message waits for its silent KDC, while a login that starts a hedge delay later goes to the KDC that answers, and is answered first")
    func silentKDCAvoidedMeanwhile() async throws {
        let hole = try BlackHoleKDC()
        defer { hole.stop() }
        let client = try client(try engine.config(kdcs: [hole.address, "127.0.0.1:\(engine.primaryPort)"]))
        var options = LoginOptions()
        options.preauthTypes = [.encryptedTimestamp]   // the first request carries the timestamp: counted
        let firstDone = Locked(false)
        let first = Task {
            defer { firstDone.withLock { $0 = true } }
            return try await client.initialCredentials(for: engine.user, password: Secret(engine.password), options: options)
        }
        // Once the silent KDC has had the first login's request for a hedge delay, it is remembered as unresponsive.
        while !client.transport.isMarkedUnresponsive(hole.address) { try await Task.sleep(for: .milliseconds(20)) }
        #expect(hole.datagramsReceived >= 1)
        let second = try await client.initialCredentials(for: engine.user, password: Secret(engine.password), options: options)
        #expect(second.client.hasPrefix(engine.user + "@"))
        #expect(!firstDone.withLock { $0 }, "the second login was answered while the first still waited on the silent KDC")
        #expect(hole.datagramsReceived == 1, "only the first login's request went to the silent KDC")
        let late = try await first.value
        #expect(late.client.hasPrefix(engine.user + "@"), "the first login failed over to the KDC that answers")
        await client.shutdown()
    }
}
