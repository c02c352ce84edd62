public import LoginService
public import SystemPackage
import KerberosSecrets
import LoginProtocol
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
        /// pam-exec mode: after a verified login, require that the principal may log in as `PAM_USER`
        /// (`krb5_kuserok`: `.k5login`, `auth_to_local`). On by default, as in pam-krb5.
        public var authorize: Bool
        /// pam-exec mode: the principal for `PAM_USER`, with `%s` standing for the user and `%%` for `%`
        /// (pam-krb5's `alt_auth_map`), such as `%s/admin` or `%s@OTHER.REALM`. Nil: the user's name itself.
        public var principalFormat: String?
        /// Accept a result that is not verified against a keytab (from `krb5-verifyd`); off by default.
        public var allowUnverified: Bool
        /// The uids `krb5-verifyd` may run as (checked on the socket's peer); root and this process's
        /// effective uid are always accepted.
        public var daemonUIDs: Set<UInt32>

        /// Options with the given members.
        public init(mode: Mode, principal: String? = nil, configuration: LoginConfiguration, daemonSocket: String? = nil, cacheOwner: (uid: UInt32, gid: UInt32)? = nil,
                    authorize: Bool = true, principalFormat: String? = nil, allowUnverified: Bool = false, daemonUIDs: Set<UInt32> = []) {
            self.mode = mode
            self.principal = principal
            self.configuration = configuration
            self.daemonSocket = daemonSocket
            self.cacheOwner = cacheOwner
            self.authorize = authorize
            self.principalFormat = principalFormat
            self.allowUnverified = allowUnverified
            self.daemonUIDs = daemonUIDs
        }
    }

    /// What pam_exec's `PAM_TYPE` asks of the helper in pam-exec mode.
    public enum PAMType: Equatable, Sendable {
        /// `auth` (also an unset `PAM_TYPE`): a verified login, then authorization for `PAM_USER`.
        case auth
        /// `account`, `open_session`, `close_session`: nothing to do; succeeds without the KDC.
        case passThrough(String)
        /// `password`: refused; pam_exec cannot converse, so a password change is impossible here.
        case password
        /// Anything else: refused.
        case unknown(String)

        /// The type for `PAM_TYPE`'s value.
        public init(_ value: String?) {
            switch value {
            case nil, "auth"?: self = .auth
            case "account"?, "open_session"?, "close_session"?: self = .passThrough(value!)
            case "password"?: self = .password
            case let other?: self = .unknown(other)
            }
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

    /// The environment variables ``run(input:output:errors:environment:)`` reads (pam_exec's); the executable
    /// passes only these, so a login does not copy the whole environment into a dictionary.
    public static let environmentVariables = ["PAM_TYPE", "PAM_USER", "PAM_SERVICE"]

    /// Runs one login reading `input`, writing protocol output to `output` and one diagnostic line to `errors`.
    ///
    /// With `exiting`, a login made in this process ends the process through it once the login is over (its output
    /// written), from inside the login's event loop, which so is never shut down (``InProcessLogin/step(_:finishing:)``);
    /// otherwise, and for every other ending, the status is returned.
    ///
    /// > Warning: Blocks on the network and on input; call from a plain thread (the executable's main thread).
    public func run(input: FileDescriptor, output: FileDescriptor, errors: FileDescriptor, environment: [String: String],
                    exiting: ((ExitStatus) -> Never)? = nil) -> ExitStatus {
        let reader = InputReader(input)
        let diagnostics = LineWriter(descriptor: errors)
        if options.mode == .pamExec {
            switch PAMType(environment["PAM_TYPE"]) {
            case .auth: break
            case .passThrough:
                // account and session stacks: authentication and authorization happened in auth.
                return .authenticated
            case .password:
                diagnostics.line("krb5-login: PAM_TYPE=password: password changes are not possible through pam_exec, "
                                 + "which cannot ask for a new password; use kpasswd, or krb5-login --conversation behind a program that can ask")
                return .denied
            case .unknown(let type):
                diagnostics.line("krb5-login: PAM_TYPE=\(Self.printable(type)) is not one krb5-login knows; refused")
                return .denied
            }
        }
        switch prepare(reader: reader, output: output, environment: environment, diagnostics: diagnostics) {
        case .failure(let status, let reason):
            diagnostics.line("krb5-login: \(reason)")
            return status
        case .success(let conversation, let asker):
            let conclude = { (result: LoginResult) in self.conclude(result, asker: asker, diagnostics: diagnostics, environment: environment) }
            let finishing = exiting.map { exit in
                { (result: LoginResult, info: [String]) -> Never in
                    info.forEach(asker.inform)
                    exit(conclude(result))
                }
            }
            return conclude(converse(conversation, asker: asker, diagnostics: diagnostics, finishing: finishing))
        }
    }

    /// What follows a login that ended: the checks of a successful one (verified, authorized, its cache handed over),
    /// the answer source's last word and the diagnostic line; returns the exit status.
    private func conclude(_ result: LoginResult, asker: any AnswerSource, diagnostics: LineWriter, environment: [String: String]) -> ExitStatus {
        let status = ExitStatus(result)
        guard result.ok else {
            asker.finish(result)
            diagnostics.line("krb5-login: \(result.failure!.rawValue): \(result.message ?? "login failed")")
            return status
        }
        if !result.verified && !options.allowUnverified {
            let refused = LoginResult.failed(.verificationFailed, "the login was not verified against a keytab (--allow-unverified accepts that)",
                                             principal: result.principal)
            asker.finish(refused)
            diagnostics.line("krb5-login: \(refused.failure!.rawValue): \(refused.message!)")
            return .denied
        }
        if options.mode == .pamExec, options.authorize, let user = environment["PAM_USER"] {
            if let refusal = authorization(of: result.principal ?? "", asLocalUser: user) {
                diagnostics.line("krb5-login: \(refusal)")
                return .denied
            }
        }
        if let failure = handOverCache() {
            asker.finish(.failed(.internal, failure, principal: result.principal))
            diagnostics.line("krb5-login: \(failure)")
            return .unavailable
        }
        asker.finish(result)
        return status
    }

    /// Nil when `principal` may log in as `user` (``LocalAccounts/authorizes(_:asLocalUser:)``), otherwise why not.
    func authorization(of principal: String, asLocalUser user: String) -> String? {
        do {
            if try LocalAccounts(configuration: options.configuration).authorizes(principal, asLocalUser: user) { return nil }
            return "not-authorized: \(Self.printable(principal)) is verified but not allowed to log in as \(Self.printable(user)) "
                + "(the account's .k5login does not list it, or no auth_to_local rule maps it to the account)"
        } catch {
            return "not-authorized: cannot check \(Self.printable(principal)) for \(Self.printable(user)): \(error)"
        }
    }

    /// The principal name for a PAM user under `format` (`%s` the user, `%%` a percent sign), or nil when the
    /// format has another `%` sequence.
    public static func principal(forUser user: String, format: String?) -> String? {
        guard let format else { return user }
        var name = ""
        var iterator = format.makeIterator()
        while let character = iterator.next() {
            guard character == "%" else {
                name.append(character)
                continue
            }
            switch iterator.next() {
            case "s"?: name += user
            case "%"?: name.append("%")
            default: return nil
            }
        }
        return name
    }

    /// Whether a run uses a secure krb5 context, which ignores the environment (`KRB5_CONFIG`, `KRB5_KTNAME`,
    /// `KRB5_TRACE`, `KRB5CCNAME`): in pam-exec mode, whose environment is the PAM environment that modules
    /// and applications fill, and whenever the real and effective uids differ (set-uid use). `--krb5-config`
    /// files, when given, are read in either case.
    public static func usesSecureContext(mode: Mode, realUID: UInt32, effectiveUID: UInt32) -> Bool {
        mode == .pamExec || realUID != effectiveUID
    }

    /// `text` with control characters escaped, for one diagnostic line.
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(256) {
            if scalar.value < 0x20 || scalar.value == 0x7F { out += "\\x" + String(scalar.value, radix: 16) } else { out.unicodeScalars.append(scalar) }
        }
        return out
    }

    private enum Prepared {
        case success(LoginConversation, any AnswerSource)
        case failure(ExitStatus, String)
    }

    /// Reads the login request for the mode.
    private func prepare(reader: InputReader, output: FileDescriptor, environment: [String: String], diagnostics: LineWriter) -> Prepared {
        do {
            switch options.mode {
            case .pamExec:
                guard let user = environment["PAM_USER"], !user.isEmpty else {
                    return .failure(.usage, "PAM_USER is not set (run from pam_exec with expose_authtok)")
                }
                guard let password = try reader.readSecret(until: [0], limit: Self.maximumPasswordLength), !password.isEmpty else {
                    return .failure(.usage, "no password on standard input")
                }
                guard let principal = Self.principal(forUser: user, format: options.principalFormat) else {
                    return .failure(.usage, "--principal-format may only contain %s and %%")
                }
                return .success(LoginConversation(principal: principal, password: password, service: environment["PAM_SERVICE"]), PAMExecAnswers(output: output))
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
    private func converse(_ conversation: LoginConversation, asker: any AnswerSource, diagnostics: LineWriter,
                          finishing: ((LoginResult, [String]) -> Never)?) -> LoginResult {
        let backend: any LoginBackend
        do {
            backend = try options.daemonSocket.map { try DaemonBackend(socketPath: $0, allowedUIDs: options.daemonUIDs.union([0, geteuid()])) }
                ?? InProcessBackend(configuration: options.configuration, finishing: finishing)
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
                    let reason = asker is NoAnswers || asker is PAMExecAnswers ? Self.unanswered(questions) : "the questions were not answered"
                    return .failed(.badCredentials, reason, principal: conversation.principal)
                }
                step = backend.answer(conversation, answers, round: id)
            }
        }
    }

    /// Gives a FILE cache to the session's user (``CacheHandOver``).
    private func handOverCache() -> String? {
        guard let owner = options.cacheOwner, let name = options.configuration.outputCache else { return nil }
        let path: String
        if name.hasPrefix("FILE:") { path = String(name.dropFirst(5)) }
        else if name.hasPrefix("/") { path = name }
        else { return nil }
        do { try CacheHandOver.give(path: path, uid: owner.uid, gid: owner.gid) } catch {
            return "cannot give \(path) to uid \(owner.uid): \(error)"
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
        if questions.contains(where: { if case .newPassword = $0 { true } else if case .newPasswordAgain = $0 { true } else { false } }) {
            return "the password has expired and must be changed, which this input mode cannot do: change it with kpasswd, "
                + "or log in with krb5-login --conversation or on a terminal"
        }
        return "the KDC asked for \(Array(Set(needs)).sorted().joined(separator: " and ")), which this input mode cannot provide"
    }

    private static func trimmingCR(_ secret: Secret) -> Secret {
        secret.withUnsafeBytes { bytes in
            bytes.last == UInt8(ascii: "\r") ? Secret(copying: UnsafeRawBufferPointer(rebasing: bytes.dropLast())) : secret
        }
    }
}

/// Writes whole lines to a file descriptor (interrupted writes are retried; a closed reader ends the output).
struct LineWriter {
    let descriptor: FileDescriptor
    func line(_ text: String) {
        write(Array((text + "\n").utf8))
    }
    func write(_ bytes: [UInt8]) {
        _ = try? descriptor.writeAll(bytes)
    }
}
