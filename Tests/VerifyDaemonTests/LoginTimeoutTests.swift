import Foundation
import Kerberos
import LoginProtocol
import LoginService
import TestRealm
import Testing

/// Issue #12: `login_timeout`. With the only KDC hung (a TCP listener that never answers), every front end
/// answers kdc-unreachable once the timeout has passed: saslauthd `NO`, the conversation `kdc-unreachable`,
/// `krb5-login` exit 3. What is asserted is that the deadline answered: no sooner than login_timeout (the KDC
/// never answers, so nothing else could), and a few seconds after it at most, a margin for a CI machine whose two
/// cores run every suite at once; without the deadline the silent KDC would hold each login indefinitely.
@Suite("login_timeout: answered as kdc-unreachable when no KDC answers", .onTestThreads)
struct LoginTimeoutTests {
    let realm: TestRealm
    let silent = ShutdownTests.SilentKDC()
    let config: String

    init() throws {
        realm = try TestRealm.shared()
        config = realm.directory + "/krb5-hung-\(getpid())-\(TestRealm.uniqueName("t")).conf"
        try String(contentsOfFile: realm.configFile, encoding: .utf8)
            .replacingOccurrences(of: "  kdc = 127.0.0.1:\(realm["KDC_PORT"])", with: "  kdc = 127.0.0.1:\(silent.port)")
            .write(toFile: config, atomically: true, encoding: .utf8)
    }

    /// The margin above login_timeout that a loaded machine may add to an answer.
    static let margin: Double = 4

    @Test("krb5-verifyd: saslauthd NO and the conversation's kdc-unreachable, 16 logins at once, each at login_timeout")
    func daemon() async throws {
        let config = self.config
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.login.krb5 = .files(config)
            configuration.login.armor = .none
            configuration.login.loginTimeout = .seconds(1)
        }) { fixture in
            let user = fixture.realm["USER"]
            let password = fixture.realm["USER_PASSWORD"]
            let results = await withTaskGroup(of: (String, Double).self) { group in
                for index in 0..<16 {
                    group.addTask {
                        let start = Date()
                        let reply: String
                        if index % 2 == 0 {
                            reply = (try? fixture.sasl(user, password)).map { "\($0)" } ?? "error"
                        } else {
                            reply = (try? fixture.converse(user, password: password).result().failure?.rawValue) ?? "error"
                        }
                        return (reply, Date().timeIntervalSince(start))
                    }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
            for (reply, time) in results {
                #expect(reply == "\(SaslauthdReply.no("kdc unreachable"))" || reply == "kdc-unreachable", "\(reply)")
                #expect(time >= 0.95 && time < 1 + Self.margin, "answered after \(time) s with login_timeout 1 s")
            }
        }
    }

    @Test("an expired password's change is under the same deadline: with the kpasswd server hung, the new password's round answers kdc-unreachable at login_timeout")
    func hungPasswordServer() async throws {
        let config = realm.directory + "/krb5-hung-kpasswd-\(getpid())-\(TestRealm.uniqueName("t")).conf"
        let original = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        let kpasswd = "kpasswd_server = 127.0.0.1:\(realm["KPASSWD_PORT"])"
        #expect(original.contains(kpasswd))
        try original.replacingOccurrences(of: kpasswd, with: "kpasswd_server = 127.0.0.1:\(silent.port)")
            .write(toFile: config, atomically: true, encoding: .utf8)
        try await DaemonFixture.with(configure: { configuration, _ in
            configuration.login.krb5 = .files(config)
            configuration.login.armor = .none
            // Long enough that the first round (two AS exchanges) is answered on a loaded machine too; the second
            // round can only end at the deadline, since the kpasswd server never answers.
            configuration.login.loginTimeout = .seconds(10)
        }) { [silent] fixture in
            let user = try fixture.realm.addPrincipal(prefix: "khung", password: "Old-Passw0rd", attributes: ["+needchange"])
            let conversation = try fixture.converse(user, password: "Old-Passw0rd")
            guard case .questions(let id, _) = try conversation.next() else { Issue.record("no questions"); return }
            #expect(!silent.contacted, "the questions come before any kpasswd message")
            let start = Date()
            conversation.answer(id, LoginAnswers(newPassword: Secret("New-Passw0rd-5"), newPasswordAgain: Secret("New-Passw0rd-5")))
            let result = try conversation.result()
            let time = Date().timeIntervalSince(start)
            #expect(result.failure == .kdcUnreachable, "\(result)")
            #expect(silent.contacted, "the hung kpasswd server was asked")
            #expect(time >= 9.95 && time < 10 + Self.margin, "answered after \(time) s with login_timeout 10 s")
            // Nothing was changed: the principal still has to change its password.
            let principal = try fixture.realm.kadmin("getprinc", user)
            #expect(principal.contains("REQUIRES_PWCHANGE"), "\(principal)")
        }
    }

    @Test("krb5-login --login-timeout 1s: exit 3 (unavailable) once the timeout has passed")
    func helper() throws {
        let start = Date()
        let result = try TestRealm.run([TestRealm.executable("krb5-login"), "--krb5-config", config, "--keytab", realm["HOST_KEYTAB"],
                                        "--server-principal", realm["LOCALHOST_PRINCIPAL"], "--login-timeout", "1s"],
                                       input: "\(realm["USER"])\n\(realm["USER_PASSWORD"])\n")
        #expect(result.status == 3, "\(result.output)")
        #expect(result.output.contains("kdc-unreachable"), "\(result.output)")
        let time = Date().timeIntervalSince(start)
        #expect(time >= 0.95 && time < 1 + Self.margin, "exited after \(time) s: the helper's own start-up plus the 1 s timeout")
    }
}
