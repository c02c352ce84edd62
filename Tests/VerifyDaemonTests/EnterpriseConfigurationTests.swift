import LoginService
import Testing
@testable import VerifyDaemon

/// `enterprise_names` and `canonicalize` in the TOML file; no KDC needed.
@Suite("krb5-verifyd: enterprise names and canonicalization in the configuration")
struct EnterpriseConfigurationTests {
    @Test("both keys are read, off by default, and must be booleans")
    func keys() throws {
        var defaults = DaemonConfiguration()
        try defaults.load(toml: "sasl_socket = \"/tmp/a\"\n")
        #expect(!defaults.login.enterpriseNames)
        #expect(!defaults.login.canonicalize)

        var configuration = DaemonConfiguration()
        try configuration.load(toml: "sasl_socket = \"/tmp/a\"\nenterprise_names = true\ncanonicalize = true\n")
        #expect(configuration.login.enterpriseNames)
        #expect(configuration.login.canonicalize)

        var wrong = DaemonConfiguration()
        #expect(throws: ConfigurationError("configuration: enterprise_names must be true or false")) {
            try wrong.load(toml: "sasl_socket = \"/tmp/a\"\nenterprise_names = \"yes\"\n")
        }
    }
}
