public import Kerberos
import KerberosEngine
import Foundation

/// A live realm whose KDC is not MIT's, for the suites that prove the library, krb5-verifyd and krb5-login
/// against it: a Samba AD DC (`Docker/ad/ad-realm.sh`) or a Heimdal KDC (`Docker/ad/heimdal-realm.sh`),
/// both run from a cached Debian root.
///
/// As with ``TestRealm``: when `KRB5_TEST_AD` / `KRB5_TEST_HEIMDAL` names a directory holding a `realm.env`
/// (what `make test` provides), the suites use that realm; otherwise the first use starts one in a temporary
/// directory (as root: a chroot and a loopback address) and stops it when the test process exits. A realm
/// that cannot be started fails the suite; it is never skipped.
public struct ExternalRealm: Sendable {
    /// Which KDC serves the realm.
    public enum Kind: String, Sendable {
        /// Samba's AD DC (its KDC is Samba's Heimdal), realm `AD.EXAMPLE` on 127.0.0.2.
        case activeDirectory = "ad"
        /// Debian's heimdal-kdc, realm `HEIMDAL.TEST` on 127.0.0.1.
        case heimdal

        var environmentVariable: String { self == .activeDirectory ? "KRB5_TEST_AD" : "KRB5_TEST_HEIMDAL" }
        var scriptName: String { self == .activeDirectory ? "ad-realm.sh" : "heimdal-realm.sh" }
    }

    /// Which KDC this is.
    public let kind: Kind
    /// The realm's directory (configuration, keytab, logs).
    public let directory: String
    /// The `KEY=VALUE` pairs of `realm.env`.
    public let values: [String: String]

    private static let cached = Locked<[Kind: Result<ExternalRealm, TestRealmError>]>([:])
    private static let started = Locked<[Kind: String]>([:])

    /// The Active Directory realm for this test process, started on first use.
    public static func activeDirectory() throws -> ExternalRealm { try shared(.activeDirectory) }

    /// The Heimdal realm for this test process, started on first use.
    public static func heimdal() throws -> ExternalRealm { try shared(.heimdal) }

    private static func shared(_ kind: Kind) throws -> ExternalRealm {
        try cached.withLock { cached in
            if let result = cached[kind] { return try result.get() }
            let result = Result { () throws(TestRealmError) -> ExternalRealm in try start(kind) }
            cached[kind] = result
            return try result.get()
        }
    }

    private static func start(_ kind: Kind) throws(TestRealmError) -> ExternalRealm {
        if let directory = ProcessInfo.processInfo.environment[kind.environmentVariable], !directory.isEmpty {
            return try ExternalRealm(kind: kind, directory: directory)
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-test-\(kind.rawValue)-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        let result = try TestRealm.run([script(kind), "up", directory])
        guard result.status == 0 else { throw TestRealmError("\(kind.scriptName) up failed (exit status \(result.status)): \(result.output)") }
        let first = started.withLock { started in
            defer { started[kind] = directory }
            return started.isEmpty
        }
        if first {
            atexit {
                for (kind, directory) in ExternalRealm.started.withLock({ $0 }) {
                    _ = try? TestRealm.run([ExternalRealm.script(kind), "down", directory])
                    try? FileManager.default.removeItem(atPath: directory)
                }
            }
        }
        return try ExternalRealm(kind: kind, directory: directory)
    }

    /// The realm script of `kind` in this checkout (`Docker/ad/`).
    public static func script(_ kind: Kind) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Docker/ad/\(kind.scriptName)").path
    }

    /// Reads `directory/realm.env`.
    public init(kind: Kind, directory: String) throws(TestRealmError) {
        let parsed = try TestRealm(directory: directory)
        guard parsed.values["KIND"] == kind.rawValue else {
            throw TestRealmError("\(directory)/realm.env is not a \(kind.rawValue) realm (KIND=\(parsed.values["KIND"] ?? "none"))")
        }
        self.kind = kind
        self.directory = directory
        self.values = parsed.values
    }

    /// A value from `realm.env`; a missing key fails the test with its name.
    public subscript(_ key: String) -> String {
        guard let value = values[key] else { fatalError("realm.env has no \(key)") }
        return value
    }

    /// The realm name (`AD.EXAMPLE`, `HEIMDAL.TEST`).
    public var realm: String { self["REALM"] }
    /// The MIT client configuration for the realm's KDC.
    public var configFile: String { self["KRB5_CONFIG_FILE"] }
    /// The keytab that verifies logins (AD: the computer account WS1$ and its host/ SPN).
    public var hostKeytab: String { self["HOST_KEYTAB"] }
    /// The service principal that verifies logins.
    public var hostPrincipal: String { self["HOST_PRINCIPAL"] }

    /// The `krb5-login` flags of a login in this realm: its configuration, `keytab` (default: the host keytab) and the
    /// service principal that verify, and the tests' login timeout.
    public func helperFlags(keytab: String? = nil) -> [String] {
        ["--krb5-config", configFile, "--keytab", keytab ?? hostKeytab, "--server-principal", hostPrincipal] + TestRealm.loginTimeoutFlags
    }
    /// A context over the realm's client configuration.
    public func context() throws -> Context { try Context(.files(configFile)) }

    /// Creates an AD user of its own for one test (`ad-realm.sh add-user`; the password goes on stdin) and
    /// returns its sAMAccountName as created. `options`: `must-change`, `disabled`, `expired`,
    /// `rename=NEW`, `upn=NAME@SUFFIX`, `rc4-only`.
    public func addUser(prefix: String, password: String, options: [String] = []) throws -> String {
        precondition(kind == .activeDirectory, "addUser is for the AD realm")
        // sAMAccountName is at most 20 characters.
        let name = String(TestRealm.uniqueName(prefix).suffix(20))
        try script(["add-user", name] + options, input: password)
        return name
    }

    /// Sets an AD account's password (the keys are salted with its sAMAccountName as it is now).
    public func setPassword(_ name: String, _ password: String) throws {
        try script(["set-password", name], input: password)
    }

    /// Runs `samba-tool` (AD) or Heimdal's `kadmin -l` on the realm.
    @discardableResult
    public func admin(_ arguments: String...) throws -> String {
        try script([kind == .activeDirectory ? "samba-tool" : "kadmin"] + arguments)
    }

    @discardableResult
    private func script(_ arguments: [String], input: String? = nil) throws(TestRealmError) -> String {
        let result = try TestRealm.run([Self.script(kind), arguments[0], directory] + arguments.dropFirst(), input: input.map { $0 + "\n" })
        guard result.status == 0 else { throw TestRealmError("\(kind.scriptName) \(arguments[0]) failed: \(result.output)") }
        return result.output
    }
}
