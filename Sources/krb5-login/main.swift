public import ArgumentParser
import Kerberos
import LoginHelper
import LoginService
#if canImport(Glibc)
import Glibc
#endif

/// `krb5-login`: credentials on standard input, a verified Kerberos login, an exit status a PAM stack understands.
struct LoginCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "krb5-login",
        abstract: "Log a user in against Kerberos with verification; the answer is the exit status.",
        discussion: """
            Exit status: 0 authenticated and verified, 1 denied, 2 usage error or malformed input, 3 unavailable \
            (KDC or daemon unreachable, unusable configuration). Passwords are read from standard input only.
            """,
        version: KerberosVersion.current)

    @Flag(name: .customLong("pam-exec"), help: "pam_exec(8) expose_authtok: user from PAM_USER, password on stdin up to NUL.")
    var pamExec = false
    @Flag(help: "Speak the JSON-lines conversation protocol on stdin/stdout (docs/protocol.md).")
    var conversation = false
    @Flag(help: "Prompt on the terminal (the default when stdin is a terminal).")
    var interactive = false
    @Argument(help: "The principal, for interactive mode.")
    var principal: String?

    @Option(help: "The keytab that verifies the login (default: krb5's default keytab).")
    var keytab: String?
    @Option(name: .customLong("server-principal"), help: "The service principal to verify against (default: host/<this host>).")
    var serverPrincipal: String?
    @Option(help: "The realm for principals without one.")
    var realm: String?
    @Option(name: .customLong("krb5-config"), help: "A krb5.conf to use instead of the default (repeatable).")
    var krb5Config: [String] = []
    @Option(help: "Store the verified TGT in this credential cache, such as FILE:/tmp/krb5cc_1000.")
    var ccache: String?
    @Option(help: "Owner uid for the cache (when run as root).")
    var uid: UInt32?
    @Option(help: "Owner gid for the cache (when run as root).")
    var gid: UInt32?
    @Option(help: "Ticket lifetime, such as 10h.")
    var lifetime: String?
    @Option(name: .customLong("renew-lifetime"), help: "Renewable lifetime, such as 7d.")
    var renewLifetime: String?
    @Option(name: .customLong("login-timeout"), help: "Give up on the KDCs after this long, such as 6s: exit 3, kdc-unreachable (default 6s).")
    var loginTimeout: String?
    @Flag(inversion: .prefixedNo, help: "Request a forwardable ticket.")
    var forwardable: Bool?
    @Option(help: "FAST armor: anonymous, keytab or none.")
    var armor: LoginConfiguration.ArmorSource = .none
    @Flag(name: .customLong("fast-required"), help: "Fail unless the exchange is armored with FAST.")
    var fastRequired = false
    @Flag(name: .customLong("enterprise-names"), help: "Send a user@suffix name (an Active Directory UPN) as an enterprise name, canonicalized (kinit -E).")
    var enterpriseNames = false
    @Flag(help: "Ask the KDC to canonicalize the client name (kinit -C).")
    var canonicalize = false
    @Option(name: .customLong("pkinit-identity"), help: "PKINIT identity, such as PKCS11:module_name=…:token=… or FILE:cert,key.")
    var pkinitIdentity: String?
    @Option(name: .customLong("preauth-option"), help: "Any other pre-authentication option NAME=VALUE (repeatable).")
    var preauthOptions: [String] = []
    @Option(help: "Relay through krb5-verifyd's conversation socket instead of calling krb5 in process.")
    var daemon: String?
    @Option(name: .customLong("daemon-uid"), help: "A uid krb5-verifyd may run as, besides root and this user (repeatable).")
    var daemonUIDs: [UInt32] = []
    @Flag(name: .customLong("allow-unverified"), help: "Accept a login krb5-verifyd did not verify against a keytab (not for PAM).")
    var allowUnverified = false
    @Flag(name: .customLong("no-authorize"), help: "pam-exec: skip the check that the principal may log in as PAM_USER (.k5login, auth_to_local).")
    var noAuthorize = false
    @Option(name: .customLong("principal-format"), help: "pam-exec: the principal for PAM_USER, %s standing for the user, such as %s/admin or %s@OTHER.REALM.")
    var principalFormat: String?

    func validate() throws {
        if [pamExec, conversation, interactive].filter({ $0 }).count > 1 {
            throw ValidationError("choose one of --pam-exec, --conversation and --interactive")
        }
        if (uid == nil) != (gid == nil) { throw ValidationError("--uid and --gid go together") }
        if uid != nil && ccache == nil { throw ValidationError("--uid/--gid need --ccache") }
        for option in preauthOptions where !option.contains("=" as Character) {
            throw ValidationError("--preauth-option \(option) is not NAME=VALUE")
        }
        if let lifetime, parseLifetime(lifetime) == nil { throw ValidationError("--lifetime \(lifetime) is not a duration such as 10h") }
        if let loginTimeout, (parseLifetime(loginTimeout) ?? .zero) <= .zero { throw ValidationError("--login-timeout \(loginTimeout) is not a duration such as 6s") }
        if let renewLifetime, parseLifetime(renewLifetime) == nil { throw ValidationError("--renew-lifetime \(renewLifetime) is not a duration such as 7d") }
        if fastRequired && armor == .none { throw ValidationError("--fast-required needs --armor anonymous or keytab") }
        if let principalFormat, LoginHelper.principal(forUser: "user", format: principalFormat) == nil {
            throw ValidationError("--principal-format \(principalFormat) may only contain %s (the user) and %% (a percent sign)")
        }
        if principalFormat != nil && !pamExec { throw ValidationError("--principal-format is for --pam-exec") }
        if allowUnverified && daemon == nil { throw ValidationError("--allow-unverified is for --daemon") }
    }

    func options() -> LoginHelper.Options {
        var preauth = preauthOptions.map { option -> LoginConfiguration.PreauthOption in
            let parts = option.split(separator: "=", maxSplits: 1)
            return .init(name: String(parts[0]), value: String(parts[1]))
        }
        if let pkinitIdentity { preauth.insert(.init(name: "X509_user_identity", value: pkinitIdentity), at: 0) }
        let mode: LoginHelper.Mode
        if pamExec { mode = .pamExec }
        else if conversation { mode = .conversation }
        else if interactive || isatty(STDIN_FILENO) == 1 { mode = .interactive }
        else { mode = .lines }
        let secure = LoginHelper.usesSecureContext(mode: mode, realUID: getuid(), effectiveUID: geteuid())
        var configuration = LoginConfiguration(
            krb5: Context.Configuration(files: krb5Config, secure: secure),
            keytab: keytab, serverPrincipal: serverPrincipal, realm: realm, armor: armor, fastRequired: fastRequired,
            ticketLifetime: lifetime.flatMap(parseLifetime), renewLifetime: renewLifetime.flatMap(parseLifetime),
            forwardable: forwardable, preauthOptions: preauth, outputCache: ccache,
            enterpriseNames: enterpriseNames, canonicalize: canonicalize)
        if let timeout = loginTimeout.flatMap(parseLifetime) { configuration.loginTimeout = timeout }
        return LoginHelper.Options(mode: mode, principal: principal, configuration: configuration, daemonSocket: daemon,
                                   cacheOwner: uid.map { ($0, gid!) }, authorize: !noAuthorize, principalFormat: principalFormat,
                                   allowUnverified: allowUnverified, daemonUIDs: Set(daemonUIDs))
    }
}

extension LoginConfiguration.ArmorSource: ExpressibleByArgument {}

// Usage errors exit 2 (not ArgumentParser's 64) so a PAM stack sees the documented status.
do {
    var parsed = try LoginCommand.parseAsRoot()
    guard let command = parsed as? LoginCommand else {
        // ArgumentParser's own commands (help): running them throws the CleanExit handled below.
        try parsed.run()
        exit(0)
    }
    var environment: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let pair = String(cString: entry)
        if let equals = pair.firstIndex(of: "=") { environment[String(pair[..<equals])] = String(pair[pair.index(after: equals)...]) }
        pointer += 1
    }
    let status = LoginHelper(options: command.options()).run(input: STDIN_FILENO, output: STDOUT_FILENO, errors: STDERR_FILENO, environment: environment)
    exit(status.rawValue)
} catch {
    let code = LoginCommand.exitCode(for: error)
    let message = LoginCommand.fullMessage(for: error)
    if code == .success {
        print(message)
        exit(0)
    }
    FileHandleLine.standardError("krb5-login: \(message)")
    exit(ExitStatus.usage.rawValue)
}

enum FileHandleLine {
    static func standardError(_ text: String) {
        let bytes = Array((text + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
