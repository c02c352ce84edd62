import LoginHelper
import LoginService
import Testing

/// krb5-login's hand-written command line, without a KDC.
@Suite("krb5-login's command line")
struct HelperArgumentsTests {
    func parse(_ arguments: [String], terminal: Bool = false) throws(HelperArguments.UsageError) -> HelperArguments.Action {
        try HelperArguments.parse(arguments, standardInputIsTerminal: terminal, realUID: 1000, effectiveUID: 1000)
    }

    func options(_ arguments: [String], terminal: Bool = false) throws -> LoginHelper.Options {
        guard case .login(let options) = try parse(arguments, terminal: terminal) else { throw NotALogin() }
        return options
    }

    func usageError(_ arguments: [String]) -> String? {
        do { _ = try parse(arguments) } catch { return error.description }
        return nil
    }

    @Test("both value forms, repeated options, the principal, flags and their inversions")
    func values() throws {
        let parsed = try options(["--keytab", "/k", "--krb5-config=/a.conf", "--krb5-config", "/b.conf", "--armor=anonymous", "--fast-required",
                                  "--login-timeout", "2s", "--no-forwardable", "--daemon-uid", "7", "--daemon-uid=8", "--preauth-option", "a=b=c",
                                  "--pkinit-identity", "FILE:x", "alice@KRB5.TEST"])
        #expect(parsed.configuration.keytab == "/k")
        #expect(parsed.configuration.krb5.files == ["/a.conf", "/b.conf"])
        #expect(parsed.configuration.armor == .anonymous && parsed.configuration.fastRequired)
        #expect(parsed.configuration.loginTimeout == .seconds(2))
        #expect(parsed.configuration.forwardable == false)
        #expect(parsed.daemonUIDs == [7, 8])
        #expect(parsed.configuration.preauthOptions.map { "\($0.name)=\($0.value)" } == ["X509_user_identity=FILE:x", "a=b=c"])
        #expect(parsed.principal == "alice@KRB5.TEST")
        #expect(parsed.mode == .lines && !parsed.configuration.krb5.secure)
        #expect(try options(["--forwardable"]).configuration.forwardable == true)
        #expect(try options([]).configuration.forwardable == nil)
    }

    @Test("the mode: pam-exec (a secure context), conversation, a terminal's interactive mode, lines")
    func modes() throws {
        let pam = try options(["--pam-exec"])
        #expect(pam.mode == .pamExec && pam.configuration.krb5.secure && pam.authorize)
        #expect(try options(["--conversation"]).mode == .conversation)
        #expect(try options([], terminal: true).mode == .interactive)
        #expect(try options(["--interactive"]).mode == .interactive)
        #expect(try options(["--pam-exec", "--no-authorize", "--principal-format", "%s/admin"]).authorize == false)
        #expect(try options(["--", "-odd-principal"]).principal == "-odd-principal")
    }

    @Test("help and version print and exit 0")
    func helpAndVersion() throws {
        for flag in ["--help", "-h"] {
            guard case .print(let text) = try parse([flag, "--armor", "anonymous"]) else {
                Issue.record("\(flag) is not help")
                continue
            }
            #expect(text.contains("USAGE: krb5-login"))
            #expect(text.contains("--login-timeout <duration>"))
        }
        guard case .print(let version) = try parse(["--version"]) else { Issue.record("--version"); return }
        #expect(!version.isEmpty)
    }

    @Test("usage errors name the option and what was wrong")
    func errors() {
        #expect(usageError(["--no-such-flag"]) == "unknown option '--no-such-flag'")
        #expect(usageError(["--keytab"]) == "missing value for '--keytab <keytab>'")
        #expect(usageError(["--fast-required"]) == "--fast-required needs --armor anonymous or keytab")
        #expect(usageError(["--armor", "tls"]) == "--armor tls is not one of anonymous, keytab and none")
        #expect(usageError(["--uid", "x"]) == "--uid x is not a number")
        #expect(usageError(["--uid", "1"]) == "--uid and --gid go together")
        #expect(usageError(["--uid", "1", "--gid", "1"]) == "--uid/--gid need --ccache")
        #expect(usageError(["--pam-exec", "--conversation"]) == "choose one of --pam-exec, --conversation and --interactive")
        #expect(usageError(["--preauth-option", "novalue"]) == "--preauth-option novalue is not NAME=VALUE")
        #expect(usageError(["--login-timeout", "0s"]) == "--login-timeout 0s is not a duration such as 6s")
        #expect(usageError(["--lifetime", "soon"]) == "--lifetime soon is not a duration such as 10h")
        #expect(usageError(["--principal-format", "%u"])?.contains("may only contain %s") == true)
        #expect(usageError(["--principal-format", "%s"]) == "--principal-format is for --pam-exec")
        #expect(usageError(["--allow-unverified"]) == "--allow-unverified is for --daemon")
        #expect(usageError(["--canonicalize=yes"]) == "--canonicalize takes no value")
        #expect(usageError(["a", "b"]) == "unexpected argument 'b'")
    }
}

struct NotALogin: Error {}
