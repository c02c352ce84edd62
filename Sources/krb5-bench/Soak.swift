import ArgumentParser
import Foundation
import Kerberos
import KerberosEngine
import LoginProtocol
import LoginService
import Synchronization
import TOTP

/// The realm's `realm.env` (test realm only: it holds the test passwords).
func realmValues(_ path: String) throws -> [String: String] {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    return Dictionary(text.split(separator: "\n").compactMap { line in
        line.firstIndex(of: "=").map { (String(line[..<$0]), String(line[line.index(after: $0)...])) }
    }, uniquingKeysWith: { $1 })
}

/// Mixed logins through krb5-verifyd with every reply checked: good, bad and unknown passwords, a
/// disabled user (saslauthd protocol), good and bad OTP (conversation). Reports wrong answers and the
/// daemon's RSS and open descriptors at 10 % and at the end.
struct Soak: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "soak")
    @Option(name: .customLong("realm-env")) var realmEnv: String
    @Option(name: .customLong("sasl-socket")) var saslSocket: String
    @Option var socket: String
    @Option(help: "A principal with the realm's OTP secret.") var otpUser: String
    @Option var count = 2_000
    @Option var concurrency = 16
    @Option var seconds = 600.0
    @Option var pid: Int32
    @Option(help: "Only these cases, comma-separated (good, bad, unknown, disabled, otpGood, otpBad); default all.")
    var cases: String?

    enum Case: Int, CaseIterable { case good, bad, unknown, disabled, otpGood, otpBad

        init?(name: Substring) {
            guard let found = Self.allCases.first(where: { "\($0)" == name }) else { return nil }
            self = found
        }
    }

    func run() throws {
        let realm = try realmValues(realmEnv)
        let wrong = Atomic<Int>(0)
        let wrongAnswers = Locked<[String]>([])
        let done = Atomic<Int>(0)
        let tally = Locked<[Case: Int]>([:])
        let early = Locked<(rss: Int, fds: Int)?>(nil)
        let (sasl, conversation, otpUser, count, pid) = (saslSocket, socket, otpUser, count, pid)
        let selected = try cases.map { list in
            try list.split(separator: ",").map { name in
                guard let kind = Case(name: name) else { throw ValidationError("unknown case \(name)") }
                return kind
            }
        } ?? Case.allCases
        let elapsed = runThreads(concurrency, seconds: seconds, count: count) { _ in
            {
                let index = done.add(1, ordering: .relaxed).newValue
                let kind = selected[index % selected.count]
                if let answer = Self.check(kind, realm: realm, sasl: sasl, conversation: conversation, otpUser: otpUser) {
                    wrong.add(1, ordering: .relaxed)
                    wrongAnswers.withLock { if $0.count < 10 { $0.append("\(kind): \(answer)") } }
                }
                tally.withLock { $0[kind, default: 0] += 1 }
                if index == max(1, count / 10) { early.withLock { $0 = (Self.rss(pid), Self.fds(pid)) } }
            }
        }
        let first: (rss: Int, fds: Int) = early.withLock { $0 } ?? (0, 0)
        let counts = tally.withLock { $0 }.map { "\"\($0.key)\":\($0.value)" }.sorted().joined(separator: ",")
        let answers = wrongAnswers.withLock { $0 }.map { "\"\(Self.jsonEscaped($0))\"" }.joined(separator: ",")
        print(#"{"logins":\#(done.load(ordering: .relaxed)),"seconds":\#(String(format: "%.1f", elapsed)),"wrong":\#(wrong.load(ordering: .relaxed)),"rss_kb_at_10pct":\#(first.rss),"rss_kb_at_end":\#(Self.rss(pid)),"fds_at_10pct":\#(first.fds),"fds_at_end":\#(Self.fds(pid)),"cases":{\#(counts)},"wrong_answers":[\#(answers)]}"#)
        if wrong.load(ordering: .relaxed) > 0 { throw ExitCode(1) }
    }

    /// One login of `kind`: nil when the daemon's answer is the expected one, else what it answered.
    static func check(_ kind: Case, realm: [String: String], sasl: String, conversation: String, otpUser: String) -> String? {
        func saslAnswer(_ login: String, _ password: String, expect expected: SaslauthdReply) -> String? {
            let request = SaslauthdRequest(login: login, password: Secret(password), service: "soak", realm: "", clientAddress: "127.0.0.\(kind.rawValue + 1)")
            let reply = try? SaslauthdReply(decoding: SaslLoad.exchange(path: sasl, request: request.encoded()))
            return reply == expected ? nil : reply.map { "\($0)" } ?? "no reply"
        }
        switch kind {
        case .good: return saslAnswer(realm["USER"]!, realm["USER_PASSWORD"]!, expect: .ok)
        case .bad: return saslAnswer(realm["USER"]!, "wrong-\(UInt32.random(in: 0...UInt32.max))", expect: .no("authentication failed"))
        case .unknown: return saslAnswer("nobody\(UInt32.random(in: 0...UInt32.max))", "x", expect: .no("authentication failed"))
        case .disabled: return saslAnswer(realm["DISABLED_USER"]!, realm["DISABLED_PASSWORD"]!, expect: .no("account disabled"))
        case .otpGood, .otpBad:
            let asked = Date().timeIntervalSince1970
            let code = kind == .otpGood ? TOTP.code(secret: TOTP.base32Decode(realm["OTP_SECRET"]!), time: UInt64(asked)) : "000000"
            guard let result = otpLogin(conversation, user: otpUser, code: code) else { return "no result" }
            let right: Bool
            if kind == .otpGood {
                // A code made near a step's end may reach the KDC in the next step and be refused: that is the
                // KDC being right, not the daemon wrong.
                right = result.ok && result.verified
                    || result.failure == .badCredentials && Self.stepChanged(since: asked)
            } else {
                right = result.failure == .badCredentials
            }
            return right ? nil : "\(result)"
        }
    }

    /// Whether a TOTP step (30 s) began between `time` (less 2 s) and now.
    static func stepChanged(since time: Double) -> Bool {
        Int((time - 2) / 30) != Int(Date().timeIntervalSince1970 / 30)
    }

    static func jsonEscaped(_ text: String) -> String {
        var escaped = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": escaped += "\\\""
            case "\\": escaped += "\\\\"
            case _ where scalar.value < 0x20: escaped += String(format: "\\u%04x", scalar.value)
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    static func otpLogin(_ path: String, user: String, code: String) -> LoginResult? {
        let client = LineClient(path: path)
        guard client.connected else { return nil }
        client.send(ClientMessage.login(LoginRequest(principal: user)).encodedLine)
        while let line = client.readLine() {
            switch try? ServerMessage.decode(line) {
            case .questions(let id, _)?:
                client.send(ClientMessage.answers(id: id, LoginAnswers(otp: OTPAnswer(token: 0, value: Secret(code)))).encodedLine)
            case .result(let result)?:
                return result
            case .info?:
                continue
            case nil:
                return nil
            }
        }
        return nil
    }

    static func rss(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }

    static func fds(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }
}

/// A blocking JSON-lines client.
final class LineClient {
    let fd: Int32
    let connected: Bool
    private var buffer: [UInt8] = []

    init(path: String) {
        fd = (try? UnixSocketAddress(path: path)?.connectedStream().get()) ?? -1
        connected = fd >= 0
    }

    deinit { if connected { close(fd) } }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func readLine() -> [UInt8]? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeFirst(newline + 1)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return nil }
            buffer += chunk[0..<count]
        }
    }
}

/// 1,000 logins with every outcome through LoginService in process, for valgrind / LeakSanitizer:
/// good, bad and unknown passwords, a disabled user, and conversations abandoned at an OTP question and
/// at a new-password question; every other pass the password logins go the password-only way. Then a tenth as
/// many one-shot logins (``LoginService/stepBlocking(_:configuration:context:)``, krb5-login's way).
struct LeakCheck: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "leakcheck")
    @Option(name: .customLong("realm-env")) var realmEnv: String
    @Option var count = 1_000
    /// `NAME:PASSWORD` of an expired principal whose policy refuses the new password this check offers: the
    /// password change's kpasswd exchange runs (request built, reply read) and changes nothing.
    @Option(name: .customLong("refused-change")) var refusedChange: String?

    func run() throws {
        let realm = try realmValues(realmEnv)
        var configuration = LoginConfiguration(
            krb5: .files(realm["KRB5_CONFIG_FILE"]!), keytab: realm["HOST_KEYTAB"]!, serverPrincipal: realm["LOCALHOST_PRINCIPAL"]!,
            armor: .anonymous)
        configuration.loginTimeout = .seconds(120)  // valgrind runs the code many times slower
        let service = try LoginService(configuration: configuration, threads: 2)
        // Eight logins at a time: under valgrind a thousand at once would all run into the login timeout.
        let slots = DispatchSemaphore(value: 8)
        let done = DispatchSemaphore(value: 0)
        let outcomes = Locked<[String: Int]>([:])
        let cases: [(String, String?)] = [
            (realm["USER"]!, realm["USER_PASSWORD"]!), (realm["USER"]!, "wrong"), ("nobody-here", "x"),
            (realm["DISABLED_USER"]!, realm["DISABLED_PASSWORD"]!), (realm["OTP_USER"]!, nil), (realm["EXPIRED_USER"]!, realm["EXPIRED_PASSWORD"]!),
        ]
        if let refusedChange, let colon = refusedChange.firstIndex(of: ":") {
            // The conversation's replay with the new-password answers: kadmin/changepw ticket, kpasswd, refusal.
            let principal = String(refusedChange[..<colon]), password = Secret(String(refusedChange[refusedChange.index(after: colon)...]))
            let context = try Context(configuration.krb5)
            for _ in 0..<max(count / 20, 1) {
                let conversation = LoginConversation(principal: principal, password: password)
                var step = LoginService.stepBlocking(conversation, configuration: configuration, context: context)
                if case .questions(let round, _, _) = step {
                    try conversation.answer(LoginAnswers(newPassword: Secret("short"), newPasswordAgain: Secret("short")), round: round)
                    step = LoginService.stepBlocking(conversation, configuration: configuration, context: context)
                }
                let outcome = if case .finished(let result, _) = step { result.failure?.rawValue ?? "ok" } else { "abandoned-at-question" }
                outcomes.withLock { $0["refused change " + outcome, default: 0] += 1 }
            }
        }
        for index in 0..<count {
            let (principal, password) = cases[index % cases.count]
            slots.wait()
            if index / cases.count % 2 == 1, let password {
                // Every other pass, password-only as the saslauthd listener logs in: learnt etype info, the key
                // made in process, the worker's MEMORY keytab.
                service.verifyPassword(principal: principal, password: Secret(password)) { result in
                    outcomes.withLock { $0["password-only " + (result.failure?.rawValue ?? "ok"), default: 0] += 1 }
                    slots.signal()
                    done.signal()
                }
                continue
            }
            service.step(LoginConversation(principal: principal, password: password.map(Secret.init))) { step in
                let outcome: String
                switch step {
                case .finished(let result, _): outcome = result.failure?.rawValue ?? "ok"
                case .questions: outcome = "abandoned-at-question"
                }
                outcomes.withLock { $0[outcome, default: 0] += 1 }
                slots.signal()
                done.signal()
            }
        }
        for _ in 0..<count { done.wait() }
        service.shutdownBlocking()
        // krb5-login's way: one login on this thread, which becomes the engine's event loop and worker for it.
        let context = try Context(configuration.krb5)
        for index in 0..<count / 10 {
            let (principal, password) = cases[index % cases.count]
            let step = LoginService.stepBlocking(LoginConversation(principal: principal, password: password.map(Secret.init)),
                                                 configuration: configuration, context: context)
            let outcome = if case .finished(let result, _) = step { result.failure?.rawValue ?? "ok" } else { "abandoned-at-question" }
            outcomes.withLock { $0["one-shot " + outcome, default: 0] += 1 }
        }
        print(outcomes.withLock { $0 }.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
    }
}
