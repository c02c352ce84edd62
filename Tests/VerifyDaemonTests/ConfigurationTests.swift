import Foundation
import Kerberos
import LoginService
import NIOCore
import Testing
@testable import VerifyDaemon

/// The TOML file, durations and validation; no KDC needed.
@Suite("krb5-verifyd: configuration")
struct ConfigurationTests {
    @Test("every documented key is read from TOML")
    func everyKey() throws {
        var configuration = DaemonConfiguration()
        try configuration.load(toml: """
        sasl_socket = "/run/saslauthd/mux"
        socket = "/run/krb5-verifyd/conversation"
        socket_mode = "0600"
        socket_group = "postfix"
        krb5_config = ["/etc/krb5.conf", "/etc/krb5.local.conf"]
        keytab = "/etc/krb5.keytab"
        server_principal = "host/mail.example.com"
        realm = "EXAMPLE.COM"
        armor = "anonymous"
        fast_required = true
        workers = 8
        max_connections = 50
        read_timeout = "3s"
        idle_timeout = 2
        round_timeout = "2m"
        max_parked_conversations = 99
        failure_floor = "250ms"
        throttle_failures = 7
        throttle_window = "90s"
        throttle_backoff = 1.5
        throttle_max_backoff = "1h"
        allowed_uids = [0, 105]
        allowed_gids = [8]
        metrics_listen = "127.0.0.1:9469"
        log_level = "debug"
        ticket_lifetime = "10m"
        optimistic_preauth = true
        result_cache_ttl = "30s"
        insecure_skip_verification = false
        """)
        #expect(configuration.saslSocket == "/run/saslauthd/mux")
        #expect(configuration.socket == "/run/krb5-verifyd/conversation")
        #expect(configuration.socketMode == 0o600)
        #expect(configuration.socketGroup == "postfix")
        #expect(configuration.login.keytab == "/etc/krb5.keytab")
        #expect(configuration.login.serverPrincipal == "host/mail.example.com")
        #expect(configuration.login.realm == "EXAMPLE.COM")
        #expect(configuration.login.armor == .anonymous)
        #expect(configuration.login.fastRequired)
        #expect(configuration.login.verify, "false leaves verification on")
        #expect(configuration.login.optimisticPreauth)
        #expect(configuration.login.ticketLifetime == .seconds(600))
        #expect(configuration.workers == 8)
        #expect(configuration.maxConnections == 50)
        #expect(configuration.readTimeout == .seconds(3))
        #expect(configuration.idleTimeout == .seconds(2))
        #expect(configuration.roundTimeout == .seconds(120))
        #expect(configuration.maxParkedConversations == 99)
        #expect(configuration.failureFloor == .milliseconds(250))
        #expect(configuration.throttleFailures == 7)
        #expect(configuration.throttleWindow == .seconds(90))
        #expect(configuration.throttleBackoff == .milliseconds(1500))
        #expect(configuration.throttleMaxBackoff == .seconds(3600))
        #expect(configuration.allowedUIDs == [0, 105])
        #expect(configuration.allowedGIDs == [8])
        #expect(configuration.metricsListen == "127.0.0.1:9469")
        #expect(configuration.logLevel == .debug)
        #expect(configuration.resultCacheTTL == .seconds(30))
    }

    @Test("the only way to turn verification off is the key that says insecure")
    func insecure() throws {
        var configuration = DaemonConfiguration()
        try configuration.load(toml: "sasl_socket = \"/tmp/a\"\ninsecure_skip_verification = true\n")
        #expect(!configuration.login.verify)
        #expect(DaemonConfiguration().login.verify, "verification is on by default")
    }

    @Test("mistakes are refused with the key's name", arguments: [
        ("sasl_socket = \"/tmp/a\"\nworkerz = 2", "unknown key \"workerz\""),
        ("sasl_socket = 5", "sasl_socket must be a string"),
        ("sasl_socket = \"/tmp/a\"\nworkers = \"many\"", "workers must be an integer"),
        ("sasl_socket = \"/tmp/a\"\nfailure_floor = \"soon\"", "failure_floor must be seconds"),
        ("sasl_socket = \"/tmp/a\"\nsocket_mode = \"rw\"", "socket_mode must be octal"),
        ("sasl_socket = \"/tmp/a\"\narmor = \"steel\"", "armor must be"),
        ("sasl_socket = \"/tmp/a\"\nallowed_uids = [-1]", "allowed_uids must be an array"),
        ("sasl_socket = \"/tmp/a\"\nkrb5_config = [1]", "krb5_config must be"),
        ("sasl_socket = \"/tmp/a\"\nlog_level = \"loud\"", "log_level must be"),
        ("sasl_socket = \"/tmp/a\"\nfast_required = true\narmor = \"none\"", "fast_required needs armor"),
        ("sasl_socket = \"/tmp/a\"\nidle_timeout = 0", "idle_timeout must be longer than zero"),
        ("sasl_socket = \"/tmp/a\"\nworkers = 0", "workers must be between"),
        ("log_level = \"info\"", "no listener"),
        ("sasl_socket = \"/tmp/\(String(repeating: "x", count: 120))\"", "longer than 107 bytes"),
        ("sasl_socket = [", "configuration"),
    ])
    func mistakes(toml: String, message: String) {
        var configuration = DaemonConfiguration()
        #expect {
            try configuration.load(toml: toml)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("durations: seconds, fractions and units")
    func durations() {
        #expect(DaemonConfiguration.parseDuration("250ms") == .milliseconds(250))
        #expect(DaemonConfiguration.parseDuration("30s") == .seconds(30))
        #expect(DaemonConfiguration.parseDuration("2m") == .seconds(120))
        #expect(DaemonConfiguration.parseDuration("1h") == .seconds(3600))
        #expect(DaemonConfiguration.parseDuration("1d") == .seconds(86_400))
        #expect(DaemonConfiguration.parseDuration("15") == .seconds(15))
        #expect(DaemonConfiguration.parseDuration("-1s") == nil)
        #expect(DaemonConfiguration.parseDuration("soon") == nil)
        #expect(DaemonConfiguration.parseDuration("") == nil)
    }

    @Test("every key in the file is documented in docs/daemon.md")
    func documented() throws {
        let doc = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/daemon.md")
        let text = try String(contentsOf: doc, encoding: .utf8)
        for key in DaemonConfiguration.keys {
            #expect(text.contains("`\(key)`"), "\(key) is not documented")
        }
        // The complete example in the reference parses as it stands.
        let example = try #require(text.components(separatedBy: "```toml\n").first { $0.hasPrefix("# /etc/krb5-verifyd.toml — a complete example") })
        var configuration = DaemonConfiguration()
        try configuration.load(toml: try #require(example.components(separatedBy: "```").first))
        #expect(configuration.allowedGIDs == [108])

        // So does the example shipped next to the systemd unit.
        var shipped = DaemonConfiguration()
        try shipped.load(tomlFile: doc.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Docker/systemd/krb5-verifyd.toml").path)
        #expect(shipped.saslSocket == "/run/saslauthd/mux")
        #expect(shipped.login.verify)
    }
}
