@testable import KerberosEngine
import Kerberos
import Foundation
import NIOCore
import Testing

/// The engine's parsers and location logic, without a KDC.
@Suite("Engine: KDC location and message parsing")
struct EngineUnitTests {
    @Test("this process's shortages (EMFILE, ENFILE, ENOBUFS, ENOMEM) are told from a KDC's failures: they never mark a KDC unresponsive")
    func localShortages() {
        for code in [EMFILE, ENFILE, ENOBUFS, ENOMEM] {
            #expect(KDCTransport.localShortage(IOError(errnoCode: code, reason: "socket")) == code)
        }
        for code in [ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ETIMEDOUT] {
            #expect(KDCTransport.localShortage(IOError(errnoCode: code, reason: "connect")) == nil)
        }
        #expect(KDCTransport.localShortage(CancellationError()) == nil)
    }

    @Test("krb5.conf kdc values: host, host:port, [v6]:port, tcp/ and udp/ prefixes; https proxies are skipped")
    func kdcValues() throws {
        let plain = try #require(KDCAddress(parsing: "kdc.example.org"))
        #expect(plain.host == "kdc.example.org" && plain.port == 88 && plain.transport == .any)
        let ported = try #require(KDCAddress(parsing: " 127.0.0.1:8888 "))
        #expect(ported.host == "127.0.0.1" && ported.port == 8888)
        let v6 = try #require(KDCAddress(parsing: "[::1]:750"))
        #expect(v6.host == "::1" && v6.port == 750 && v6.description == "[::1]:750")
        #expect(KDCAddress(parsing: "tcp/kdc:89")?.transport == .tcp)
        #expect(KDCAddress(parsing: "udp/kdc")?.transport == .udp)
        #expect(KDCAddress(parsing: "https://proxy.example.org/KdcProxy") == nil)
        #expect(KDCAddress(parsing: "kdc:0") == nil)
    }

    @Test("the profile gives the KDC list, the primaries and udp_preference_limit")
    func locate() throws {
        let path = "/tmp/engine-unit-\(getpid()).conf"
        try """
        [libdefaults]
         default_realm = A.TEST
         udp_preference_limit = 1
         dns_lookup_kdc = false
        [realms]
         A.TEST = {
          kdc = 127.0.0.1:1001
          kdc = 127.0.0.1:1002
          primary_kdc = 127.0.0.1:1002
         }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let context = try Context(.files(path))
        let location = try KDCLocator.locate(realm: "A.TEST", context: context)
        #expect(location.kdcs.map(\.port) == [1001, 1002])
        #expect(location.kdcs.map(\.isPrimary) == [false, true])
        #expect(location.udpPreferenceLimit == 1)
        #expect(throws: KerberosError.self) { try KDCLocator.locate(realm: "B.TEST", context: context) }
    }

    @Test("kpasswd servers: kpasswd_server with port 464 unless given, else admin_server's hosts on 464; none is an error")
    func locatePasswordServers() throws {
        let path = "/tmp/engine-unit-kpasswd-\(getpid()).conf"
        try """
        [libdefaults]
         dns_lookup_kdc = false
        [realms]
         A.TEST = {
          kdc = 127.0.0.1:1001
          kpasswd_server = 127.0.0.1
          kpasswd_server = tcp/127.0.0.2:1464
          admin_server = 127.0.0.3:749
         }
         B.TEST = {
          kdc = 127.0.0.1:1001
          admin_server = 127.0.0.3:749
         }
         C.TEST = {
          kdc = 127.0.0.1:1001
         }
        """.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let context = try Context(.files(path))
        let a = try KDCLocator.locatePasswordServers(realm: "A.TEST", context: context)
        #expect(a.kdcs.map(\.description) == ["127.0.0.1:464", "127.0.0.2:1464"])
        #expect(a.kdcs.map(\.transport) == [.any, .tcp])
        let b = try KDCLocator.locatePasswordServers(realm: "B.TEST", context: context)
        #expect(b.kdcs.map(\.description) == ["127.0.0.3:464"])
        #expect(throws: KerberosError.self) { try KDCLocator.locatePasswordServers(realm: "C.TEST", context: context) }
    }

    @Test("kpasswd replies are told from KDC replies: a frame whose length and version match, or a KRB-ERROR")
    func passwordChangeReplies() {
        let framed: [UInt8] = [0, 8, 0, 1, 0, 0, 0x7E, 0x00]
        #expect(takes(.passwordChange, framed))
        #expect(takes(.passwordChange, [0, 6, 0xFF, 0x80, 0, 0]))
        #expect(!takes(.passwordChange, [0, 9, 0, 1, 0, 0, 0x7E, 0x00]), "a length that is not the datagram's")
        #expect(!takes(.passwordChange, [0, 6, 0, 2, 0, 0]), "an unknown version")
        #expect(!takes(.passwordChange, [0, 4, 0, 1]), "shorter than a header")
        #expect(takes(.passwordChange, [0x7E, 0x03, 0x30, 0x01, 0x00]), "an unframed KRB-ERROR")
        #expect(!takes(.passwordChange, [0x6B, 0x00]), "an AS-REP is no kpasswd reply")
        #expect(!takes(.kdc, framed), "nor a kpasswd reply a KDC reply")
        #expect(takes(.kdc, [0x6B, 0x00]))
    }

    /// Whether a send of `kind` ends with `bytes` received over UDP.
    func takes(_ kind: ReplyKind, _ bytes: [UInt8]) -> Bool {
        kind.classify(bytes, true) == .reply
    }

    @Test("SRV answers: compressed names, sorted by priority then weight")
    func srvParsing() {
        // Header: id 1, flags, 1 question, 2 answers.
        var message: [UInt8] = [0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]
        let question = 12
        for label in ["_kerberos", "_udp", "A", "TEST"] { message += [UInt8(label.utf8.count)] + Array(label.utf8) }
        message += [0, 0, 33, 0, 1]
        func answer(priority: UInt16, weight: UInt16, port: UInt16, host: String) -> [UInt8] {
            var rdata: [UInt8] = [UInt8(priority >> 8), UInt8(priority & 0xFF), UInt8(weight >> 8), UInt8(weight & 0xFF), UInt8(port >> 8), UInt8(port & 0xFF)]
            rdata += [UInt8(host.utf8.count)] + Array(host.utf8) + [0xC0, UInt8(question + 15)]  // host + ".A.TEST" by pointer
            return [0xC0, UInt8(question), 0, 33, 0, 1, 0, 0, 0, 60, 0, UInt8(rdata.count)] + rdata
        }
        message += answer(priority: 10, weight: 5, port: 88, host: "kdc2")
        message += answer(priority: 0, weight: 1, port: 750, host: "kdc1")
        let srvQuestion = DNSServiceRecords.Question(id: 1, name: "_kerberos._udp.A.TEST", type: DNSServiceRecords.typeSRV)
        let records = DNSServiceRecords.serviceRecords(message, question: srvQuestion).values
        #expect(records.map(\.target) == ["kdc1.A.TEST", "kdc2.A.TEST"])
        #expect(records.map(\.port) == [750, 88])
        #expect(DNSServiceRecords.serviceRecords(Array(message.prefix(20)), question: srvQuestion).values.isEmpty)
    }

    @Test("DNS: a query names its type and labels; A and AAAA answers become addresses; only the answer to our ID is taken")
    func dnsMessages() throws {
        let query = try #require(DNSServiceRecords.query(id: 0x1234, name: "kdc.example.test.", type: DNSServiceRecords.typeA))
        #expect(Array(query.prefix(4)) == [0x12, 0x34, 0x01, 0x00], "ID, recursion desired")
        #expect(Array(query.dropFirst(12)) == [3] + Array("kdc".utf8) + [7] + Array("example".utf8) + [4] + Array("test".utf8) + [0, 0, 1, 0, 1])
        #expect(DNSServiceRecords.query(id: 1, name: String(repeating: "a", count: 64) + ".test", type: 1) == nil, "a label over 63 bytes")
        #expect(DNSServiceRecords.query(id: 1, name: "a..test", type: 1) == nil, "an empty label")
        // The answer: the question copied, then an A record and an AAAA record pointing back at its name.
        var answer = Array(query.prefix(12))
        answer[2] = 0x81; answer[3] = 0x80; answer[7] = 2
        answer += query.dropFirst(12)
        answer += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]
        answer += [0xC0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16, 0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        let question = DNSServiceRecords.Question(id: 0x1234, name: "kdc.example.test.", type: DNSServiceRecords.typeA)
        #expect(DNSServiceRecords.isResponse(answer, to: question))
        #expect(!DNSServiceRecords.isResponse(answer, to: .init(id: 0x1235, name: question.name, type: question.type)), "another query's answer")
        #expect(!DNSServiceRecords.isResponse(query, to: question), "a query is no answer")
        #expect(DNSServiceRecords.addresses(answer, question: question, port: 88).values.map { $0.ipAddress ?? "" } == ["192.0.2.7"],
                "the A question takes the A record only")
        let addresses = DNSServiceRecords.addresses(answer, question: .init(id: 0x1234, name: "kdc.example.test", type: DNSServiceRecords.typeAAAA),
                                                    port: 88).values
        #expect(addresses.map { $0.ipAddress ?? "" } == [], "an AAAA record in the answer to the A question")
        var aaaa = try #require(DNSServiceRecords.query(id: 0x1234, name: "kdc.example.test", type: DNSServiceRecords.typeAAAA))
        aaaa[2] = 0x81; aaaa[3] = 0x80; aaaa[7] = 1
        aaaa += [0xC0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16, 0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
        #expect(DNSServiceRecords.addresses(aaaa, question: .init(id: 0x1234, name: "kdc.example.test", type: DNSServiceRecords.typeAAAA), port: 88)
            .values.map { $0.ipAddress ?? "" } == ["2001:db8::1"])
        #expect(DNSServiceRecords.addresses(answer, question: question, port: 88).values.allSatisfy { $0.port == 88 })
        #expect(DNSServiceRecords.addresses(Array(answer.prefix(answer.count - 3)), question: question, port: 88).values.map { $0.ipAddress ?? "" } == ["192.0.2.7"],
                "a truncated record is dropped, the ones before it kept")
    }

    @Test("resolver files: resolv.conf's name servers (three at most, 127.0.0.1 when none) and search domains; /etc/hosts; the names tried")
    func resolverFiles() throws {
        let directory = "/tmp/engine-unit-dns-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "# comment\nnameserver 192.0.2.1\nnameserver 2001:db8::53 ; trailing\nnameserver not-an-address\nnameserver 192.0.2.3\nnameserver 192.0.2.4\nsearch a.test b.test\noptions ndots:1\n"
            .write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
        let settings = DNSResolver.Settings.read(directory + "/resolv.conf")
        #expect(settings.nameservers.map { $0.ipAddress ?? "" } == ["192.0.2.1", "2001:db8::53", "192.0.2.3"])
        #expect(settings.nameservers.allSatisfy { $0.port == 53 })
        #expect(settings.search == ["a.test", "b.test"])
        #expect(DNSResolver.Settings.read(directory + "/missing").nameservers.map { $0.ipAddress ?? "" } == ["127.0.0.1"])

        try "127.0.0.1 localhost\n192.0.2.9 kdc1.a.test kdc1 # the KDC\n::1 localhost ip6-localhost\n#192.0.2.10 kdc2\n"
            .write(toFile: directory + "/hosts", atomically: true, encoding: .utf8)
        #expect(DNSResolver.hostsFile("KDC1", port: 88, path: directory + "/hosts").map { $0.ipAddress ?? "" } == ["192.0.2.9"])
        #expect(DNSResolver.hostsFile("localhost", port: 88, path: directory + "/hosts").map { $0.ipAddress ?? "" } == ["127.0.0.1", "::1"])
        #expect(DNSResolver.hostsFile("kdc2", port: 88, path: directory + "/hosts").isEmpty, "a commented-out line")

        #expect(DNSResolver.candidates("kdc1", search: ["a.test", "b.test"]) == ["kdc1.a.test", "kdc1.b.test", "kdc1"])
        #expect(DNSResolver.candidates("kdc1.a.test", search: ["b.test"]) == ["kdc1.a.test", "kdc1.a.test.b.test"])
    }

    @Test("KRB-ERROR error codes are read from the DER; other messages are not errors")
    func errorCodes() {
        // KRB-ERROR ::= [APPLICATION 30] SEQUENCE { pvno[0] 5, msg-type[1] 30, stime[4], susec[5], error-code[6] 52, ... }
        let time: [UInt8] = [0xA4, 0x11, 0x18, 0x0F] + Array("20260101000000Z".utf8)
        let fields: [UInt8] = [0xA0, 0x03, 0x02, 0x01, 0x05, 0xA1, 0x03, 0x02, 0x01, 0x1E] + time
            + [0xA5, 0x03, 0x02, 0x01, 0x00, 0xA6, 0x03, 0x02, 0x01, 0x34]
        let sequence: [UInt8] = [0x30, UInt8(fields.count)] + fields
        let error: [UInt8] = [0x7E, UInt8(sequence.count)] + sequence
        #expect(KDCMessage.errorCode(error) == KDCMessage.responseTooBig)
        #expect(KDCMessage.looksLikeReply(error))
        #expect(KDCMessage.errorCode([0x6B, 0x03, 0x30, 0x01, 0x00]) == nil)
        #expect(!KDCMessage.looksLikeReply([0x30, 0x00]))
        #expect(KDCMessage.errorCode([0x7E, 0x84, 0xFF]) == nil)
    }

    final class Kept {}

    @Test("a one-shot client runs its tasks and krb5 work on the calling thread with the caller's context, and drops what the work kept in that context when it ends")
    func oneShotClient() throws {
        let path = "/tmp/engine-oneshot-\(getpid()).conf"
        try "[libdefaults]\n default_realm = A.TEST\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let context = try Context(.files(path))
        let caller = pthread_self()
        let seen = KerberosClient.withOneShotSession(context: context, configuration: .init(krb5: .files(path))) { session in
            let onWorker = try? session.onWorker { context in
                _ = context.reusable("test.kept") { Kept() }
                return (pthread_self(), context.reusables.count, try context.defaultRealm())
            }
            return (pthread_self(), onWorker)
        }
        #expect(seen.0 == caller, "the login's task ran on the calling thread")
        #expect(seen.1?.0 == caller, "the krb5 work ran on the calling thread")
        #expect(seen.1?.1 == 1 && seen.1?.2 == "A.TEST", "with the caller's context")
        #expect(context.reusables.isEmpty, "what the work kept is dropped when the client ends")
    }
}
