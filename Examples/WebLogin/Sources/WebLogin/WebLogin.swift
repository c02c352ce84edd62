import ArgumentParser
import WebLoginApp

/// `web-login`: flags in, the app running until SIGTERM or SIGINT.
@main
struct WebLogin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "web-login",
        abstract: "An example web app that logs its users in against Kerberos: HTTP Basic on /api/whoami, a login form with a session and a one-time-password step on /login.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on.") var port = 8080
    @Option(name: .customLong("krb5-config"), help: "krb5.conf to use (default: krb5's own).") var krb5Config: String?
    @Option(help: "Keytab that verifies logins (default: krb5's default keytab).") var keytab: String?
    @Option(name: .customLong("server-principal"), help: "Service principal to verify against (default: any host principal in the keytab).")
    var serverPrincipal: String?
    @Option(help: "FAST armor: anonymous (anonymous PKINIT; OTP needs armor) or none.") var armor = "anonymous"
    @Option(help: "Realm named in the Basic challenge.") var realm = "WebLogin"

    func run() async throws {
        guard let armor = AppConfiguration.Armor(rawValue: armor) else { throw ValidationError("--armor must be anonymous or none") }
        let configuration = AppConfiguration(host: host, port: port, krb5Config: krb5Config, keytab: keytab, serverPrincipal: serverPrincipal,
                                             armor: armor, basicRealm: realm)
        try await runApplication(configuration)
    }
}
