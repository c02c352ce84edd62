public import Kerberos
import KerberosEngine
@_exported public import TOTP
import Foundation
import Synchronization

/// The live throwaway realm the integration suites run against: the real MIT KDC, kadmind, FreeRADIUS and
/// SoftHSM, started by `Docker/kdc/realm.sh`.
///
/// When `KRB5_TEST_REALM` names a directory holding a `realm.env` (what `make test` and `make test-docker`
/// provide), the suites use that realm; otherwise the first use starts one in a temporary directory and
/// stops it when the test process exits.
public struct TestRealm: Sendable {
    /// The realm's directory (configuration, keytabs, certificates, logs).
    public let directory: String
    /// The `KEY=VALUE` pairs of `realm.env`.
    public let values: [String: String]

    private static let cached = Locked<Result<TestRealm, TestRealmError>?>(nil)

    /// The realm for this test process, started on first use.
    public static func shared() throws -> TestRealm {
        try cached.withLock { cached in
            if let cached { return try cached.get() }
            let result = Result { () throws(TestRealmError) -> TestRealm in try start() }
            cached = result
            return try result.get()
        }
    }

    private static func start() throws(TestRealmError) -> TestRealm {
        if let directory = ProcessInfo.processInfo.environment["KRB5_TEST_REALM"], !directory.isEmpty {
            return try TestRealm(directory: directory)
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-test-realm-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        let result = try run([script, "up", directory])
        guard result.status == 0 else { throw TestRealmError("realm.sh up failed (exit status \(result.status)): \(result.output)") }
        Self.startedDirectory.withLock { $0 = directory }
        atexit {
            if let directory = TestRealm.startedDirectory.withLock({ $0 }) {
                _ = try? TestRealm.run([TestRealm.script, "down", directory])
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
        return try TestRealm(directory: directory)
    }

    private static let startedDirectory = Locked<String?>(nil)

    /// The login timeout of every test that is not about deadlines (production's default is 6 s). At the start of a
    /// run some fifty suites set up at once on two cores, and a good login has waited longer than 6 s for the CPU:
    /// it then answered kdc-unreachable. Tests about the deadline set their own, much shorter.
    public static let loginTimeout = Duration.seconds(60)

    /// ``loginTimeout`` as `krb5-login` flags.
    public static let loginTimeoutFlags = ["--login-timeout", "\(loginTimeout.components.seconds)s"]

    /// The `krb5-login` flags of a login in this realm: `krb5Config` (default: the realm's), the host keytab and the
    /// service principal that verify, and ``loginTimeout``.
    public func helperFlags(krb5Config: String? = nil) -> [String] {
        ["--krb5-config", krb5Config ?? configFile, "--keytab", self["HOST_KEYTAB"], "--server-principal", self["LOCALHOST_PRINCIPAL"]] + Self.loginTimeoutFlags
    }

    /// `Docker/kdc/realm.sh` in this checkout.
    public static let script: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Docker/kdc/realm.sh").path
    }()

    /// Reads `directory/realm.env`.
    public init(directory: String) throws(TestRealmError) {
        self.directory = directory
        guard let text = try? String(contentsOfFile: directory + "/realm.env", encoding: .utf8) else {
            throw TestRealmError("no realm.env in \(directory)")
        }
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        self.values = values
    }

    /// A value from `realm.env`; a missing key fails the test with its name.
    public subscript(_ key: String) -> String {
        guard let value = values[key] else { fatalError("realm.env has no \(key)") }
        return value
    }

    public var realm: String { self["REALM"] }
    /// The client configuration for the real KDC.
    public var configFile: String { self["KRB5_CONFIG_FILE"] }
    /// A context over the real KDC's client configuration.
    public func context() throws -> Context { try Context(.files(configFile)) }
    /// A context over the rogue KDC's client configuration (same realm name, attacker's database).
    public func rogueContext() throws -> Context { try Context(.files(self["KRB5_ROGUE_CONFIG_FILE"])) }

    /// The KDC's log so far (the `kdc = FILE:` file of its profile): one line per request it answered.
    public func kdcLog() throws -> [Substring] {
        let profile = try String(contentsOfFile: self["KDC_PROFILE"], encoding: .utf8)
        guard let line = profile.split(separator: "\n").first(where: { $0.contains("kdc = FILE:") }),
              let path = line.split(separator: "FILE:").last else { throw TestRealmError("no kdc log in \(self["KDC_PROFILE"])") }
        return try String(contentsOfFile: String(path), encoding: .utf8).split(separator: "\n")
    }

    /// Runs `kadmin.local` on the realm's database with `arguments`.
    @discardableResult
    public func kadmin(_ arguments: String...) throws -> String {
        try realmScript(["kadmin"] + arguments)
    }

    /// Creates a user principal of its own for one test, as MIT's `addprinc` makes it (no pre-authentication
    /// required unless `attributes` has `+requires_preauth`); returns its name without realm.
    public func addPrincipal(prefix: String, password: String, attributes: [String] = []) throws -> String {
        let name = Self.uniqueName(prefix)
        try realmScript(["kadmin", "addprinc", "-pw", password] + attributes + [name])
        return name
    }

    /// Creates an OTP principal that FreeRADIUS checks against the realm's `OTP_SECRET`; returns the name.
    public func addOTPUser(prefix: String) throws -> String {
        let name = Self.uniqueName(prefix)
        try realmScript(["add-otp-user", name])
        return name
    }

    /// Initialises a fresh SoftHSM token with the smart-card user's key and certificate; returns its PKCS#11 identity.
    public func newToken(label: String, pin: String) throws -> String {
        try realmScript(["new-token", label, pin]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @discardableResult
    private func realmScript(_ arguments: [String]) throws(TestRealmError) -> String {
        let result = try Self.run([Self.script, arguments[0], directory] + arguments.dropFirst())
        guard result.status == 0 else { throw TestRealmError("realm.sh \(arguments.prefix(2).joined(separator: " ")) failed: \(result.output)") }
        return result.output
    }

    private static let counter = Atomic<Int>(0)

    /// A principal name no other test uses: `prefix`, the process id and a counter.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)\(getpid())x\(counter.add(1, ordering: .relaxed).newValue)"
    }

    /// A product built next to the test bundle, such as `krb5-login`.
    public static func executable(_ name: String) -> String {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while directory.path != "/", !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent(name).path
    }

    /// Runs a command, returning its exit status and combined output.
    public static func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws(TestRealmError) -> (status: Int32, output: String) {
        try run(arguments, environment: environment, inputBytes: input.map { Array($0.utf8) })
    }

    /// Runs a command with raw bytes on standard input.
    public static func run(_ arguments: [String], environment: [String: String] = [:], inputBytes: [UInt8]?) throws(TestRealmError) -> (status: Int32, output: String) {
        try ChildProcess.run(arguments, environment: environment, input: inputBytes)
    }
}

/// Why the test realm could not be used.
public struct TestRealmError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
