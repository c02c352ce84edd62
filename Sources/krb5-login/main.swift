import LoginHelper
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `krb5-login`: credentials on standard input, a verified Kerberos login, an exit status a PAM stack understands.
/// Usage errors exit 2 (``ExitStatus/usage``), so a PAM stack sees the documented status.
func standardError(_ text: String) {
    _ = try? FileDescriptor.standardError.writeAll(Array((text + "\n").utf8))
}

/// Ends the process without its exit handlers: every answer went out through unbuffered writes, every file krb5
/// wrote is closed, and the handlers (libcrypto's OPENSSL_cleanup, the libraries' destructors) only free memory the
/// kernel takes back anyway; they cost a login a measurable part of a millisecond (docs/login-helper.md).
func exitWithoutCleanUp(_ status: Int32) -> Never {
    fflush(nil)
    _exit(status)
}

do {
    switch try HelperArguments.parse(Array(CommandLine.arguments.dropFirst()), standardInputIsTerminal: isatty(STDIN_FILENO) == 1,
                                     realUID: getuid(), effectiveUID: geteuid()) {
    case .print(let text):
        print(text)
        exit(0)
    case .login(let options):
        var environment: [String: String] = [:]
        for name in LoginHelper.environmentVariables {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        let status = LoginHelper(options: options).run(input: .standardInput, output: .standardOutput, errors: .standardError, environment: environment,
                                                       exiting: { exitWithoutCleanUp($0.rawValue) })
        exitWithoutCleanUp(status.rawValue)
    }
} catch {
    standardError("krb5-login: \(error)\nUsage: krb5-login [<options>] [<principal>]; see krb5-login --help")
    exit(ExitStatus.usage.rawValue)
}
