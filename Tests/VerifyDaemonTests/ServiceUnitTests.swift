import Foundation
import Kerberos
import LoginProtocol
import TestRealm
import Testing

@Suite("The systemd unit", .onTestThreads)
struct ServiceUnitTests {
    static let unitPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Docker/systemd/krb5-verifyd.service").path

    @Test("systemd-analyze verify accepts the hardened unit")
    func verifyUnit() throws {
        let text = try String(contentsOfFile: Self.unitPath, encoding: .utf8)
        #expect(text.contains("NoNewPrivileges=yes") && text.contains("ProtectSystem=strict") && text.contains("RestrictAddressFamilies=AF_UNIX"))
        // Point ExecStart at the binary just built and drop the man-page link, so only the unit itself is judged.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("unit-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let unit = directory.appendingPathComponent("krb5-verifyd.service")
        try text.replacingOccurrences(of: "/usr/local/sbin/krb5-verifyd", with: TestRealm.executable("krb5-verifyd"))
            .write(to: unit, atomically: true, encoding: .utf8)
        let result = try TestRealm.run(["systemd-analyze", "verify", "--man=no", unit.path])
        let complaints = result.output.split(separator: "\n").filter { $0.contains("krb5-verifyd.service") }
        #expect(complaints.isEmpty, "\(complaints)")
    }

    /// Every system call the daemon makes — start, chgrp of its sockets, both listeners, metrics, SIGTERM —
    /// traced with strace and checked against the unit's `SystemCallFilter=` lines, so the hardened unit
    /// cannot kill the daemon with SIGSYS (this machine has no systemd to run the unit itself).
    @Test("every system call of a real run is allowed by the unit's SystemCallFilter")
    func syscallFilter() throws {
        let realm = try TestRealm.shared()
        let directory = "/tmp/kv-sc-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try """
        sasl_socket = "\(directory)/mux"
        socket = "\(directory)/conv"
        socket_group = "\(getgid())"
        krb5_config = "\(realm.configFile)"
        keytab = "\(realm["HOST_KEYTAB"])"
        server_principal = "\(realm["LOCALHOST_PRINCIPAL"])"
        armor = "anonymous"
        metrics_listen = "127.0.0.1:0"
        failure_floor = "10ms"
        login_timeout = "\(TestRealm.loginTimeout.components.seconds)s"
        """.write(toFile: directory + "/d.toml", atomically: true, encoding: .utf8)
        let tracer = try ChildProcess(["strace", "-f", "-qq", "-o", directory + "/trace", "--", TestRealm.executable("krb5-verifyd"), "--config", directory + "/d.toml"],
                                      output: .file(directory + "/log"))
        // Each listener's socket appears (by rename) once it listens.
        for _ in 0..<1200 where !["/conv", "/mux"].allSatisfy({ FileManager.default.fileExists(atPath: directory + $0) }) { Thread.sleep(forTimeInterval: 0.05) }

        let ok = try TestRealm.run(["testsaslauthd", "-f", directory + "/mux", "-u", realm["USER"], "-p", realm["USER_PASSWORD"]])
        #expect(ok.output.contains("OK"), "\(ok.output)")
        let no = try TestRealm.run(["testsaslauthd", "-f", directory + "/mux", "-u", realm["USER"], "-p", "wrong"])
        #expect(no.output.contains("NO"))
        let conversation = try SocketClient(path: directory + "/conv")
        conversation.send(ClientMessage.login(LoginRequest(principal: realm["USER"], password: Secret(realm["USER_PASSWORD"]))).encodedLine)
        #expect(conversation.readLine()?.contains(#""ok":true"#) == true)
        let log = try String(contentsOfFile: directory + "/log", encoding: .utf8)
        if let range = log.range(of: #"metrics=127\.0\.0\.1:[0-9]+"#, options: .regularExpression) {
            let metrics = try TestRealm.run(["curl", "-s", "http://\(log[range].dropFirst("metrics=".count))/metrics"])
            #expect(metrics.output.contains("krb5_verifyd_requests_total"))
        } else {
            Issue.record("no metrics address in the log: \(log)")
        }

        // SIGTERM to the daemon itself (strace's child), then strace exits with it.
        let children = try String(contentsOfFile: "/proc/\(tracer.pid)/task/\(tracer.pid)/children", encoding: .utf8)
        let daemon = try #require(children.split(separator: " ").first.flatMap { Int32($0) })
        kill(daemon, SIGTERM)
        #expect(tracer.wait() == 0)

        let trace = try String(contentsOfFile: directory + "/trace", encoding: .utf8)
        var used: Set<String> = []
        for line in trace.split(separator: "\n") {
            // "1234  name(arguments) = result"; resumed calls start with "<...".
            let fields = line.drop { $0.isNumber }.drop { $0 == " " }
            guard let open = fields.firstIndex(of: "("), fields[..<open].allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "_" }), open != fields.startIndex else { continue }
            used.insert(String(fields[..<open]))
        }
        #expect(used.contains("chown") && used.contains("accept4") && used.contains("sendto"), "the trace covers the run: \(used.sorted())")
        let allowed = try Self.allowedSystemCalls()
        // libdispatch asks setpriority for thread QoS and copes with EPERM (SystemCallErrorNumber=EPERM).
        let tolerated: Set<String> = ["setpriority"]
        let outside = used.subtracting(allowed).subtracting(tolerated)
        #expect(outside.isEmpty, "system calls the unit would refuse: \(outside.sorted())")
    }

    /// The set the unit's `SystemCallFilter=` lines allow, in order: the first line is an allow list, later
    /// lines add (plain) or remove (`~`), with groups expanded by `systemd-analyze syscall-filter`.
    static func allowedSystemCalls() throws -> Set<String> {
        var groups: [String: [String]] = [:]
        var current: String?
        for line in try TestRealm.run(["systemd-analyze", "syscall-filter"]).output.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("@") { current = String(line); groups[String(line)] = [] }
            else if line.isEmpty || line.hasPrefix("#") { current = nil }
            else if let group = current {
                let name = line.trimmingCharacters(in: .whitespaces)
                if !name.hasPrefix("#") { groups[group, default: []].append(name) }
            }
        }
        func expand(_ name: String) -> Set<String> {
            guard name.hasPrefix("@") else { return [name] }
            return (groups[name] ?? []).reduce(into: Set<String>()) { $0.formUnion(expand($1)) }
        }
        var allowed: Set<String>?
        for line in try String(contentsOfFile: unitPath, encoding: .utf8).split(separator: "\n") where line.hasPrefix("SystemCallFilter=") {
            var value = line.dropFirst("SystemCallFilter=".count)
            let deny = value.hasPrefix("~")
            if deny { value = value.dropFirst() }
            let calls = value.split(separator: " ").reduce(into: Set<String>()) { $0.formUnion(expand(String($1))) }
            if allowed == nil {
                #expect(!deny, "the first SystemCallFilter= is an allow list")
                allowed = calls
            } else if deny {
                allowed?.subtract(calls)
            } else {
                allowed?.formUnion(calls)
            }
        }
        return allowed ?? []
    }
}
