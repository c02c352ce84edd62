import Foundation
import Kerberos
import TestRealm
import Testing

/// The example web app in Examples/WebLogin (its own package over this one, Hummingbird and hummingbird-auth),
/// built once per test process and started against the live realm on a free loopback port.
final class ExampleApp {
    static let packageDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Examples/WebLogin").path

    /// `swift build` of the example (its first build fetches and compiles Hummingbird: minutes); its binary.
    private static let built = Locked<Result<String, TestRealmError>?>(nil)

    static func binary() throws -> String {
        try built.withLock { built in
            if let built { return try built.get() }
            let result = Result { () throws(TestRealmError) -> String in
                let swift = ProcessInfo.processInfo.environment["SWIFT"] ?? "swift"
                let build = try TestRealm.run([swift, "build", "--package-path", packageDirectory, "--product", "WebLogin"])
                guard build.status == 0 else {
                    let errors = build.output.split(separator: "\n").filter { $0.contains("error") }.prefix(20).joined(separator: "\n")
                    throw TestRealmError("building Examples/WebLogin failed (\(build.status)):\n\(errors)\n\(build.output.suffix(2000))")
                }
                let path = try TestRealm.run([swift, "build", "--package-path", packageDirectory, "--show-bin-path"])
                return path.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last.map(String.init)! + "/WebLogin"
            }
            built = result
            return try result.get()
        }
    }

    let port: Int
    private let process: ChildProcess
    private let logFile: String
    var base: String { "http://127.0.0.1:\(port)" }
    var log: String { (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }

    init(realm: TestRealm) throws {
        let binary = try Self.binary()
        port = try TestRealm.freePort()
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent(TestRealm.uniqueName("web-login") + ".log").path
        process = try ChildProcess([binary, "--port", "\(port)", "--krb5-config", realm.configFile, "--keytab", realm["HOST_KEYTAB"],
                                    "--server-principal", realm["LOCALHOST_PRINCIPAL"]], output: .file(logFile))
        for _ in 0..<600 {
            if (try? TestRealm.run(["curl", "-s", "-o", "/dev/null", "\(base)/login"]))?.status == 0 { return }
            usleep(100_000)
        }
        throw TestRealmError("the example app did not listen on \(port): \(log)")
    }

    func stop() {
        _ = process.terminate()
        try? FileManager.default.removeItem(atPath: logFile)
    }

    static func with(_ body: (ExampleApp, TestRealm) throws -> Void) throws {
        let realm = try TestRealm.shared()
        let app = try ExampleApp(realm: realm)
        defer { app.stop() }
        try body(app, realm)
    }
}

@Suite("The example web app (Examples/WebLogin): HTTP Basic, the login form with a session, the OTP step", .onTestThreads)
struct ExampleAppTests {
    /// One form post with curl and a cookie jar; the reply (not following redirects).
    static func post(_ url: String, _ fields: [String: String], jar: String) throws -> HTTPReply {
        var arguments = ["curl", "-s", "-i", "--max-time", "75", "-b", jar, "-c", jar]
        for (name, value) in fields { arguments += ["--data-urlencode", "\(name)=\(value)"] }
        if fields.isEmpty { arguments += ["--data", ""] }
        let result = try TestRealm.run(arguments + [url])
        return try HTTPReply(parsing: result.output)
    }

    static func get(_ url: String, jar: String) throws -> HTTPReply {
        try HTTPReply(parsing: TestRealm.run(["curl", "-s", "-i", "--max-time", "75", "-b", jar, "-c", jar, url]).output)
    }

    @Test("HTTP Basic: the right password gets the principal, a wrong one or none gets 401 with the Basic challenge")
    func basic() throws {
        try ExampleApp.with { app, realm in
            let ok = try curl(app.base, path: "/api/whoami", user: "\(realm["USER"]):\(realm["USER_PASSWORD"])")
            #expect(ok.status == 200, "\(ok)\n\(app.log)")
            #expect(ok.body == "\(realm["USER"])@\(realm.realm)")
            let wrong = try curl(app.base, path: "/api/whoami", user: "\(realm["USER"]):wrong-password")
            #expect(wrong.status == 401)
            #expect(wrong.headers["www-authenticate"] == #"Basic realm="WebLogin", charset="UTF-8""#)
            #expect(try curl(app.base, path: "/api/whoami").status == 401)
            #expect(try curl(app.base, path: "/api/whoami", user: "\(realm["DISABLED_USER"]):\(realm["DISABLED_PASSWORD"])").status == 401)
        }
    }

    @Test("the login form: a right password starts a session that opens /, a wrong one shows the form again with 401, sign-out ends it")
    func form() throws {
        try ExampleApp.with { app, realm in
            let jar = FileManager.default.temporaryDirectory.appendingPathComponent(TestRealm.uniqueName("jar")).path
            defer { try? FileManager.default.removeItem(atPath: jar) }
            #expect(try Self.get("\(app.base)/", jar: jar).status == 302, "no session: redirected to the form")
            let wrong = try Self.post("\(app.base)/login", ["username": realm["USER"], "password": "wrong-password"], jar: jar)
            #expect(wrong.status == 401)
            #expect(wrong.body.contains("The user name or password is wrong."))
            let signedIn = try Self.post("\(app.base)/login", ["username": realm["USER"], "password": realm["USER_PASSWORD"]], jar: jar)
            #expect(signedIn.status == 302, "\(signedIn)\n\(app.log)")
            #expect(signedIn.headers["set-cookie"] != nil)
            let page = try Self.get("\(app.base)/", jar: jar)
            #expect(page.status == 200)
            #expect(page.body.contains("<span id=\"principal\">\(realm["USER"])@\(realm.realm)</span>"))
            #expect(try Self.post("\(app.base)/logout", [:], jar: jar).status == 302)
            #expect(try Self.get("\(app.base)/", jar: jar).status == 302, "signed out")
            #expect(!app.log.contains(realm["USER_PASSWORD"]) && !app.log.contains("wrong-password"))
        }
    }

    @Test("an OTP principal: the form's second step shows the KDC's question; the current TOTP code signs in, a wrong one does not")
    func otpWithCurl() throws {
        try ExampleApp.with { app, realm in
            let user = try realm.addOTPUser(prefix: "webotp")
            for expected in [false, true] {
                let jar = FileManager.default.temporaryDirectory.appendingPathComponent(TestRealm.uniqueName("jar")).path
                defer { try? FileManager.default.removeItem(atPath: jar) }
                let step = try Self.post("\(app.base)/login", ["username": user, "password": "unused"], jar: jar)
                #expect(step.status == 200, "\(step)\n\(app.log)")
                #expect(step.body.contains("id=\"question\""), "\(step.body)")
                let id = try #require(step.body.components(separatedBy: "name=\"pending\" value=\"").dropFirst().first?.prefix { $0 != "\"" })
                // The code is computed just before it is sent, away from a step boundary: FreeRADIUS accepts only the current 30 s step.
                let current = TOTPClock.code(realm["OTP_SECRET"])
                let otp = expected ? current : (current == "000000" ? "000001" : "000000")
                let done = try Self.post("\(app.base)/login/otp", ["pending": String(id), "otp": otp], jar: jar)
                if expected {
                    #expect(done.status == 302, "\(done)\n\(app.log)")
                    #expect(try Self.get("\(app.base)/", jar: jar).body.contains("\(user)@\(realm.realm)"))
                } else {
                    #expect(done.status == 401, "\(done)")
                    #expect(try Self.get("\(app.base)/", jar: jar).status == 302)
                }
                // A pending login is taken once.
                #expect(try Self.post("\(app.base)/login/otp", ["pending": String(id), "otp": otp], jar: jar).status == 400)
            }
        }
    }

    @Test("headless Chromium fills the login form and the OTP step and reaches the signed-in page; a wrong password stays at the form")
    func chromium() throws {
        try ExampleApp.with { app, realm in
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Browser/login-form.py").path
            let user = try realm.addOTPUser(prefix: "webcr")
            let run = try TestRealm.run(["/usr/bin/python3", script, app.base, user, "unused", realm["OTP_SECRET"]])
            #expect(run.status == 0, "\(run.output)\n\(app.log)")
            let result = try JSONSerialization.jsonObject(with: Data(run.output.split(separator: "\n").last.map(String.init)?.utf8 ?? "".utf8)) as? [String: Any]
            #expect((result?["question"] as? String)?.contains("enter the one-time password") == true, "\(run.output)")
            #expect(result?["url"] as? String == "\(app.base)/", "\(run.output)")
            #expect((result?["text"] as? String)?.contains("Signed in as \(user)@\(realm.realm)") == true, "\(run.output)")

            let wrong = try TestRealm.run(["/usr/bin/python3", script, app.base, realm["USER"], "wrong-password"])
            let refused = try JSONSerialization.jsonObject(with: Data(wrong.output.split(separator: "\n").last.map(String.init)?.utf8 ?? "".utf8)) as? [String: Any]
            #expect(refused?["question"] is NSNull, "\(wrong.output)")
            #expect((refused?["text"] as? String)?.contains("The user name or password is wrong.") == true, "\(wrong.output)")
        }
    }
}
