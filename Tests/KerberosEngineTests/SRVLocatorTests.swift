import Foundation
@testable import KerberosEngine
import Kerberos
import NIOCore
import NIOPosix
import TestRealm
import Testing

/// Issue #12: a KDC located through DNS SRV records. The test serves `_kerberos._udp.REALM` and
/// `_kerberos._tcp.REALM` from a DNS responder of its own on loopback, and points the locator's SRV queries for
/// each client at it (``KerberosClient/Configuration/nameservers``: resolv.conf names no port, so it cannot
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

        let client = try KerberosClient(configuration: configuration(config, nameserver: dns))
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
        let unlocated = try KerberosClient(configuration: configuration(config, nameserver: empty, loginTimeout: .seconds(3)))
        do {
            _ = try await unlocated.initialCredentials(for: realm["USER"], password: Secret(realm["USER_PASSWORD"]))
            Issue.record("logged in with no KDC listed and no SRV records")
        } catch {
            #expect(error.reason == .kdcUnreachable, "\(error)")
        }
        #expect(!empty.questions.isEmpty, "the locator asked the empty server")
        await unlocated.shutdown()
    }

    /// A one-worker client configuration from the krb5.conf at `path` whose DNS questions go to `nameserver`.
    func configuration(_ path: String, nameserver: SRVResponder, loginTimeout: Duration = TestRealm.loginTimeout) throws -> KerberosClient.Configuration {
        var configuration = KerberosClient.Configuration(krb5: .files(path), threads: 1, loginTimeout: loginTimeout)
        configuration.nameservers = [try KerberosClient.NameServer("127.0.0.1", port: nameserver.port)]
        return configuration
    }

    /// The realm's SRV records: the KDC on localhost, for UDP and TCP.
    func kdcRecords(extra: [SRVResponder.Target] = []) -> [String: [SRVResponder.Target]] {
        let kdc = (target: "localhost", port: UInt16(realm["KDC_PORT"])!)
        return ["_kerberos._udp.\(realm.realm.lowercased())": [kdc] + extra, "_kerberos._tcp.\(realm.realm.lowercased())": [kdc] + extra]
    }

    func logIn(_ client: KerberosClient) async throws {
        let ticket = try await client.initialCredentials(for: realm["USER"], password: Secret(realm["USER_PASSWORD"]))
        #expect(ticket.client.hasPrefix(realm["USER"] + "@"))
    }

    @Test("issue 21: a truncated UDP answer (TC) is asked again over TCP of the same name server, and the login goes through")
    func truncatedAnswerOverTCP() async throws {
        let config = try configWithoutKDCs()
        let dns = try SRVResponder(records: kdcRecords(), truncateUDP: true)
        defer { dns.stop() }
        let client = try KerberosClient(configuration: configuration(config, nameserver: dns))
        try await logIn(client)
        await client.shutdown()
        let name = "_kerberos._udp.\(realm.realm.lowercased())"
        #expect(dns.questions.filter { $0 == name }.count == 2, "over UDP, then TCP: \(dns.questions)")
        #expect(dns.questionsOverTCP.contains(name), "asked over TCP: \(dns.questionsOverTCP)")
    }

    @Test("issue 21: 200 SRV records give at most 16 servers; a location from DNS is kept for its TTL, within 5 s and 5 min")
    func boundedServersAndTTL() async throws {
        let config = try configWithoutKDCs()
        // The realm's KDC first, then 199 more records that would each cost addresses and sockets; a TTL of a day.
        let extra = (1..<200).map { (target: "127.0.0.1", port: UInt16(20_000 + $0)) }
        let dns = try SRVResponder(records: kdcRecords(extra: extra), ttl: 86_400)
        defer { dns.stop() }
        let client = try KerberosClient(configuration: configuration(config, nameserver: dns))
        let located = try await client.locate(realm.realm)
        #expect(located.location.kdcs.count == DNSServiceRecords.maximumServiceRecords, "\(located.location.kdcs.count) servers")
        #expect(located.targets.count < 2 * DNSServiceRecords.maximumServiceRecords, "localhost may have two addresses, the others one")
        #expect(located.location.kdcs.first?.port == Int(realm["KDC_PORT"]), "the first priority kept")
        let name = "_kerberos._udp.\(realm.realm.lowercased())"
        try await logIn(client)
        #expect(dns.questions.filter { $0 == name }.count == 1, "the location kept: \(dns.questions.count) questions")
        await client.shutdown()

        // A TTL of 1 s: kept for the 5 s floor, not the 5 minutes of a configured KDC.
        let shortLived = try SRVResponder(records: kdcRecords(), ttl: 1)
        defer { shortLived.stop() }
        let second = try KerberosClient(configuration: configuration(config, nameserver: shortLived))
        try await logIn(second)
        #expect(shortLived.questions.filter { $0 == name }.count == 1)
        try await Task.sleep(for: .seconds(Int(DNSServiceRecords.minimumTTL) + 1))
        try await logIn(second)
        #expect(shortLived.questions.filter { $0 == name }.count == 2, "asked again once the TTL passed: \(shortLived.questions)")
        await second.shutdown()
    }

    @Test("SRV answers are parsed in priority order, higher weight first, the root target dropped")
    func parsing() throws {
        let message = SRVResponder.response(
            to: SRVResponder.query("_kerberos._udp.example.test"),
            records: [(target: "b.example.test", port: 89, priority: 10, weight: 5), (target: "a.example.test", port: 88, priority: 0, weight: 1),
                      (target: "c.example.test", port: 90, priority: 10, weight: 50)])
        let records = DNSServiceRecords.serviceRecords(message, question: .init(id: 0x1234, name: "_kerberos._udp.example.test", type: DNSServiceRecords.typeSRV)).values
        #expect(records.map(\.target) == ["a.example.test", "c.example.test", "b.example.test"])
        #expect(records.map(\.port) == [88, 90, 89])
    }
}

/// A DNS server on 127.0.0.1 (UDP and TCP on one free port) that answers SRV questions from a table and records every
/// question's name (and, in `transports`, whether it came over TCP); unknown names get an answer with no records
/// (NXDOMAIN). With `truncateUDP`, every UDP answer is an empty one with the TC bit, so only TCP answers.
final class SRVResponder: @unchecked Sendable {
    typealias Target = (target: String, port: UInt16)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let port: Int
    private let asked = Locked<[(name: String, tcp: Bool)]>([])
    private var channels: [any Channel] = []

    init(records: [String: [Target]], ttl: UInt32 = 60, truncateUDP: Bool = false) throws {
        port = try TestRealm.freePort()
        let asked = self.asked
        channels.append(try DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramReader { context, datagram in
                        guard let (name, reply) = SRVResponder.reply(to: Array(datagram.data.readableBytesView), records: records, ttl: ttl, truncate: truncateUDP) else { return }
                        asked.withLock { $0.append((name.lowercased(), false)) }
                        DatagramReader.reply(reply, to: datagram, on: context)
                    })
                }
            }
            .bind(host: "127.0.0.1", port: port).wait())
        channels.append(try ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KDCFrameDecoder(maxLength: 65_535, lengthPrefix: 2)))
                    try channel.pipeline.syncOperations.addHandler(FrameReader(lengthPrefix: 2) { query in
                        guard let (name, reply) = SRVResponder.reply(to: query, records: records, ttl: ttl, truncate: false) else { return nil }
                        asked.withLock { $0.append((name.lowercased(), true)) }
                        return reply
                    })
                }
            }
            .bind(host: "127.0.0.1", port: port).wait())
    }

    /// The names asked so far, lowercased.
    var questions: [String] { asked.withLock { $0.map(\.name) } }
    /// The names asked over TCP so far, lowercased.
    var questionsOverTCP: [String] { asked.withLock { $0.filter(\.tcp).map(\.name) } }

    func stop() {
        for channel in channels { try? channel.close().wait() }
        try? group.syncShutdownGracefully()
    }

    /// The reply to `query` from the table, and the name asked; nil for a malformed query.
    static func reply(to query: [UInt8], records: [String: [Target]], ttl: UInt32, truncate: Bool) -> (name: String, bytes: [UInt8])? {
        guard let name = questionName(query) else { return nil }
        if truncate {
            var reply = response(to: query, records: [])
            reply[2] |= 0x02
            return (name, reply)
        }
        let answers = (records[name.lowercased()] ?? []).enumerated().map {
            (target: $0.element.target, port: $0.element.port, priority: UInt16($0.offset), weight: UInt16(0))
        }
        return (name, response(to: query, records: answers, notFound: records[name.lowercased()] == nil, ttl: ttl))
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
    static func response(to query: [UInt8], records: [(target: String, port: UInt16, priority: UInt16, weight: UInt16)], notFound: Bool = false,
                         ttl: UInt32 = 60) -> [UInt8] {
        var end = 12
        while end < query.count, query[end] != 0 { end += 1 + Int(query[end]) }
        end = min(end + 5, query.count)   // the root label, QTYPE, QCLASS
        func u16(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
        var message = Array(query[0..<2]) + [0x81, notFound ? 0x83 : 0x80] + u16(1) + u16(UInt16(records.count)) + u16(0) + u16(0)
        message += query[12..<end]
        for record in records {
            let data = u16(record.priority) + u16(record.weight) + u16(record.port) + encode(name: record.target)
            message += [0xC0, 0x0C] + u16(33) + u16(1) + u16(UInt16(ttl >> 16)) + u16(UInt16(ttl & 0xFFFF)) + u16(UInt16(data.count)) + data
        }
        return message
    }
}
