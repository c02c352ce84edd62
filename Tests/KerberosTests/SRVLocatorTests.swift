import Foundation
@testable import Kerberos
import NIOCore
import NIOPosix
import TestRealm
import Testing

/// Issue #12: a KDC located through DNS SRV records. The test serves `_kerberos._udp.REALM` and
/// `_kerberos._tcp.REALM` from a DNS responder of its own on loopback, and points the locator's SRV queries for
/// that realm at it (``DNSServiceRecords/setNameserver(_:forRealm:)``: resolv.conf names no port, so it cannot
/// point at a test server). Everything else is the production path: krb5.conf without a `kdc` line,
/// `dns_lookup_kdc = true`, the SRV questions sent by the engine's transport, the SRV target (`localhost`)
/// resolved through /etc/hosts.
@Suite("KDC location through DNS SRV records", .serialized, .onTestThreads)
struct SRVLocatorTests {
    let realm: TestRealm
    init() throws { realm = try TestRealm.shared() }

    /// The realm's client configuration with every `kdc`/`primary_kdc`/`master_kdc` line of its own realm removed
    /// and `dns_lookup_kdc = true`.
    func configWithoutKDCs() throws -> String {
        var lines: [String] = []
        var inRealm = false
        for line in try String(contentsOfFile: realm.configFile, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed == "\(realm.realm) = {" { inRealm = true } else if trimmed == "}" { inRealm = false }
            if inRealm && ["kdc", "primary_kdc", "master_kdc"].contains(where: { trimmed.hasPrefix($0 + " ") || trimmed.hasPrefix($0 + "=") }) { continue }
            if trimmed.hasPrefix("dns_lookup_kdc") { continue }
            lines.append(String(line))
            if trimmed == "[libdefaults]" { lines.append(" dns_lookup_kdc = true") }
        }
        let text = lines.joined(separator: "\n")
        #expect(!text.contains(":\(realm["KDC_PORT"])\n"), "the realm's KDC is no longer listed")
        let path = realm.directory + "/krb5-srv-\(getpid())-\(TestRealm.uniqueName("s")).conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("a realm with no kdc line and dns_lookup_kdc = true logs in through the KDC its SRV records name; without records it is kdc-unreachable")
    func loginThroughSRV() async throws {
        let config = try configWithoutKDCs()
        let kdcPort = UInt16(realm["KDC_PORT"])!
        let dns = try SRVResponder(records: ["_kerberos._udp.\(realm.realm.lowercased())": [(target: "localhost", port: kdcPort)],
                                             "_kerberos._tcp.\(realm.realm.lowercased())": [(target: "localhost", port: kdcPort)]])
        defer { dns.stop() }
        DNSServiceRecords.setNameserver((host: "127.0.0.1", port: dns.port), forRealm: realm.realm)
        defer { DNSServiceRecords.setNameserver(nil, forRealm: realm.realm) }

        let client = try KerberosClient(configuration: .init(krb5: .files(config), threads: 1, loginTimeout: TestRealm.loginTimeout))
        let ticket = try await client.initialCredentials(
            for: realm["USER"], password: Secret(realm["USER_PASSWORD"]),
            verification: VerificationRequest(server: realm["LOCALHOST_PRINCIPAL"], keytab: realm["HOST_KEYTAB"]))
        #expect(ticket.verified)
        #expect(ticket.client.hasPrefix(realm["USER"] + "@"))
        let asked = dns.questions
        #expect(asked.contains("_kerberos._udp.\(realm.realm.lowercased())"), "SRV questions: \(asked)")
        #expect(asked.contains("_kerberos._tcp.\(realm.realm.lowercased())"), "SRV questions: \(asked)")
        await client.shutdown()

        // The same configuration with a DNS server that knows no such records: nothing to send to.
        let empty = try SRVResponder(records: [:])
        defer { empty.stop() }
        DNSServiceRecords.setNameserver((host: "127.0.0.1", port: empty.port), forRealm: realm.realm)
        let unlocated = try KerberosClient(configuration: .init(krb5: .files(config), threads: 1, loginTimeout: .seconds(3)))
        do {
            _ = try await unlocated.initialCredentials(for: realm["USER"], password: Secret(realm["USER_PASSWORD"]))
            Issue.record("logged in with no KDC listed and no SRV records")
        } catch {
            #expect(error.reason == .kdcUnreachable, "\(error)")
        }
        #expect(!empty.questions.isEmpty, "the locator asked the empty server")
        await unlocated.shutdown()
    }

    @Test("SRV answers are parsed in priority order, higher weight first, the root target dropped")
    func parsing() throws {
        let message = SRVResponder.response(
            to: SRVResponder.query("_kerberos._udp.example.test"),
            records: [(target: "b.example.test", port: 89, priority: 10, weight: 5), (target: "a.example.test", port: 88, priority: 0, weight: 1),
                      (target: "c.example.test", port: 90, priority: 10, weight: 50)])
        let records = DNSServiceRecords.parse(message)
        #expect(records.map(\.target) == ["a.example.test", "c.example.test", "b.example.test"])
        #expect(records.map(\.port) == [88, 90, 89])
    }
}

/// A DNS server on 127.0.0.1 (UDP, a free port) that answers SRV questions from a table and records every
/// question's name; unknown names get an answer with no records (NXDOMAIN).
final class SRVResponder: @unchecked Sendable {
    typealias Target = (target: String, port: UInt16)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let port: Int
    private let asked = Locked<[String]>([])
    private var channel: (any Channel)?

    init(records: [String: [Target]]) throws {
        port = try freePort()
        let asked = self.asked
        channel = try DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler(records: records, asked: asked))
                }
            }
            .bind(host: "127.0.0.1", port: port).wait()
    }

    /// The names asked so far, lowercased.
    var questions: [String] { asked.withLock { $0 } }

    func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let records: [String: [Target]]
        let asked: Locked<[String]>

        init(records: [String: [Target]], asked: Locked<[String]>) {
            self.records = records
            self.asked = asked
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            let query = Array(envelope.data.readableBytesView)
            guard let name = SRVResponder.questionName(query) else { return }
            asked.withLock { $0.append(name.lowercased()) }
            let answers = (records[name.lowercased()] ?? []).map { (target: $0.target, port: $0.port, priority: UInt16(0), weight: UInt16(0)) }
            let reply = SRVResponder.response(to: query, records: answers, notFound: records[name.lowercased()] == nil)
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: ByteBuffer(bytes: reply))), promise: nil)
        }
    }

    /// The first question's name, or nil for a malformed message.
    static func questionName(_ message: [UInt8]) -> String? {
        guard message.count > 12 else { return nil }
        var labels: [String] = []
        var offset = 12
        while offset < message.count, message[offset] != 0 {
            let length = Int(message[offset])
            guard length < 64, offset + 1 + length <= message.count else { return nil }
            labels.append(String(decoding: message[(offset + 1)..<(offset + 1 + length)], as: UTF8.self))
            offset += 1 + length
        }
        return labels.joined(separator: ".")
    }

    static func encode(name: String) -> [UInt8] {
        name.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
    }

    /// A query for `name`'s SRV records (ID 0x1234, recursion desired).
    static func query(_ name: String) -> [UInt8] {
        [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0] + encode(name: name) + [0, 33, 0, 1]
    }

    /// The response to `query`: its ID and question, then one SRV answer per record (the owner a pointer to the
    /// question's name); NXDOMAIN when `notFound`.
    static func response(to query: [UInt8], records: [(target: String, port: UInt16, priority: UInt16, weight: UInt16)], notFound: Bool = false) -> [UInt8] {
        var end = 12
        while end < query.count, query[end] != 0 { end += 1 + Int(query[end]) }
        end = min(end + 5, query.count)   // the root label, QTYPE, QCLASS
        func u16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
        var message = Array(query[0..<2]) + [0x81, notFound ? 0x83 : 0x80] + u16(1) + u16(UInt16(records.count)) + u16(0) + u16(0)
        message += query[12..<end]
        for record in records {
            let data = u16(record.priority) + u16(record.weight) + u16(record.port) + encode(name: record.target)
            message += [0xC0, 0x0C] + u16(33) + u16(1) + [0, 0, 0, 60] + u16(UInt16(data.count)) + data
        }
        return message
    }
}
