import Foundation
import Kerberos
@testable import KerberosEngine
import NIOCore
import NIOPosix
import TestRealm

/// A realm of the engine suites' own, with a kprop-fed replica, whose KDCs the tests stop and continue.
final class EngineRealm: @unchecked Sendable {
    let realm: TestRealm
    let user: String
    let password = "Engine-Passw0rd"
    private let extraProcesses = Locked<[ChildProcess]>([])

    static let shared: Result<EngineRealm, TestRealmError> = Result { () throws(TestRealmError) -> EngineRealm in try EngineRealm() }

    private init() throws(TestRealmError) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("krb5-engine-\(getpid())").path
        try? FileManager.default.removeItem(atPath: directory)
        for command in ["up", "replica"] {
            let result = try TestRealm.run([TestRealm.script, command, directory])
            guard result.status == 0 else {
                _ = try? TestRealm.run([TestRealm.script, "down", directory])
                throw TestRealmError("realm.sh \(command) failed: \(result.output)")
            }
        }
        realm = try TestRealm(directory: directory)
        do {
            user = try realm.addPrincipal(prefix: "eng", password: password)
            try script("propagate")
        } catch {
            throw TestRealmError("\(error)")
        }
        atexit {
            guard case .success(let engine) = EngineRealm.shared else { return }
            engine.tearDown()
        }
    }

    func tearDown() {
        for process in extraProcesses.withLock({ $0 }) {
            process.signal(SIGKILL)
            process.wait()
        }
        for key in ["KDC_PID_FILE", "REPLICA_KDC_PID_FILE"] { try? signal(key, SIGCONT) }
        _ = try? TestRealm.run([TestRealm.script, "down", realm.directory])
        try? FileManager.default.removeItem(atPath: realm.directory)
    }

    @discardableResult
    func script(_ arguments: String...) throws(TestRealmError) -> String {
        let result = try TestRealm.run([TestRealm.script, arguments[0], realm.directory] + arguments.dropFirst())
        guard result.status == 0 else { throw TestRealmError("realm.sh \(arguments.joined(separator: " ")) failed: \(result.output)") }
        return result.output
    }

    var primaryPort: Int { Int(realm["KDC_PORT"])! }
    var replicaPort: Int { Int(realm["REPLICA_KDC_PORT"])! }

    /// Sends `signal` to the KDC whose pid file is `key` in realm.env.
    func signal(_ key: String, _ signal: Int32) throws {
        let text = try String(contentsOfFile: realm[key], encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let pid = Int32(text), kill(pid, signal) == 0 else { throw TestRealmError("cannot signal \(key) (\(text))") }
    }

    /// Runs `body` with the KDCs named by `keys` SIGSTOPped, and SIGCONTs them on every path.
    func withStopped<T>(_ keys: [String], _ body: () async throws -> T) async throws -> T {
        var stopped: [String] = []
        defer { for key in stopped { try? signal(key, SIGCONT) } }
        for key in keys {
            try signal(key, SIGSTOP)
            stopped.append(key)
        }
        return try await body()
    }

    /// A client configuration: the realm's own, with its KDC list replaced by `kdcs` (`host:port` strings, extra
    /// lines such as `primary_kdc = …` allowed), UDP preferred unless `udpPreferenceLimit` says otherwise, and
    /// optionally one more realm `HUNG.TEST` served by `hungKDC`.
    func config(kdcs: [String], extraRealmLines: [String] = [], udpPreferenceLimit: Int = 1465, hungKDC: String? = nil) throws -> String {
        var lines: [String] = []
        let text = try String(contentsOfFile: realm.configFile, encoding: .utf8)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("kdc =") { continue }
            if trimmed.hasPrefix("udp_preference_limit") { continue }
            lines.append(String(line))
            if trimmed == "[libdefaults]" { lines.append(" udp_preference_limit = \(udpPreferenceLimit)") }
            if trimmed == "\(realm.realm) = {" {
                lines += kdcs.map { "  kdc = \($0)" } + extraRealmLines.map { "  \($0)" }
            }
            if trimmed == "[realms]", let hungKDC {
                lines += [" HUNG.TEST = {", "  kdc = \(hungKDC)", " }"]
            }
        }
        let path = realm.directory + "/engine-\(TestRealm.uniqueName("c")).conf"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Starts one more `krb5kdc` on the realm's database (foreground, killed at exit) with its own kdc.conf:
    /// `udp` false for a TCP-only KDC; `extraDefaults` lines go under `[kdcdefaults]`; `radiusServer` replaces the
    /// OTP token type's RADIUS server (waited on 15 s). Returns its port; its log is `extraLog(port)`.
    func startExtraKDC(udp: Bool, extraDefaults: [String] = [], radiusServer: String? = nil) throws -> Int {
        let port = try TestRealm.freePort()
        let profile = try String(contentsOfFile: realm["KDC_PROFILE"], encoding: .utf8)
        var lines: [String] = []
        for line in profile.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("kdc_listen") {
                lines.append(udp ? " kdc_listen = 127.0.0.1:\(port)" : " kdc_listen = \"\"")
                continue
            }
            if trimmed.hasPrefix("kdc_tcp_listen") {
                lines.append(" kdc_tcp_listen = 127.0.0.1:\(port)")
                lines += extraDefaults.map { " \($0)" }
                continue
            }
            if trimmed.hasPrefix("kadmind_listen") || trimmed.hasPrefix("kpasswd_listen") { continue }
            if trimmed.hasPrefix("kdc = FILE:") {
                lines.append(" kdc = FILE:\(extraLog(port))")
                continue
            }
            if let radiusServer, trimmed.hasPrefix("server =") {
                lines.append("  server = \(radiusServer)")
                continue
            }
            if radiusServer != nil, trimmed.hasPrefix("timeout =") {
                // Room for a second factor that takes seconds, on a loaded machine (the realm's own KDC waits 2 s).
                lines.append("  timeout = 15")
                continue
            }
            lines.append(String(line))
        }
        let path = realm.directory + "/kdc-extra-\(port).conf"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let process = try ChildProcess(["/usr/sbin/krb5kdc", "-n", "-r", realm.realm],
                                       environment: ["KRB5_KDC_PROFILE": path, "KRB5_CONFIG": realm.configFile])
        extraProcesses.withLock { $0.append(process) }
        // Ready once it accepts TCP.
        for _ in 0..<100 {
            if canConnect(port: port) { return port }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestRealmError("the extra KDC on \(port) did not come up")
    }

    /// The log file of the extra KDC on `port`.
    func extraLog(_ port: Int) -> String { realm.directory + "/extra-\(port).log" }
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

/// A UDP proxy that forwards each datagram to a real KDC (or RADIUS server) and delays its reply by `delay`.
final class SlowKDCProxy: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let port: Int
    private var channel: (any Channel)?
    private let forwarded = Locked<Set<[UInt8]>>([])
    private let replied = Locked(0)
    private let sources = Locked<[Int]>([])

    /// How many different datagrams the proxy has forwarded (a retransmission is the same datagram again).
    var distinctRequests: Int { forwarded.withLock { $0.count } }
    /// How many replies the proxy has sent back, after their delay.
    var repliesSent: Int { replied.withLock { $0 } }
    /// The source port of each datagram that came, in order.
    var sourcePorts: [Int] { sources.withLock { $0 } }

    init(upstreamPort: Int, delay: TimeAmount) throws {
        port = try TestRealm.freePort()
        let upstream = try SocketAddress(ipAddress: "127.0.0.1", port: upstreamPort)
        let (forwarded, replied, sources) = (forwarded, replied, sources)
        channel = try DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramReader { context, request in
                        forwarded.withLock { _ = $0.insert(Array(request.data.readableBytesView)) }
                        sources.withLock { $0.append(request.remoteAddress.port ?? 0) }
                        // Each request gets a socket of its own toward the KDC; its reply goes back to the client after `delay`.
                        let front = context.channel
                        _ = DatagramBootstrap(group: context.eventLoop)
                            .channelInitializer { back in
                                back.eventLoop.makeCompletedFuture {
                                    try back.pipeline.syncOperations.addHandler(DatagramReader { backContext, reply in
                                        backContext.eventLoop.scheduleTask(in: delay) {
                                            replied.withLock { $0 += 1 }
                                            front.writeAndFlush(AddressedEnvelope(remoteAddress: request.remoteAddress, data: reply.data), promise: nil)
                                            back.close(promise: nil)
                                        }
                                    })
                                }
                            }
                            .bind(host: "127.0.0.1", port: 0)
                            .flatMap { back in back.writeAndFlush(AddressedEnvelope(remoteAddress: upstream, data: request.data)) }
                    })
                }
            }
            .bind(host: "127.0.0.1", port: port).wait()
    }

    var address: String { "127.0.0.1:\(port)" }

    func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// Threads of this process, from /proc/self/task, without the threads that run test bodies
/// (``BlockingTestExecutor``, which adds one whenever a job finds all of them busy).
func threadCount() -> Int {
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return -1 }
    return tasks.filter { task in
        (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8))?.hasPrefix(BlockingTestExecutor.threadName) != true
    }.count
}

/// Seconds since `start`.
func elapsed(since start: ContinuousClock.Instant) -> Double {
    let duration = ContinuousClock.now - start
    return Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

extension KerberosClient {
    /// The realm's KDCs as a login of this client finds them (on one of its workers).
    func locate(_ realm: String) async throws(KerberosError) -> ResolvedLocation {
        try await withSession { session throws(KerberosError) in try await location(of: realm, session: session) }
    }
}
