import Foundation
import Kerberos
import TestRealm
import Testing

/// Linux-PAM return codes (security/_pam_types.h) the module's tests expect.
enum PAMCode {
    static let success: Int32 = 0
    static let serviceError: Int32 = 3
    static let permissionDenied: Int32 = 6
    static let authError: Int32 = 7
    static let authInfoUnavailable: Int32 = 9
    static let userUnknown: Int32 = 10
    static let newAuthTokenRequired: Int32 = 12
    static let conversationError: Int32 = 19
    static let authTokenError: Int32 = 20
    static let authTokenRecoveryError: Int32 = 21
    static let tryAgain: Int32 = 24
}

/// pam_krb5verify.so, built by `make pam` from the package's sources: the AddressSanitizer build (with
/// UndefinedBehaviorSanitizer) that every PAM test loads.
enum PAMModule {
    static let packageRoot: String = {
        var directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while directory.path != "/", !FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
            directory.deleteLastPathComponent()
        }
        return directory.path
    }()

    private static let built = Locked<Result<String, TestRealmError>?>(nil)

    /// The sanitized module (and the rest of `make pam`), built once per test run (make rebuilds it only when a source changed).
    static func asanPath() throws -> String {
        try built.withLock { built in
            if let built { return try built.get() }
            let result = Result { () throws(TestRealmError) -> String in
                let make = try TestRealm.run(["make", "-s", "-C", packageRoot, "pam"])
                guard make.status == 0 else { throw TestRealmError("make pam: \(make.output)") }
                return packageRoot + "/.build/pam/asan/pam_krb5verify.so"
            }
            built = result
            return try result.get()
        }
    }

    /// The module as `make install` installs it, for the runs under valgrind (pamtester's, sshd's: ASan's runtime
    /// preloaded into sshd deadlocks on glibc's gettext lock in sshd's forked PAM process, in libkrb5's library
    /// initializer).
    static func productionPath() throws -> String {
        _ = try asanPath()
        return packageRoot + "/.build/pam/pam_krb5verify.so"
    }

    /// The test-only preload that lets sshd's preauth child run under valgrind (pam/sshd_sandbox_off.c).
    static func sshdSandboxOffPath() throws -> String {
        _ = try asanPath()
        return packageRoot + "/.build/pam/sshd-sandbox-off.so"
    }

    /// The sanitizer runtime, preloaded ahead of everything else into the program that loads the module.
    static let asanRuntime: String = {
        (try? TestRealm.run(["gcc", "-print-file-name=libasan.so"]).output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? "libasan.so"
    }()

    /// What the sanitizers print when they find something.
    static func sanitizerReport(in output: String) -> Bool {
        output.contains("AddressSanitizer") || output.contains("runtime error:") || output.contains("LeakSanitizer")
    }
}

/// Real PAM stacks run by pam_wrapper and pypamtest (SSSD's way of testing pam_sss): a private service
/// directory instead of /etc/pam.d, local accounts from nss_wrapper's files, the module loaded with ASan.
struct PAMWrapper {
    /// One pam_wrapper process at a time in this test process: pam_wrapper patches libpam's "/etc/pam.d" into a
    /// same-length directory, "/tmp/pam.X", so processes started together share 62 names, and one's clean-up can
    /// take another's configuration away ("no default config other" in a loaded test-docker run).
    static let oneAtATime = NSLock()

    /// One PAM call of a run and the code it must return.
    struct Step: Encodable {
        var op: String
        var expect: Int32
        var flags: Int32 = 0

        static func authenticate(_ expect: Int32 = PAMCode.success) -> Step { Step(op: "authenticate", expect: expect) }
        static func account(_ expect: Int32 = PAMCode.success) -> Step { Step(op: "account", expect: expect) }
        static func setcred(_ expect: Int32 = PAMCode.success) -> Step { Step(op: "setcred", expect: expect, flags: 0x2) }  // PAM_ESTABLISH_CRED
        static func deleteCred(_ expect: Int32 = PAMCode.success) -> Step { Step(op: "setcred", expect: expect, flags: 0x4) }  // PAM_DELETE_CRED
        static func openSession(_ expect: Int32 = PAMCode.success) -> Step { Step(op: "open_session", expect: expect) }
        static func closeSession(_ expect: Int32 = PAMCode.success) -> Step { Step(op: "close_session", expect: expect) }
        static func chauthtok(_ expect: Int32 = PAMCode.success, expiredOnly: Bool = false) -> Step {
            Step(op: "chauthtok", expect: expect, flags: expiredOnly ? 0x20 : 0)  // PAM_CHANGE_EXPIRED_AUTHTOK
        }
        static let environment = Step(op: "getenvlist", expect: PAMCode.success)
    }

    struct Spec: Encodable {
        var service: String
        var user: String
        var cases: [Step]
        var echo_off: [String]
        var echo_on: [String]
    }

    /// What pypamtest reported: whether every step returned what it should, the messages shown, the PAM environment.
    struct Outcome: Decodable, CustomStringConvertible {
        var ok: Bool
        var error: String?
        var info: [String]?
        var errors: [String]?
        var env: [String: String]
        var output = ""

        enum CodingKeys: String, CodingKey { case ok, error, info, errors, env }
        var description: String { "ok=\(ok) error=\(error ?? "-") info=\(info ?? []) errors=\(errors ?? []) env=\(env)\n\(output.suffix(3000))" }
    }

    static let runner = """
        import json, sys, pypamtest
        spec = json.loads(sys.stdin.read())
        ops = {"authenticate": pypamtest.PAMTEST_AUTHENTICATE, "setcred": pypamtest.PAMTEST_SETCRED, "account": pypamtest.PAMTEST_ACCOUNT,
               "open_session": pypamtest.PAMTEST_OPEN_SESSION, "close_session": pypamtest.PAMTEST_CLOSE_SESSION,
               "chauthtok": pypamtest.PAMTEST_CHAUTHTOK, "getenvlist": pypamtest.PAMTEST_GETENVLIST}
        cases = [pypamtest.TestCase(ops[c["op"]], c["expect"], c["flags"]) for c in spec["cases"]]
        out = {"ok": True, "env": {}}
        try:
            result = pypamtest.run_pamtest(spec["user"], spec["service"], cases, spec["echo_off"], spec["echo_on"])
            out["info"] = list(result.info)
            out["errors"] = list(result.errors)
        except pypamtest.PamTestError as e:
            out["ok"] = False
            out["error"] = str(e)
        for case, step in zip(cases, spec["cases"]):
            if step["op"] == "getenvlist":
                out["env"] = dict(getattr(case, "pam_env", None) or {})
        print(json.dumps(out))
        """

    let directory: String
    /// Local accounts, name → uid; all in one group.
    let users: [String: UInt32]
    static let gid: UInt32 = 20_000

    init(users: [String]) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pamwrap-\(getpid())-\(Int.random(in: 0..<1_000_000_000))").path
        try FileManager.default.createDirectory(atPath: directory + "/services", withIntermediateDirectories: true)
        var table: [String: UInt32] = [:]
        // nobody: the user the socket tests' stand-in daemons run as.
        var passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        for (index, user) in users.enumerated() {
            let uid = UInt32(20_001 + index)
            table[user] = uid
            try FileManager.default.createDirectory(atPath: directory + "/home/\(user)", withIntermediateDirectories: true)
            passwd += "\(user):x:\(uid):\(Self.gid):\(user):\(directory)/home/\(user):/bin/sh\n"
        }
        self.users = table
        try passwd.write(toFile: directory + "/passwd", atomically: true, encoding: .utf8)
        try "pamtest:x:\(Self.gid):\n".write(toFile: directory + "/group", atomically: true, encoding: .utf8)
    }

    /// Writes a service file; `MODULE` in `stack` stands for the sanitized module's path.
    func service(_ name: String, _ stack: String) throws {
        try (stack.replacingOccurrences(of: "MODULE", with: try PAMModule.asanPath()) + "\n")
            .write(toFile: directory + "/services/" + name, atomically: true, encoding: .utf8)
    }

    /// Runs `steps` in one PAM handle as `user`; the conversation answers hidden prompts from `hidden` in order,
    /// echoed ones from `echoed`. `items` become PAM items through pam_wrapper's pam_set_items.so (PAM_RHOST, PAM_AUTHTOK…).
    func run(_ service: String, user: String, _ steps: [Step], hidden: [String] = [], echoed: [String] = [],
             items: [String: String] = [:]) throws -> Outcome {
        let spec = Spec(service: service, user: user, cases: steps, echo_off: hidden, echo_on: echoed)
        let environment = [
            "LD_PRELOAD": "\(PAMModule.asanRuntime) libpam_wrapper.so libnss_wrapper.so",
            "PAM_WRAPPER": "1", "PAM_WRAPPER_SERVICE_DIR": directory + "/services",
            "NSS_WRAPPER_PASSWD": directory + "/passwd", "NSS_WRAPPER_GROUP": directory + "/group",
            "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        ].merging(items) { $1 }
        let input = Array(try JSONEncoder().encode(spec))
        let result = try Self.oneAtATime.withLock { try TestRealm.run(["/usr/bin/python3", "-c", Self.runner], environment: environment, inputBytes: input) }
        #expect(!PAMModule.sanitizerReport(in: result.output), "the sanitizers reported: \(result.output.suffix(4000))")
        guard let line = result.output.split(separator: "\n").last, var outcome = try? JSONDecoder().decode(Outcome.self, from: Data(line.utf8)) else {
            throw TestRealmError("pypamtest: status \(result.status): \(result.output.suffix(4000))")
        }
        outcome.output = result.output
        return outcome
    }

    /// Runs pamtester under valgrind (memcheck, definite leaks are errors) on a stack whose `MODULE` is the
    /// production build: the module in a C program, as sshd or login load it. Each line of `input` answers one prompt.
    func pamtesterUnderValgrind(_ service: String, user: String, _ operations: [String], input: [String]) throws -> (status: Int32, output: String) {
        let stack = try String(contentsOfFile: directory + "/services/" + service, encoding: .utf8)
            .replacingOccurrences(of: try PAMModule.asanPath(), with: try PAMModule.productionPath())
        try stack.write(toFile: directory + "/services/" + service, atomically: true, encoding: .utf8)
        let environment = [
            "LD_PRELOAD": "libpam_wrapper.so libnss_wrapper.so",
            "PAM_WRAPPER": "1", "PAM_WRAPPER_SERVICE_DIR": directory + "/services",
            "NSS_WRAPPER_PASSWD": directory + "/passwd", "NSS_WRAPPER_GROUP": directory + "/group",
        ]
        return try Self.oneAtATime.withLock {
            try TestRealm.run(["valgrind", "-q", "--vgdb=no", "--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                               "pamtester", "-v", service, user] + operations,
                              environment: environment, input: input.map { $0 + "\n" }.joined())
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

extension TOTPClock {
    /// The current code with at least `seconds` of its 30 s step left (waiting for the next step otherwise): for
    /// runs that start a program, such as valgrind's, before the code reaches the KDC.
    static func code(_ secret: String, leaving seconds: Double) -> String {
        let left = 30 - Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 30)
        if left < seconds { Thread.sleep(forTimeInterval: left + 0.2) }
        return TOTP.code(secret: TOTP.base32Decode(secret), time: UInt64(Date().timeIntervalSince1970))
    }
}
