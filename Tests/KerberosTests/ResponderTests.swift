import Foundation
import Kerberos
import KerberosEngine
import TestRealm
import Testing

/// Records every round a responder sees.
final class RoundLog: Sendable {
    private let rounds = Locked<[[ResponderQuestion]]>([])
    func record(_ questions: [ResponderQuestion]) { rounds.withLock { $0.append(questions) } }
    var all: [[ResponderQuestion]] { rounds.withLock { $0 } }
    var otpChallenges: [OTPChallenge] { all.joined().compactMap { if case .otp(let c) = $0 { c } else { nil } } }
    var pkinitIdentities: [[PKINITIdentity]] { all.joined().compactMap { if case .pkinit(let i) = $0 { i } else { nil } } }

    /// A responder that records each round here and answers every PKINIT identity asked with `secret` (a pass
    /// phrase, a PIN).
    func pkinitResponder(answering secret: String) -> Responder {
        Responder { [self] questions in
            record(questions)
            var answers = ResponderAnswers()
            for case .pkinit(let identities) in questions {
                for id in identities { answers.pkinit[id.identity] = Secret(secret) }
            }
            return answers
        }
    }
}

@Suite("Responder, OTP, PKINIT and FAST against the live KDC", .onTestThreads)
struct ResponderTests {
    let realm: TestRealm
    init() throws { realm = try TestRealm.shared() }

    @Test("the password is answered through the responder when none is given")
    func passwordThroughResponder() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        let log = RoundLog()
        let password = realm["USER_PASSWORD"]
        var options = InitialCredentialsOptions()
        options.responder = Responder { questions in
            log.record(questions)
            return ResponderAnswers(password: Secret(password))
        }
        let credentials = try context.initialCredentials(for: alice, password: nil, options: options)
        #expect(try credentials.client.name().hasPrefix(realm["USER"] + "@"))
        #expect(log.all.joined().contains(.password))
    }

    @Test("a raw answer to a known question works like the typed one")
    func rawAnswer() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        let password = realm["USER_PASSWORD"]
        var options = InitialCredentialsOptions()
        options.responder = Responder { _ in ResponderAnswers(raw: ["password": Secret(password)]) }
        _ = try context.initialCredentials(for: alice, password: nil, options: options)
    }

    @Test("a question MIT does not know (the realm's own preauth-question.c) reaches the responder raw, and its raw answer reaches the KDC")
    func unknownQuestionRaw() async throws {
        let context = try realm.context()
        let user = try Principal(parsing: realm["QUESTION_USER"], in: context)
        func login(answer: String) throws -> [[ResponderQuestion]] {
            let log = RoundLog()
            var options = InitialCredentialsOptions()
            options.preauthTypes = [PreauthType(rawValue: -150)]
            options.responder = Responder { questions in
                log.record(questions)
                return ResponderAnswers(raw: ["x-test-question": Secret(answer)])
            }
            let credentials = try context.initialCredentials(for: user, password: Secret(realm["QUESTION_PASSWORD"]), options: options)
            #expect(credentials.flags.contains(.preAuthenticated))
            return log.all
        }
        /// The KDC's verdicts on the requests for the user after log line `start`.
        func verdicts(after start: Int, count: Int) async throws -> [Substring] {
            var lines: [Substring] = []
            for _ in 0..<50 {
                lines = try realm.kdcLog().dropFirst(start).filter { $0.contains(" \(realm["QUESTION_USER"])@") }
                if lines.count >= count { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            return lines
        }
        var start = try realm.kdcLog().count
        let rounds = try login(answer: #"{"word":"swordfish"}"#)
        #expect(rounds.joined().contains(.other(name: "x-test-question", challenge: #"{"hint":"the fish"}"#)), "\(rounds)")
        // The first request carries only the raw answer (the preauth list names -150 alone) and the KDC accepts it.
        var lines = try await verdicts(after: start, count: 1)
        #expect(lines.count == 1 && lines[0].contains("ISSUE"), "\(lines)")

        // A wrong raw answer is refused by the KDC's half of the mechanism (krb5 then falls back to the
        // encrypted timestamp the KDC also offers, which the password satisfies).
        start = try realm.kdcLog().count
        _ = try? login(answer: #"{"word":"haddock"}"#)
        lines = try await verdicts(after: start, count: 1)
        #expect(lines.first?.contains("PREAUTH_FAILED") == true, "\(lines)")
    }

    @Test("an unanswered question falls through to the prompter")
    func fallThroughToPrompter() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        let password = realm["USER_PASSWORD"]
        var prompted = 0
        var options = InitialCredentialsOptions()
        options.responder = Responder { _ in .none }
        options.prompter = Prompter { round in
            prompted += round.prompts.count
            return round.prompts.map { _ in Secret(password) }
        }
        _ = try context.initialCredentials(for: alice, password: nil, options: options)
        #expect(prompted == 1)
    }

    @Test("an async responder that throws cancels the login with its error")
    func throwingAsyncResponder() throws {
        struct Declined: Error {}
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var options = InitialCredentialsOptions()
        options.responder = Responder(async: { _ in
            try await Task.sleep(for: .milliseconds(20))
            throw Declined()
        })
        #expect(throws: Declined.self) { try context.initialCredentials(for: alice, password: nil, options: options) }
    }

    @Test("an async responder answers from Swift concurrency while the krb5 call waits on its own thread")
    func asyncResponderOnExecutor() async throws {
        let executor = try KerberosExecutor(threads: 1, configuration: .files(realm.configFile))
        let user = realm["USER"]
        let password = realm["USER_PASSWORD"]
        let client = try await executor.run { context in
            var options = InitialCredentialsOptions()
            options.responder = Responder(async: { _ in
                try await Task.sleep(for: .milliseconds(10))
                return ResponderAnswers(password: Secret(password))
            })
            return try context.initialCredentials(for: Principal(parsing: user, in: context), password: nil, options: options).client.name()
        }
        #expect(client.hasPrefix(user + "@"))
        await executor.shutdown()
    }

    @Test("anonymous PKINIT gives WELLKNOWN/ANONYMOUS credentials")
    func anonymousPKINIT() throws {
        let context = try realm.context()
        let credentials = try context.anonymousCredentials()
        #expect(try credentials.client.name() == "WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS")
        #expect(credentials.flags.contains(.anonymous))
        #expect(credentials.server == "krbtgt/\(realm.realm)@\(realm.realm)")
    }

    @Test("anonymous PKINIT refuses a KDC certificate from another CA")
    func anonymousWrongAnchor() throws {
        let context = try Context(.files(realm["KRB5_OTHERCA_CONFIG_FILE"]))
        #expect(throws: KerberosError.self) { try context.anonymousCredentials(realm: realm.realm) }
    }

    @Test("a password login armored by anonymous PKINIT and by the host keytab, FAST required")
    func armoredPasswordLogin() throws {
        let context = try realm.context()
        let alice = try Principal(parsing: realm["USER"], in: context)
        var anonymous = InitialCredentialsOptions()
        anonymous.armor = .anonymousPKINIT
        anonymous.fastRequired = true
        _ = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: anonymous)

        var keytab = InitialCredentialsOptions()
        keytab.armor = .keytab(try Keytab(resolving: realm["HOST_KEYTAB"], in: context), principal: try Principal(parsing: realm["LOCALHOST_PRINCIPAL"], in: context))
        keytab.fastRequired = true
        _ = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: keytab)

        let cache = try CredentialCache.newUnique(in: context)
        try cache.initialize(for: Principal(parsing: "WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS", in: context))
        try cache.store(context.anonymousCredentials())
        var byName = InitialCredentialsOptions()
        byName.armor = .cacheName(cache.name)
        byName.fastRequired = true
        _ = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: byName)
    }

    @Test("armor made by the library protects the first request: an optimistic wrong password reaches the KDC once, inside FAST")
    func armorFromFirstRequest() async throws {
        let context = try realm.context()
        let name = try realm.addPrincipal(prefix: "armored", password: "Armored-Passw0rd")
        let client = try Principal(parsing: name, in: context)
        let start = try realm.kdcLog().count
        var options = InitialCredentialsOptions()
        options.armor = .anonymousPKINIT
        options.preauthTypes = [.encryptedTimestamp]
        #expect(throws: KerberosError.self) { try context.initialCredentials(for: client, password: Secret("wrong-Passw0rd"), options: options) }
        _ = try context.initialCredentials(for: client, password: Secret("Armored-Passw0rd"), options: options)
        var lines: [Substring] = []
        for _ in 0..<50 where !lines.contains(where: { $0.contains("ISSUE") }) {
            try await Task.sleep(for: .milliseconds(100))
            lines = try realm.kdcLog().dropFirst(start).filter { $0.contains(" \(name)@") && $0.contains("AS_REQ") }
        }
        // Without the cache's fast_avail entry, MIT sends the optimistic timestamp unarmored first and
        // again armored after the KDC advertises FAST: two failures, one of them visible on the wire.
        #expect(lines.filter { $0.contains("PREAUTH_FAILED") }.count == 1, "\(lines)")
        #expect(lines.filter { $0.contains("ISSUE") }.count == 1, "\(lines)")
    }

    @Test("FAST required fails closed when no armor can be had")
    func fastRequiredFailsClosed() throws {
        let context = try Context(.files(realm["KRB5_OTHERCA_CONFIG_FILE"]))
        let alice = try Principal(parsing: realm["USER"], in: context)
        var options = InitialCredentialsOptions()
        options.armor = .anonymousPKINIT
        options.fastRequired = true
        #expect(throws: KerberosError.self) {
            try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: options)
        }
        var unarmored = InitialCredentialsOptions()
        unarmored.fastRequired = true
        #expect(throws: KerberosError.self) {
            try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: unarmored)
        }
        // Without "required", a failed armor falls back to an unarmored login (SSSD's "try").
        var optional = InitialCredentialsOptions()
        optional.armor = .anonymousPKINIT
        _ = try context.initialCredentials(for: alice, password: Secret(realm["USER_PASSWORD"]), options: optional)
    }

    @Test("OTP through FreeRADIUS: the right code logs in, a wrong one is refused")
    func otp() throws {
        let secret = realm["OTP_SECRET"]
        let name = try realm.addOTPUser(prefix: "otp")
        let context = try realm.context()
        let user = try Principal(parsing: name, in: context)
        let log = RoundLog()

        var wrong = InitialCredentialsOptions()
        wrong.armor = .anonymousPKINIT
        wrong.responder = Responder { questions in
            log.record(questions)
            return ResponderAnswers(otp: OTPAnswer(token: 0, value: Secret("000000")))
        }
        expectReason(.badPassword) { try context.initialCredentials(for: user, password: nil, options: wrong) }

        var right = InitialCredentialsOptions()
        right.armor = .anonymousPKINIT
        right.responder = Responder { questions in
            log.record(questions)
            return ResponderAnswers(otp: OTPAnswer(token: 0, value: Secret(currentTOTP(secret: secret))))
        }
        let credentials = try context.initialCredentials(for: user, password: nil, options: right)
        #expect(try credentials.client.name().hasPrefix(name + "@"))
        let challenge = try #require(log.otpChallenges.first)
        #expect(challenge.tokens.count == 1)
        #expect(challenge.tokens.first?.flags.contains(.collectToken) == true)
    }

    @Test("an OTP answer naming a token that does not exist is refused before anything is sent")
    func otpBadTokenIndex() throws {
        let name = try realm.addOTPUser(prefix: "otpidx")
        let context = try realm.context()
        var options = InitialCredentialsOptions()
        options.armor = .anonymousPKINIT
        options.responder = Responder { _ in ResponderAnswers(otp: OTPAnswer(token: 5, value: Secret("123456"))) }
        expectReason(.invalidRequest) { try context.initialCredentials(for: Principal(parsing: name, in: context), password: nil, options: options) }
    }

    @Test("without FAST the KDC does not offer OTP: no OTP question and a clear error")
    func otpWithoutFAST() throws {
        let name = try realm.addOTPUser(prefix: "otpnofast")
        let context = try realm.context()
        let log = RoundLog()
        var options = InitialCredentialsOptions()
        options.responder = Responder { questions in
            log.record(questions)
            return .none
        }
        let error = #expect(throws: KerberosError.self) {
            try context.initialCredentials(for: Principal(parsing: name, in: context), password: nil, options: options)
        }
        #expect(log.otpChallenges.isEmpty)
        #expect(error?.message.isEmpty == false)
    }

    @Test("PKINIT with a FILE identity: the pass phrase through the responder, then through the prompter")
    func pkinitFile() throws {
        let context = try realm.context()
        let user = try Principal(parsing: realm["PKINIT_USER"], in: context)
        let identity = "FILE:\(realm["PKINIT_CERT"]),\(realm["PKINIT_KEY"])"
        let passphrase = realm["PKINIT_KEY_PASSPHRASE"]
        let log = RoundLog()
        var options = InitialCredentialsOptions()
        options.preauthOptions = [("X509_user_identity", identity)]
        options.responder = log.pkinitResponder(answering: passphrase)
        let credentials = try context.initialCredentials(for: user, password: nil, options: options)
        #expect(try credentials.client.name().hasPrefix(realm["PKINIT_USER"] + "@"))
        #expect(log.pkinitIdentities.count == 1, "the PKINIT question is asked once")
        #expect(log.pkinitIdentities.first?.first?.identity.hasPrefix("FILE:") == true)

        var prompted = InitialCredentialsOptions()
        prompted.preauthOptions = [("X509_user_identity", identity)]
        var kinds: [Prompt.Kind] = []
        prompted.prompter = Prompter { round in
            kinds += round.prompts.map(\.kind)
            return round.prompts.map { _ in Secret(passphrase) }
        }
        _ = try context.initialCredentials(for: user, password: nil, options: prompted)
        #expect(kinds == [.preauth])
    }

    @Test("PKINIT with a wrong pass phrase fails")
    func pkinitWrongPassphrase() throws {
        let context = try realm.context()
        var options = InitialCredentialsOptions()
        options.preauthOptions = [("X509_user_identity", "FILE:\(realm["PKINIT_CERT"]),\(realm["PKINIT_KEY"])")]
        options.responder = Responder { questions in
            var answers = ResponderAnswers()
            for case .pkinit(let identities) in questions { for id in identities { answers.pkinit[id.identity] = Secret("wrong") } }
            return answers
        }
        #expect(throws: KerberosError.self) {
            try context.initialCredentials(for: Principal(parsing: realm["PKINIT_USER"], in: context), password: nil, options: options)
        }
    }
}
