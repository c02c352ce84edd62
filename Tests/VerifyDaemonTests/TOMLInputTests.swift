import Foundation
import Testing
@testable import VerifyDaemon

/// Configuration text that toml++ (TOMLKit's parser) does not survive is refused first, with the line named
/// (docs/fuzzing.md, finding 3: a table header that does not start with a key fails an assertion and aborts).
@Suite("Configuration: text the TOML parser would not survive")
struct TOMLInputTests {
    @Test("a table header that does not start with a key, and control characters, are errors naming the line", arguments: [
        ("sasl_socket = \"/tmp/a\"\n[=]\n", "configuration: line 2: a table header must start with a key (a bare key or a quoted one)"),
        ("[#]\n", "configuration: line 1: a table header must start with a key (a bare key or a quoted one)"),
        ("[.a]\n", "configuration: line 1: a table header must start with a key (a bare key or a quoted one)"),
        ("  [[ =]]\n", "configuration: line 1: a table header must start with a key (a bare key or a quoted one)"),
        (" \n[\n[[t]]\nx = 0x\n", "configuration: line 2: a table header must start with a key (a bare key or a quoted one)"),
        ("[\r\n", "configuration: line 1: a table header must start with a key (a bare key or a quoted one)"),
        ("\u{FEFF}[}", "configuration: line 1: a table header must start with a key (a bare key or a quoted one)"),
        ("\u{A0}[=]", "configuration: line 1: a table header must start with a key (a bare key or a quoted one)"),
        ("a = [}]\n", "configuration: line 1: \"}\" where an array value should be"),
        ("socket = \"/run/c\"\nrealms = [\"A\", \"B\",} \"C\"]\n", "configuration: line 2: \"}\" where an array value should be"),
        ("a = [\n  # comment ,}\n  \"x\", # \"\n }]\n", "configuration: line 4: \"}\" where an array value should be"),
        ("a = 1\n\n[\u{1}\u{0}ms.\"EXAMPLE.COM\"]\n", "configuration: line 3: control character U+1 is not allowed in TOML"),
        ("log_level = \"info\u{7F}\"\n", "configuration: line 1: control character U+7F is not allowed in TOML"),
    ])
    func refused(text: String, error: String) {
        var configuration = DaemonConfiguration()
        #expect(throws: ConfigurationError(error)) { try configuration.load(toml: text) }
    }

    @Test("headers that start with a key, quoted or bare, and multi-line arrays still load")
    func accepted() throws {
        var configuration = DaemonConfiguration()
        try configuration.load(toml: """
        sasl_socket = "/tmp/a"\r
        log_level = "info" # [}, ",}" in a comment
        server_principal = "host/[},x\\"y"
        armor_principal = '''a,}'''
        krb5_config = [
          "/etc/krb5.conf",\t# the system's
        ]
        [realms."EXAMPLE.ORG"]
        [ realms.'AD.EXAMPLE' ]
        keytab = "/etc/krb5-ad.keytab"
        """)
        #expect(configuration.login.realms == ["AD.EXAMPLE", "EXAMPLE.ORG"])
        #expect(configuration.login.serverPrincipal == "host/[},x\"y")
    }

    @Test("the input make fuzz found is refused, not an abort")
    func fuzzedInput() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/toml/control-in-table-header").path
        var configuration = DaemonConfiguration()
        #expect(throws: ConfigurationError.self) { try configuration.load(tomlFile: path) }
    }
}
