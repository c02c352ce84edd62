import ArgumentParser
import CStringToKey
import Foundation
import Kerberos
import KerberosEngine
import LoginProtocol
import Synchronization

/// Load generators for `make bench`. Every run is bounded in time and count and talks to loopback only.
/// Passwords come from `KRB5_BENCH_PASSWORD`, never from arguments. Each prints one JSON line.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "krb5-bench", abstract: "Benchmarks for make bench.",
        subcommands: [LibraryLoop.self, SaslLoad.self, ProcessLoop.self, Soak.self, LeakCheck.self, StringToKeyCost.self])
}

/// Latency samples and the JSON line that reports them.
final class Samples: Sendable {
    private let state = Locked<(values: [Double], failures: Int)>(([], 0))
    func add(_ seconds: Double, ok: Bool) { state.withLock { $0.values.append(seconds); if !ok { $0.failures += 1 } } }
    func report(elapsed: Double, extra: String = "") -> String {
        let (values, failures) = state.withLock { ($0.values.sorted(), $0.failures) }
        func percentile(_ p: Double) -> Double { values.isEmpty ? 0 : values[min(values.count - 1, Int(Double(values.count) * p))] * 1000 }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return String(format: #"{"logins":%d,"seconds":%.3f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"failures":%d,"max_rss_kb":%d%@}"#,
                      values.count, elapsed, percentile(0.5), percentile(0.99), (values.last ?? 0) * 1000, failures, usage.ru_maxrss, extra)
    }
}

func benchPassword() throws -> String {
    guard let password = ProcessInfo.processInfo.environment["KRB5_BENCH_PASSWORD"] else {
        throw ValidationError("set KRB5_BENCH_PASSWORD")
    }
    return password
}

/// Runs a body on `threads` threads until `seconds` pass or `count` iterations are done; each thread
/// makes its own body first (so it can own a krb5 context).
func runThreads(_ threads: Int, seconds: Double, count: Int, makeBody: @escaping @Sendable (Int) -> () -> Void) -> Double {
    let done = DispatchGroup()
    let issued = Atomic<Int>(0)
    let start = Date()
    let end = start.addingTimeInterval(seconds)
    for index in 0..<threads {
        done.enter()
        Thread {
            let body = makeBody(index)
            while Date() < end, issued.add(1, ordering: .relaxed).newValue <= count { body() }
            done.leave()
        }.start()
    }
    done.wait()
    return Date().timeIntervalSince(start)
}

/// The library in process: initial credentials + verification, one context per thread, reusing the
/// parsed principals and keytab as the daemon does.
struct LibraryLoop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "library")
    @Option var config: String
    @Option var principal: String
    @Option var keytab: String
    @Option var server: String
    @Option var threads = 1
    @Option var seconds = 5.0
    @Option var count = 1_000_000
    @Flag(help: "Send the encrypted timestamp in the first request (MIT optimistic preauth).") var optimistic = false
    @Flag(name: .customLong("no-verify"), help: "Skip verification (get-creds only).") var noVerify = false
    @Flag(help: "Ask the AS for the verification service's ticket instead of a TGT (no TGS exchange).") var direct = false

    func run() throws {
        let password = try benchPassword()
        let samples = Samples()
        let (config, principal, keytab, server, optimistic, verify, direct) = (config, principal, keytab, server, optimistic, !noVerify, direct)
        let elapsed = runThreads(threads, seconds: seconds, count: count) { _ in
            let setup = Result { () throws -> (Context, Principal, VerificationOptions, Secret) in
                let context = try Context(.files(config))
                let verification = VerificationOptions(server: try Principal(parsing: server, in: context), keytab: try Keytab(resolving: keytab, in: context))
                return (context, try Principal(parsing: principal, in: context), verification, Secret(password))
            }
            return {
                let started = Date()
                var ok = false
                if case .success(let (context, client, verification, secret)) = setup {
                    var options = InitialCredentialsOptions()
                    if optimistic { options.preauthTypes = [.encryptedTimestamp] }
                    if direct { options.service = server }
                    do {
                        let credentials = try context.initialCredentials(for: client, password: secret, options: options)
                        if verify { try context.verify(credentials, options: verification) }
                        ok = true
                    } catch {}
                }
                samples.add(Date().timeIntervalSince(started), ok: ok)
            }
        }
        print(samples.report(elapsed: elapsed))
    }
}

/// A saslauthd-protocol load generator: `concurrency` clients, one request per connection.
struct SaslLoad: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sasl")
    @Option var socket: String
    @Option var login: String
    @Option var concurrency = 1
    @Option var seconds = 5.0
    @Option var count = 1_000_000
    @Option(help: "Report the daemon's peak RSS from /proc/PID/status.") var pid: Int32?
    @Option(name: .customLong("client-address"), help: "The request's client-address field.") var clientAddress = "127.0.0.1"
    @Flag(name: .customLong("expect-no"), help: "Count a NO reply as the expected answer (logins that must fail, such as a hung KDC's).") var expectNo = false

    func run() throws {
        let request = SaslauthdRequest(login: login, password: Secret(try benchPassword()), service: "bench", realm: "", clientAddress: clientAddress).encoded()
        let samples = Samples()
        let path = socket
        let expectNo = expectNo
        let elapsed = runThreads(concurrency, seconds: seconds, count: count) { _ in
            {
                let started = Date()
                let reply = Self.exchange(path: path, request: request)
                // A reply is one counted string: two length bytes, then "OK" or "NO reason".
                let answeredNo = reply.count >= 4 && reply[2] == UInt8(ascii: "N") && reply[3] == UInt8(ascii: "O")
                samples.add(Date().timeIntervalSince(started), ok: expectNo ? answeredNo : reply == SaslauthdReply.ok.encoded)
            }
        }
        let extra = pid.map { #","daemon_hwm_kb":\#(Self.highWaterMark($0))"# } ?? ""
        print(samples.report(elapsed: elapsed, extra: extra))
    }

    static func exchange(path: String, request: [UInt8]) -> [UInt8] {
        guard let fd = try? UnixSocketAddress(path: path)?.connectedStream().get() else { return [] }
        defer { close(fd) }
        _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return reply }
            reply += buffer[0..<count]
        }
    }

    static func highWaterMark(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }) else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
}

/// One process per login (krb5-login or kinit), sequentially: time per login.
struct ProcessLoop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "process")
    @Option var count = 200
    @Option var seconds = 10.0
    @Option(help: "Standard input for each run; \\n is a newline and {password} the password.") var input: String
    @Argument(parsing: .captureForPassthrough) var command: [String]

    func run() throws {
        let stdin = Array(input.replacingOccurrences(of: "\\n", with: "\n").replacingOccurrences(of: "{password}", with: try benchPassword()).utf8)
        let command = self.command.first == "--" ? Array(self.command.dropFirst()) : self.command
        let samples = Samples()
        let start = Date()
        var peak = 0
        for _ in 0..<count where Date().timeIntervalSince(start) < seconds {
            let started = Date()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: command[0])
            process.arguments = Array(command.dropFirst())
            let pipe = Pipe()
            process.standardInput = pipe
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            pipe.fileHandleForWriting.write(Data(stdin))
            try pipe.fileHandleForWriting.close()
            process.waitUntilExit()
            samples.add(Date().timeIntervalSince(started), ok: process.terminationStatus == 0)
            var usage = rusage()
            getrusage(RUSAGE_CHILDREN.rawValue, &usage)
            peak = max(peak, usage.ru_maxrss)
        }
        print(samples.report(elapsed: Date().timeIntervalSince(start), extra: #","child_max_rss_kb":\#(peak)"#))
    }
}

/// The CPU cost of one password key (aes256-cts-hmac-sha1-96, 4,096 iterations) as logins make it: the machine's
/// limit on password logins per core is 1 / (this + the KDC's CPU per login).
struct StringToKeyCost: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "string-to-key", abstract: "Milliseconds of CPU per AES-256 password key.")
    @Option var seconds = 2.0

    func run() {
        let password = Array("Bench-Passw0rd".utf8), salt = Array("KRB5.TESTalice".utf8)
        var key = [UInt8](repeating: 0, count: 32)
        var keys = 0
        let start = clock()
        while Double(clock() - start) / Double(CLOCKS_PER_SEC) < seconds {
            _ = s2k_aes_sha1_key(password, password.count, salt, salt.count, 4096, &key, 32)
            keys += 1
        }
        let cpu = Double(clock() - start) / Double(CLOCKS_PER_SEC)
        print(String(format: #"{"keys":%d,"ms_per_key":%.4f,"sha_extensions":%@}"#, keys, cpu * 1000 / Double(keys), s2k_cpu_has_sha_ni() != 0 ? "true" : "false"))
    }
}
