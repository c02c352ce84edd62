import Kerberos
import KerberosEngine
import TestRealm
import Testing

/// ``KerberosConversation`` against the live realm: questions come out as values, answers go back in, and the
/// exchange replays with them.
@Suite("Conversations: questions out, answers in", .onTestThreads)
struct ConversationTests {
    let realm: TestRealm
    init() throws { realm = try TestRealm.shared() }

    private func client() throws -> KerberosClient {
        try KerberosClient(configuration: .init(krb5: .files(realm.configFile), threads: 1, loginTimeout: TestRealm.loginTimeout))
    }

    private var verification: VerificationRequest { VerificationRequest(server: realm["LOCALHOST_PRINCIPAL"], keytab: realm["HOST_KEYTAB"]) }

    @Test("a password login, with and without preauth: the password is asked for, then the login is verified", arguments: ["USER", "PREAUTH_USER"])
    func password(_ user: String) async throws {
        let client = try client()
        let login = client.conversation(for: realm[user], verification: verification)
        guard case .questions(let questions) = try await login.next() else { Issue.record("no question without a password"); return }
        #expect(questions == [.responder(.password)])
        guard case .done(let ticket) = try await login.next(.init(password: Secret(realm[user == "USER" ? "USER_PASSWORD" : "PREAUTH_PASSWORD"]))) else {
            Issue.record("not done with the password"); return
        }
        #expect(ticket.verified && ticket.client.hasPrefix(realm[user] + "@"))
        let wrong = client.conversation(for: realm[user], verification: verification)
        await #expect(throws: KerberosError.self) { _ = try await wrong.next(.init(password: Secret("not-the-password"))) }
        await client.shutdown()
    }

    @Test("OTP through FreeRADIUS: the code is asked for as a value and answered in the next step; a wrong code is bad-password")
    func otp() async throws {
        let name = try realm.addOTPUser(prefix: "cotp")
        let client = try client()
        var options = LoginOptions()
        options.armor = .anonymousPKINIT
        let login = client.conversation(for: name, options: options, verification: verification)
        guard case .questions(let questions) = try await login.next() else { Issue.record("no OTP question"); return }
        let challenge = questions.compactMap { if case .responder(.otp(let challenge)) = $0 { challenge } else { nil } }.first
        #expect(challenge?.tokens.first?.flags.contains(.collectToken) == true, "\(questions)")
        // While the code is being typed no thread is held: the one worker serves another login meanwhile.
        let other = try await client.initialCredentials(for: realm["USER"], password: Secret(realm["USER_PASSWORD"]))
        #expect(other.client.hasPrefix(realm["USER"] + "@"))
        guard case .done(let ticket) = try await login.next(.init(otp: OTPAnswer(value: Secret(currentTOTP(secret: realm["OTP_SECRET"]))))) else {
            Issue.record("not done with the code"); return
        }
        #expect(ticket.verified)

        let wrong = client.conversation(for: name, options: options, verification: verification)
        do {
            _ = try await wrong.next(.init(otp: OTPAnswer(value: Secret("000000"))))
            Issue.record("a wrong code logged in")
        } catch {
            #expect(error.reason == .badPassword, "\(error)")
        }
        await client.shutdown()
    }

    @Test("an expired password: a new one is asked for, set through kpasswd, and the login goes on with it")
    func expiredPassword() async throws {
        let name = try realm.addPrincipal(prefix: "cexp", password: "Old-Passw0rd", attributes: ["+needchange"])
        let client = try client()
        let login = client.conversation(for: name, verification: verification)
        guard case .questions(let questions) = try await login.next(.init(password: Secret("Old-Passw0rd"))) else {
            Issue.record("no new-password question"); return
        }
        #expect(questions == [.newPassword])
        guard case .done(let ticket) = try await login.next(.init(newPassword: Secret("New-Passw0rd-7"))) else { Issue.record("not done"); return }
        #expect(ticket.verified)
        let again = try await client.initialCredentials(for: name, password: Secret("New-Passw0rd-7"))
        #expect(again.client.hasPrefix(name + "@"))
        await client.shutdown()
    }
}
