import Foundation
import Kerberos
import LoginProtocol
import TestRealm
import Testing
@testable import VerifyDaemon

/// The real `krb5-verifyd` binary under the limits a host gives it: core dumps off, the descriptor limit raised
/// and budgeted (issue 21, findings 7 and 8).
@Suite("krb5-verifyd: core dumps and descriptors", .onTestThreads)
struct ProcessResourcesTests {
    /// A running daemon started by `sh` after `limits` (shell `ulimit` commands), and its files.
    struct Daemon {
        let process: ChildProcess
        let directory: String
        var mux: String { directory + "/mux" }
        var log: String { (try? String(contentsOfFile: directory + "/log", encoding: .utf8)) ?? "" }

        init(_ realm: TestRealm, limits: String, extra: String = "") throws {
            directory = "/tmp/kv-pr-\(getpid())-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try """
            sasl_socket = "\(directory)/mux"
            krb5_config = "\(realm.configFile)"
            keytab = "\(realm["HOST_KEYTAB"])"
            server_principal = "\(realm["LOCALHOST_PRINCIPAL"])"
            armor = "none"
            failure_floor = "10ms"
            login_timeout = "\(TestRealm.loginTimeout.components.seconds)s"
            \(extra)
            """.write(toFile: directory + "/d.toml", atomically: true, encoding: .utf8)
            process = try ChildProcess(["sh", "-c", "\(limits); exec \"$0\" --config \"$1\"", TestRealm.executable("krb5-verifyd"), directory + "/d.toml"],
                                       output: .file(directory + "/log"))
            for _ in 0..<1200 where !FileManager.default.fileExists(atPath: mux) { Thread.sleep(forTimeInterval: 0.05) }
        }

        /// A line of `/proc/PID/limits`, such as "Max core file size": its soft and hard values.
        func limit(_ name: String) throws -> (soft: String, hard: String) {
            let text = try String(contentsOfFile: "/proc/\(process.pid)/limits", encoding: .utf8)
            let line = try #require(text.split(separator: "\n").first { $0.hasPrefix(name) })
            let fields = line.dropFirst(name.count).split(separator: " ")
            return (String(fields[0]), String(fields[1]))
        }

        func sasl(_ login: String, _ password: String, address: String) throws -> SaslauthdReply {
            let client = try SocketClient(path: mux)
            client.send(SaslauthdRequest(login: login, password: Secret(password), service: "imap", realm: "", clientAddress: address).encoded())
            return try SaslauthdReply(decoding: client.readAll())
        }

        func stop() {
            _ = process.terminate()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @Test("the daemon makes itself non-dumpable and sets RLIMIT_CORE to 0, whatever core limit it was started with")
    func noCoreDumps() throws {
        let realm = try TestRealm.shared()
        let daemon = try Daemon(realm, limits: "ulimit -S -c \"$(ulimit -H -c)\"")
        defer { daemon.stop() }
        #expect(try daemon.limit("Max core file size") == ("0", "0"))
        // The daemon reads its flag back with prctl(PR_GET_DUMPABLE) and logs it.
        #expect(daemon.log.contains("dumpable=0"), "\(daemon.log)")
        if getuid() != 0 {
            // A non-dumpable process's /proc files belong to root.
            var status = stat()
            #expect(stat("/proc/\(daemon.process.pid)/environ", &status) == 0 && status.st_uid == 0)
        }
        #expect(try daemon.sasl(realm["USER"], realm["USER_PASSWORD"], address: "192.0.2.1") == .ok)
    }

    @Test("the soft descriptor limit is raised to the hard one at start")
    func softLimitRaised() throws {
        let realm = try TestRealm.shared()
        let daemon = try Daemon(realm, limits: "ulimit -S -n 256 && ulimit -H -n 4096")
        defer { daemon.stop() }
        #expect(try daemon.limit("Max open files") == ("4096", "4096"))
        #expect(try daemon.sasl(realm["USER"], realm["USER_PASSWORD"], address: "192.0.2.1") == .ok)
    }

    @Test("with few descriptors, max_connections is lowered to fit; a burst is turned away at the door, never answered kdc-unreachable, and the address is not throttled")
    func lowDescriptorLimit() async throws {
        let realm = try TestRealm.shared()
        let daemon = try Daemon(realm, limits: "ulimit -n 70")
        defer { daemon.stop() }
        #expect(daemon.log.contains("max_connections lowered to fit the descriptor limit"), "\(daemon.log)")
        let address = "198.51.100.77"
        let replies = await SecondReviewTests.parallel(60) { _ in try daemon.sasl(realm["USER"], realm["USER_PASSWORD"], address: address) }
        // A connection over the limit is closed unanswered (nil here); every answer given is OK.
        #expect(replies.compactMap { $0 }.allSatisfy { $0 == .ok }, "\(replies.compactMap { $0 }.filter { $0 != .ok })")
        #expect(replies.contains { $0 == .ok })
        #expect(!daemon.log.contains("kdc-unreachable"), "no login was answered kdc-unreachable")
        // Its one connection may still be taken by the burst's last client: a closed door is asked again.
        var reply: SaslauthdReply?
        for _ in 0..<600 where reply == nil {
            reply = try? daemon.sasl(realm["USER"], realm["USER_PASSWORD"], address: address)
            if reply == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(reply == .ok, "the address was not throttled")
    }

    @Test("the systemd unit forbids core files and gives the descriptors room")
    func unitLimits() throws {
        let unit = try String(contentsOfFile: ServiceUnitTests.unitPath, encoding: .utf8)
        #expect(unit.contains("\nLimitCORE=0\n"))
        #expect(unit.contains("\nLimitNOFILE=65536\n"))
    }

    @Test("the descriptor budget: one per connection plus a login's KDC sockets, beyond a reserve")
    func budget() {
        #expect(DescriptorBudget.maxConnections(configured: 1024, limit: 65_536) == 1024)
        #expect(DescriptorBudget.maxConnections(configured: 1024, limit: 1024) == (1024 - 128) / 5)
        #expect(DescriptorBudget.maxConnections(configured: 1024, limit: 64) == 1)
    }
}
