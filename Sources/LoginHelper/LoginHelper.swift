public import LoginService
import Kerberos
import LoginProtocol
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The work behind `krb5-login`: read credentials in one of four input modes, log in with verification
/// (in process or through `krb5-verifyd`), optionally leave the TGT in a cache, and answer with an exit status.
public struct LoginHelper {
    /// Where the credentials come from.
    public enum Mode: String, Sendable, CaseIterable {
        /// pam_exec(8) with `expose_authtok`: user in `PAM_USER`, password on stdin up to a NUL or end of input.
        case pamExec = "pam-exec"
        /// Principal on the first line of stdin, password on the second.
        case lines
        /// The JSON-lines protocol of `docs/protocol.md` on stdin/stdout.
        case conversation
        /// Prompts on the terminal with hidden input.
        case interactive
    }

    /// What one `krb5-login` run does, from its flags.
    public struct Options: Sendable {
        /// How the credentials are read.
        public var mode: Mode
        /// The principal for interactive mode (asked for when nil).
        public var principal: String?
        /// How the login is done: krb5 configuration, keytab, verification, output cache.
        public var configuration: LoginConfiguration
        /// Relay through `krb5-verifyd`'s conversation socket instead of calling krb5 in process.
        public var daemonSocket: String?
        /// Give the output cache to this user and group with mode 0600 (when run as root).
        public var cacheOwner: (uid: UInt32, gid: UInt32)?

        /// Options with the given members.
        public init(mode: Mode, principal: String? = nil, configuration: LoginConfiguration, daemonSocket: String? = nil, cacheOwner: (uid: UInt32, gid: UInt32)? = nil) {
            self.mode = mode
            self.principal = principal
            self.configuration = configuration
            self.daemonSocket = daemonSocket
            self.cacheOwner = cacheOwner
        }
    }

    /// PAM's `PAM_MAX_RESP_SIZE`: the longest password pam_exec passes.
    public static let maximumPasswordLength = 512
    /// The longest principal name accepted on a line.
    public static let maximumPrincipalLength = 1024

    /// The options this helper runs with.
    public let options: Options

    /// A helper that runs with `options`.
    public init(options: Options) {
        self.options = options
    }

    /// Runs one login reading `input`, writing protocol output to `output` and one diagnostic line to `errors`.
    ///
    /// > Warning: Blocks on the network and on input; call from a plain thread (the executable's main thread).
    public func run(input: Int32, output: Int32, errors: Int32, environment: [String: String]) -> ExitStatus {
        let reader = InputReader(fd: input)
        let diagnostics = LineWriter(fd: errors)
        if options.mode == .pamExec, let type = environment["PAM_TYPE"], type != "auth" {
            // pam_exec also runs for account, session and password stacks; only "auth" authenticates.
            return .authenticated
        }
        let status: ExitStatus
        let result: LoginResult
        switch prepare(reader: reader, output: output, environment: environment, diagnostics: diagnostics) {
        case .failure(let status, let reason):
            diagnostics.line("krb5-login: \(reason)")
            return status
        case .success(let conversation, let asker):
            result = converse(conversation, asker: asker, diagnostics: diagnostics)
            status = ExitStatus(result)
            asker.finish(result)
        }
        if result.ok {
            if let failure = handOverCache() {
                diagnostics.line("krb5-login: \(failure)")
                return .unavailable
            }
        } else {
            diagnostics.line("krb5-login: \(result.failure!.rawValue): \(result.message ?? "login failed")")
        }
        return status
    }

    private enum Prepared {
        case success(LoginConversation, any AnswerSource)
        case failure(ExitStatus, String)
    }

    /// Reads the login request for the mode.
    private func prepare(reader: InputReader, output: Int32, environment: [String: String], diagnostics: LineWriter) -> Prepared {
        do {
            switch options.mode {
            case .pamExec:
                guard let user = environment["PAM_USER"], !user.isEmpty else {
                    return .failure(.usage, "PAM_USER is not set (run from pam_exec with expose_authtok)")
                }
                guard let password = try reader.readSecret(until: [0], limit: Self.maximumPasswordLength), !password.isEmpty else {
                    return .failure(.usage, "no password on standard input")
                }
                return .success(LoginConversation(principal: user, password: password, service: environment["PAM_SERVICE"]), NoAnswers())
            case .lines:
                guard let principal = try reader.readLine(limit: Self.maximumPrincipalLength), !principal.isEmpty else {
                    return .failure(.usage, "expected the principal on the first line of standard input")
                }
                guard let password = try reader.readSecret(until: [UInt8(ascii: "\n")], limit: Self.maximumPasswordLength) else {
                    return .failure(.usage, "expected the password on the second line of standard input")
                }
                return .success(LoginConversation(principal: principal, password: Self.trimmingCR(password)), NoAnswers())
            case .conversation:
                let source = ConversationAnswers(reader: reader, output: output)
                guard let conversation = try source.readLogin() else {
                    return .failure(.usage, source.lastError ?? "expected a login request on standard input")
                }
                return .success(conversation, source)
            case .interactive:
                let terminal = TerminalAnswers()
                guard let principal = try options.principal ?? terminal.askPrincipal(), !principal.isEmpty else {
                    return .failure(.usage, "no principal given")
                }
                return .success(LoginConversation(principal: principal, password: nil), terminal)
            }
        } catch {
            return .failure(.usage, "malformed input: \(error)")
        }
    }

    /// Steps the conversation until it ends, asking `asker` for each round's answers.
    private func converse(_ conversation: LoginConversation, asker: any AnswerSource, diagnostics: LineWriter) -> LoginResult {
        let backend: any LoginBackend
        do {
            backend = try options.daemonSocket.map { try DaemonBackend(socketPath: $0) } ?? InProcessBackend(configuration: options.configuration)
        } catch {
            return .failed(.internal, "\(error)", principal: conversation.principal)
        }
        var step = backend.start(conversation)
        while true {
            switch step {
            case .finished(let result, let info):
                info.forEach(asker.inform)
                return result
            case .questions(let id, let questions, let info):
                info.forEach(asker.inform)
                guard let answers = asker.answers(to: questions, round: id), !answers.isEmpty else {
                    let reason = asker is NoAnswers ? Self.unanswered(questions) : "the questions were not answered"
                    return .failed(.badCredentials, reason, principal: conversation.principal)
                }
                step = backend.answer(conversation, answers, round: id)
            }
        }
    }

    /// Gives a FILE cache to the session's user.
    private func handOverCache() -> String? {
        guard let owner = options.cacheOwner, let name = options.configuration.outputCache else { return nil }
        let path: String
        if name.hasPrefix("FILE:") { path = String(name.dropFirst(5)) }
        else if name.hasPrefix("/") { path = name }
        else { return nil }
        guard chown(path, owner.uid, owner.gid) == 0, chmod(path, 0o600) == 0 else {
            return "cannot give \(path) to uid \(owner.uid): \(String(cString: strerror(errno)))"
        }
        return nil
    }

    static func unanswered(_ questions: [LoginQuestion]) -> String {
        let needs = questions.map { question -> String in
            switch question {
            case .password: "a password"
            case .otp: "a one-time password"
            case .pkinit: "a smart-card PIN"
            case .newPassword, .newPasswordAgain: "a new password (the password has expired)"
            case .text(let prompt, _): "an answer to \"\(prompt)\""
            case .raw(let name, _): "an answer to the \(name) question"
            }
        }
        return "the KDC asked for \(Array(Set(needs)).sorted().joined(separator: " and ")), which this input mode cannot provide"
    }

    private static func trimmingCR(_ secret: Secret) -> Secret {
        secret.withUnsafeBytes { bytes in
            bytes.last == UInt8(ascii: "\r") ? Secret(copying: UnsafeRawBufferPointer(rebasing: bytes.dropLast())) : secret
        }
    }
}

/// Writes whole lines to a file descriptor.
struct LineWriter {
    let fd: Int32
    func line(_ text: String) {
        write(Array((text + "\n").utf8))
    }
    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written <= 0 {
                if written < 0 && errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}
