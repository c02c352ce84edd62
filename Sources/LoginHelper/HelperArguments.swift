import enum Kerberos.KerberosVersion
import KerberosSecrets
import LoginService

/// `krb5-login`'s command line: a table of options, parsed by hand.
///
/// Process start is the helper's hot path (pam_exec starts one per login). ArgumentParser finds a command's
/// options by reflection (`Mirror`, protocol conformance lookups), which cost about 4 ms of every start, a
/// sixth of a whole verified login; this parser costs microseconds. Usage errors name the option at fault.
public enum HelperArguments {
    /// What the command line asks for.
    public enum Action: Sendable {
        /// A login with these options.
        case login(LoginHelper.Options)
        /// Print this text and exit 0 (`--help`, `-h`, `--version`).
        case print(String)
    }

    /// A usage error (exit 2), naming what was wrong.
    public struct UsageError: Error, CustomStringConvertible, Sendable {
        /// What was wrong, naming the option, such as `unknown option '--keytb'`.
        public let description: String
        init(_ description: String) { self.description = description }
    }

    /// Everything the options set, before validation.
    struct Values {
        var pamExec = false, conversation = false, interactive = false
        var principal: String?
        var keytab: String?, serverPrincipal: String?, realm: String?
        var krb5Config: [String] = []
        var ccache: String?
        var uid: UInt32?, gid: UInt32?
        var lifetime: String?, renewLifetime: String?, loginTimeout: String?
        var forwardable: Bool?
        var armor: LoginConfiguration.ArmorSource = .none
        var fastRequired = false, enterpriseNames = false, canonicalize = false
        var pkinitIdentity: String?
        var preauthOptions: [String] = []
        var daemon: String?
        var daemonUIDs: [UInt32] = []
        var allowUnverified = false, noAuthorize = false
        var principalFormat: String?
        var help = false, version = false
    }

    /// One option: its names, its value's name in the help (nil for a flag), its help, and what it sets.
    struct Option: Sendable {
        let names: [String]
        let value: String?
        let help: String
        let set: @Sendable (inout Values, String) throws(UsageError) -> Void

        static func flag(_ names: String..., help: String, _ set: @escaping @Sendable (inout Values) -> Void) -> Option {
            Option(names: names, value: nil, help: help) { values, _ in set(&values) }
        }

        static func value(_ name: String, _ placeholder: String, help: String, _ set: @escaping @Sendable (inout Values, String) throws(UsageError) -> Void) -> Option {
            Option(names: [name], value: placeholder, help: help, set: set)
        }
    }

    static func number(_ option: String, _ text: String) throws(UsageError) -> UInt32 {
        guard let value = UInt32(text) else { throw UsageError("\(option) \(text) is not a number") }
        return value
    }

    static let options: [Option] = [
        .flag("--pam-exec", help: "pam_exec(8) expose_authtok: user from PAM_USER, password on stdin up to NUL.") { $0.pamExec = true },
        .flag("--conversation", help: "Speak the JSON-lines conversation protocol on stdin/stdout (docs/protocol.md).") { $0.conversation = true },
        .flag("--interactive", help: "Prompt on the terminal (the default when stdin is a terminal).") { $0.interactive = true },
        .value("--keytab", "<keytab>", help: "The keytab that verifies the login (default: krb5's default keytab).") { $0.keytab = $1 },
        .value("--server-principal", "<principal>", help: "The service principal to verify against (default: host/<this host>).") { $0.serverPrincipal = $1 },
        .value("--realm", "<realm>", help: "The realm for principals without one.") { $0.realm = $1 },
        .value("--krb5-config", "<file>", help: "A krb5.conf to use instead of the default (repeatable).") { $0.krb5Config.append($1) },
        .value("--ccache", "<cache>", help: "Store the verified TGT in this credential cache, such as FILE:/tmp/krb5cc_1000.") { $0.ccache = $1 },
        .value("--uid", "<uid>", help: "Owner uid for the cache (when run as root).") { (values, text) throws(UsageError) in values.uid = try number("--uid", text) },
        .value("--gid", "<gid>", help: "Owner gid for the cache (when run as root).") { (values, text) throws(UsageError) in values.gid = try number("--gid", text) },
        .value("--lifetime", "<duration>", help: "Ticket lifetime, such as 10h.") { $0.lifetime = $1 },
        .value("--renew-lifetime", "<duration>", help: "Renewable lifetime, such as 7d.") { $0.renewLifetime = $1 },
        .value("--login-timeout", "<duration>", help: "Give up on the KDCs after this long, such as 6s: exit 3, kdc-unreachable (default 6s).") { $0.loginTimeout = $1 },
        .flag("--forwardable", help: "Request a forwardable ticket.") { $0.forwardable = true },
        .flag("--no-forwardable", help: "Request a ticket that is not forwardable.") { $0.forwardable = false },
        .value("--armor", "<source>", help: "FAST armor: anonymous, keytab or none (default: none).") { (values, text) throws(UsageError) in
            guard let armor = LoginConfiguration.ArmorSource(rawValue: text) else {
                throw UsageError("--armor \(text) is not one of anonymous, keytab and none")
            }
            values.armor = armor
        },
        .flag("--fast-required", help: "Fail unless the exchange is armored with FAST.") { $0.fastRequired = true },
        .flag("--enterprise-names", help: "Send a user@suffix name (an Active Directory UPN) as an enterprise name, canonicalized (kinit -E).") { $0.enterpriseNames = true },
        .flag("--canonicalize", help: "Ask the KDC to canonicalize the client name (kinit -C).") { $0.canonicalize = true },
        .value("--pkinit-identity", "<identity>", help: "PKINIT identity, such as PKCS11:module_name=…:token=… or FILE:cert,key.") { $0.pkinitIdentity = $1 },
        .value("--preauth-option", "<name=value>", help: "Any other pre-authentication option NAME=VALUE (repeatable).") { $0.preauthOptions.append($1) },
        .value("--daemon", "<socket>", help: "Relay through krb5-verifyd's conversation socket instead of calling krb5 in process.") { $0.daemon = $1 },
        .value("--daemon-uid", "<uid>", help: "A uid krb5-verifyd may run as, besides root and this user (repeatable).") { (values, text) throws(UsageError) in
            values.daemonUIDs.append(try number("--daemon-uid", text))
        },
        .flag("--allow-unverified", help: "Accept a login krb5-verifyd did not verify against a keytab (not for PAM).") { $0.allowUnverified = true },
        .flag("--no-authorize", help: "pam-exec: skip the check that the principal may log in as PAM_USER (.k5login, auth_to_local).") { $0.noAuthorize = true },
        .value("--principal-format", "<format>", help: "pam-exec: the principal for PAM_USER, %s standing for the user, such as %s/admin or %s@OTHER.REALM.") {
            $0.principalFormat = $1
        },
        .flag("--version", help: "Show the version.") { $0.version = true },
        .flag("-h", "--help", help: "Show help information.") { $0.help = true },
    ]

    /// The help text: usage, what the exit statuses mean, and every option.
    public static var help: String {
        var text = """
            OVERVIEW: Log a user in against Kerberos with verification; the answer is the exit status.

            Exit status: 0 authenticated and verified, 1 denied, 2 usage error or malformed input, 3 unavailable (KDC or \
            daemon unreachable, unusable configuration). Passwords are read from standard input only.

            USAGE: krb5-login [<options>] [<principal>]

            ARGUMENTS:
              <principal>             The principal, for interactive mode.

            OPTIONS:

            """
        for option in options {
            let name = option.names.joined(separator: ", ") + (option.value.map { " \($0)" } ?? "")
            text += "  " + name + String(repeating: " ", count: max(1, 32 - name.count)) + option.help + "\n"
        }
        return text
    }

    /// Parses `arguments` (without the program name). `standardInputIsTerminal` picks interactive mode when no
    /// mode is given; the uids decide the secure krb5 context (``LoginHelper/usesSecureContext(mode:realUID:effectiveUID:)``).
    public static func parse(_ arguments: [String], standardInputIsTerminal: Bool, realUID: UInt32, effectiveUID: UInt32) throws(UsageError) -> Action {
        var values = Values()
        var positional: [String] = []
        var index = 0
        var optionsEnded = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if optionsEnded || !argument.hasPrefix("-") || argument == "-" {
                positional.append(argument)
                continue
            }
            if argument == "--" {
                optionsEnded = true
                continue
            }
            let equals = argument.firstIndex(of: "=")
            let name = equals.map { String(argument[..<$0]) } ?? argument
            guard let option = options.first(where: { $0.names.contains(name) }) else { throw UsageError("unknown option '\(name)'") }
            if option.value == nil {
                guard equals == nil else { throw UsageError("\(name) takes no value") }
                try option.set(&values, "")
                continue
            }
            let value: String
            if let equals {
                value = String(argument[argument.index(after: equals)...])
            } else {
                guard index < arguments.count else { throw UsageError("missing value for '\(name) \(option.value ?? "")'") }
                value = arguments[index]
                index += 1
            }
            try option.set(&values, value)
        }
        if values.help { return .print(help) }
        if values.version { return .print(KerberosVersion.current) }
        guard positional.count <= 1 else { throw UsageError("unexpected argument '\(positional[1])'") }
        values.principal = positional.first
        try validate(values)
        return .login(makeOptions(values, standardInputIsTerminal: standardInputIsTerminal, realUID: realUID, effectiveUID: effectiveUID))
    }

    static func validate(_ values: Values) throws(UsageError) {
        if [values.pamExec, values.conversation, values.interactive].filter({ $0 }).count > 1 {
            throw UsageError("choose one of --pam-exec, --conversation and --interactive")
        }
        if (values.uid == nil) != (values.gid == nil) { throw UsageError("--uid and --gid go together") }
        if values.uid != nil && values.ccache == nil { throw UsageError("--uid/--gid need --ccache") }
        for option in values.preauthOptions where !option.contains("=" as Character) {
            throw UsageError("--preauth-option \(option) is not NAME=VALUE")
        }
        if let lifetime = values.lifetime, parseLifetime(lifetime) == nil { throw UsageError("--lifetime \(lifetime) is not a duration such as 10h") }
        if let timeout = values.loginTimeout, (parseLifetime(timeout) ?? .zero) <= .zero {
            throw UsageError("--login-timeout \(timeout) is not a duration such as 6s")
        }
        if let renew = values.renewLifetime, parseLifetime(renew) == nil { throw UsageError("--renew-lifetime \(renew) is not a duration such as 7d") }
        if values.fastRequired && values.armor == .none { throw UsageError("--fast-required needs --armor anonymous or keytab") }
        if let format = values.principalFormat, LoginHelper.principal(forUser: "user", format: format) == nil {
            throw UsageError("--principal-format \(format) may only contain %s (the user) and %% (a percent sign)")
        }
        if values.principalFormat != nil && !values.pamExec { throw UsageError("--principal-format is for --pam-exec") }
        if values.allowUnverified && values.daemon == nil { throw UsageError("--allow-unverified is for --daemon") }
    }

    static func makeOptions(_ values: Values, standardInputIsTerminal: Bool, realUID: UInt32, effectiveUID: UInt32) -> LoginHelper.Options {
        var preauth = values.preauthOptions.map { option -> LoginConfiguration.PreauthOption in
            let parts = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return .init(name: String(parts[0]), value: String(parts[1]))
        }
        if let identity = values.pkinitIdentity { preauth.insert(.init(name: "X509_user_identity", value: identity), at: 0) }
        let mode: LoginHelper.Mode
        if values.pamExec { mode = .pamExec }
        else if values.conversation { mode = .conversation }
        else if values.interactive || standardInputIsTerminal { mode = .interactive }
        else { mode = .lines }
        let secure = LoginHelper.usesSecureContext(mode: mode, realUID: realUID, effectiveUID: effectiveUID)
        var configuration = LoginConfiguration(
            krb5: .init(files: values.krb5Config, secure: secure),
            keytab: values.keytab, serverPrincipal: values.serverPrincipal, realm: values.realm, armor: values.armor,
            fastRequired: values.fastRequired, ticketLifetime: values.lifetime.flatMap(parseLifetime),
            renewLifetime: values.renewLifetime.flatMap(parseLifetime), forwardable: values.forwardable, preauthOptions: preauth,
            outputCache: values.ccache, enterpriseNames: values.enterpriseNames, canonicalize: values.canonicalize)
        if let timeout = values.loginTimeout.flatMap(parseLifetime) { configuration.loginTimeout = timeout }
        return LoginHelper.Options(mode: mode, principal: values.principal, configuration: configuration, daemonSocket: values.daemon,
                                   cacheOwner: values.uid.map { ($0, values.gid!) }, authorize: !values.noAuthorize,
                                   principalFormat: values.principalFormat, allowUnverified: values.allowUnverified,
                                   daemonUIDs: Set(values.daemonUIDs))
    }
}
