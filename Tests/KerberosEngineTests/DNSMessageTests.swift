@testable import KerberosEngine
import Kerberos
import NIOCore
import Testing

/// Issue #21, finding 5: what the engine takes from a name server's response, on crafted messages. A response is
/// taken only when it repeats the question; only records about the asked name (or its CNAME aliases) count; names,
/// compression, record counts and addresses are bounded; the TTL is kept within bounds.
@Suite("DNS responses (unit)")
struct DNSMessageTests {
    static let srvName = "_kerberos._udp.example.test"
    static let host = "kdc.example.test"

    static func name(_ text: String) -> [UInt8] {
        text.split(separator: ".").flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) } + [0]
    }

    static func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }

    /// A header: ID, flags, one question, `answers` answers.
    static func header(id: Int, flags: Int = 0x8180, questions: Int = 1, answers: Int) -> [UInt8] {
        u16(id) + u16(flags) + u16(questions) + u16(answers) + u16(0) + u16(0)
    }

    static func question(_ text: String, type: UInt16) -> [UInt8] { name(text) + u16(Int(type)) + u16(1) }

    static func record(owner: [UInt8] = [0xC0, 12], type: UInt16, ttl: UInt32 = 300, recordClass: Int = 1, data: [UInt8]) -> [UInt8] {
        owner + u16(Int(type)) + u16(recordClass) + u16(Int(ttl >> 16)) + u16(Int(ttl & 0xFFFF)) + u16(data.count) + data
    }

    static func srv(priority: Int = 0, weight: Int = 0, port: Int = 88, target: [UInt8]) -> [UInt8] {
        u16(priority) + u16(weight) + u16(port) + target
    }

    let srvQuestion = DNSServiceRecords.Question(id: 0x1234, name: srvName, type: DNSServiceRecords.typeSRV)
    let aQuestion = DNSServiceRecords.Question(id: 0x1234, name: host, type: DNSServiceRecords.typeA)

    func srvResponse(_ records: [[UInt8]], flags: Int = 0x8180) -> [UInt8] {
        Self.header(id: 0x1234, flags: flags, answers: records.count) + Self.question(Self.srvName, type: DNSServiceRecords.typeSRV) + records.joined()
    }

    @Test("a response is taken only for the question asked: its ID, the response bit, one question with the same name (any case), type and class")
    func questionChecked() {
        let good = srvResponse([Self.record(type: 33, data: Self.srv(target: Self.name("kdc1.example.test")))])
        #expect(DNSServiceRecords.isResponse(good, to: srvQuestion))
        #expect(DNSServiceRecords.serviceRecords(good, question: srvQuestion).values.map(\.target) == ["kdc1.example.test"])
        let upper = DNSServiceRecords.Question(id: 0x1234, name: Self.srvName.uppercased() + ".", type: DNSServiceRecords.typeSRV)
        #expect(DNSServiceRecords.isResponse(good, to: upper), "names compare without ASCII case, a trailing dot ignored")

        let otherName = Self.header(id: 0x1234, answers: 1) + Self.question("_kerberos._udp.evil.test", type: 33)
            + Self.record(type: 33, data: Self.srv(target: Self.name("evil.test")))
        #expect(!DNSServiceRecords.isResponse(otherName, to: srvQuestion), "another name's answer with our ID")
        #expect(DNSServiceRecords.serviceRecords(otherName, question: srvQuestion).values.isEmpty)
        let otherType = Self.header(id: 0x1234, answers: 0) + Self.question(Self.srvName, type: 1)
        #expect(!DNSServiceRecords.isResponse(otherType, to: srvQuestion))
        var otherClass = good
        otherClass[12 + Self.name(Self.srvName).count + 3] = 3  // CHAOS
        #expect(!DNSServiceRecords.isResponse(otherClass, to: srvQuestion))
        var noQuestion = good
        noQuestion[5] = 0
        #expect(!DNSServiceRecords.isResponse(noQuestion, to: srvQuestion), "QDCOUNT 0")
        var twoQuestions = good
        twoQuestions[5] = 2
        #expect(!DNSServiceRecords.isResponse(twoQuestions, to: srvQuestion), "QDCOUNT 2")
        var notQuery = good
        notQuery[2] |= 0x10  // OPCODE 2, STATUS
        #expect(!DNSServiceRecords.isResponse(notQuery, to: srvQuestion))
        var wrongID = good
        wrongID[1] = 0x35
        #expect(!DNSServiceRecords.isResponse(wrongID, to: srvQuestion))
        var query = good
        query[2] &= 0x7F
        #expect(!DNSServiceRecords.isResponse(query, to: srvQuestion), "a query is no response")
    }

    @Test("RCODE: NOERROR and NXDOMAIN answer, SERVFAIL and REFUSED do not (the next server is asked) and carry no records; TC is seen")
    func responseCodes() {
        let record = Self.record(type: 33, data: Self.srv(target: Self.name("kdc1.example.test")))
        #expect(DNSServiceRecords.isAnswer(srvResponse([])))
        #expect(DNSServiceRecords.isAnswer(srvResponse([], flags: 0x8183)))
        #expect(!DNSServiceRecords.isAnswer(srvResponse([record], flags: 0x8182)), "SERVFAIL")
        #expect(!DNSServiceRecords.isAnswer(srvResponse([record], flags: 0x8185)), "REFUSED")
        #expect(DNSServiceRecords.serviceRecords(srvResponse([record], flags: 0x8182), question: srvQuestion).values.isEmpty)
        #expect(DNSServiceRecords.isTruncated(srvResponse([], flags: 0x8380)))
        #expect(!DNSServiceRecords.isTruncated(srvResponse([record])))
    }

    @Test("only records about the asked name count: another owner's records are ignored, CNAME aliases followed, other classes skipped")
    func ownerNames() {
        var message = Self.header(id: 0x1234, answers: 4) + Self.question(Self.host, type: DNSServiceRecords.typeA)
        message += Self.record(owner: Self.name("evil.test"), type: 1, data: [192, 0, 2, 66])
        message += Self.record(type: 1, recordClass: 3, data: [192, 0, 2, 67])
        message += Self.record(type: 5, data: Self.name("alias.example.test"))
        message += Self.record(owner: Self.name("ALIAS.example.test"), type: 1, data: [192, 0, 2, 9])
        let addresses = DNSServiceRecords.addresses(message, question: aQuestion, port: 88).values
        #expect(addresses.map { $0.ipAddress ?? "" } == ["192.0.2.9"])
        var wrongLength = Self.header(id: 0x1234, answers: 1) + Self.question(Self.host, type: DNSServiceRecords.typeA)
        wrongLength += Self.record(type: 1, data: [192, 0, 2, 9, 0])
        #expect(DNSServiceRecords.addresses(wrongLength, question: aQuestion, port: 88).values.isEmpty, "an A record of 5 bytes")
    }

    @Test("names: at most 255 bytes; compression pointers only backwards, before every byte read so far, at most 16 in one name")
    func boundedNames() {
        // 4 labels of 63 bytes and the root: 257 bytes, over the limit; 3 of them and a short one fit.
        let label: [UInt8] = [63] + [UInt8](repeating: 0x61, count: 63)
        let long: [UInt8] = label + label + label + label + [0]
        #expect(DNSServiceRecords.serviceRecords(srvResponse([Self.record(type: 33, data: Self.srv(target: long))]), question: srvQuestion).values.isEmpty)
        let fits: [UInt8] = label + label + label + [61] + [UInt8](repeating: 0x62, count: 61) + [0]
        #expect(DNSServiceRecords.serviceRecords(srvResponse([Self.record(type: 33, data: Self.srv(target: fits))]), question: srvQuestion).values.count == 1)

        // A target that points at itself, and one that points forwards.
        let base = srvResponse([]).count
        let loop = srvResponse([Self.record(type: 33, data: Self.srv(target: Self.u16(0xC000 | (base + 12 + 6))))])
        #expect(DNSServiceRecords.serviceRecords(loop, question: srvQuestion).values.isEmpty, "a pointer to itself")
        let forward = srvResponse([Self.record(type: 33, data: Self.srv(target: Self.u16(0xC000 | (base + 12 + 8)) + Self.name("kdc")))])
        #expect(DNSServiceRecords.serviceRecords(forward, question: srvQuestion).values.isEmpty, "a pointer forwards")

        // Chains of pointers, each to the one before, ending at the question's name: the chain is the data of a
        // TXT record, and the SRV record's owner points at its end.
        func chain(_ hops: Int) -> [UInt8] {
            let start = srvResponse([]).count + 12  // after the TXT record's owner, type, class, TTL and length
            var pointers: [UInt8] = []
            var target = 12
            for _ in 0..<hops - 1 {
                pointers += Self.u16(0xC000 | target)
                target = start + pointers.count - 2
            }
            return Self.header(id: 0x1234, answers: 2) + Self.question(Self.srvName, type: 33) + Self.record(type: 16, data: pointers)
                + Self.record(owner: Self.u16(0xC000 | target), type: 33, data: Self.srv(target: Self.name("kdc.example.test")))
        }
        #expect(DNSServiceRecords.serviceRecords(chain(16), question: srvQuestion).values.count == 1, "16 pointers")
        #expect(DNSServiceRecords.serviceRecords(chain(17), question: srvQuestion).values.isEmpty, "17 pointers")
    }

    @Test("counts: at most 16 SRV records (highest priority first), 8 addresses, 256 records read")
    func boundedCounts() {
        let records = (0..<200).map { Self.record(type: 33, data: Self.srv(priority: 199 - $0, port: 1000 + $0, target: Self.name("k\($0).example.test"))) }
        let srv = DNSServiceRecords.serviceRecords(srvResponse(records), question: srvQuestion).values
        #expect(srv.count == DNSServiceRecords.maximumServiceRecords)
        #expect(srv.first?.port == 1199 && srv.last?.port == 1184, "the 16 of highest priority")
        let servers = DNSServiceRecords.servers(udp: srv, tcp: srv.map { var other = $0; other.port += 1000; return other })
        #expect(servers.count == 32, "two answers of 16 each")

        var many = Self.header(id: 0x1234, answers: 20) + Self.question(Self.host, type: DNSServiceRecords.typeA)
        for index in 0..<20 { many += Self.record(type: 1, data: [192, 0, 2, UInt8(index)]) }
        #expect(DNSServiceRecords.addresses(many, question: aQuestion, port: 88).values.count == DNSServiceRecords.maximumAddresses)

        // ANCOUNT 65535 over a 64 KiB message of tiny records: 256 are read, the answer is in the first.
        var huge = Self.header(id: 0x1234, answers: 0xFFFF) + Self.question(Self.host, type: DNSServiceRecords.typeA)
        huge += Self.record(type: 1, data: [192, 0, 2, 1])
        while huge.count < 65_000 { huge += Self.record(type: 16, data: []) }
        #expect(DNSServiceRecords.addresses(huge, question: aQuestion, port: 88).values.count == 1)
    }

    @Test("TTL: the smallest of the records used, not under 5 s nor over 300 s; 300 s when there are none")
    func timeToLive() {
        let records = [Self.record(type: 33, ttl: 120, data: Self.srv(target: Self.name("a.example.test"))),
                       Self.record(type: 33, ttl: 60, data: Self.srv(target: Self.name("b.example.test")))]
        #expect(DNSServiceRecords.serviceRecords(srvResponse(records), question: srvQuestion).ttl == 60)
        let zero = [Self.record(type: 33, ttl: 0, data: Self.srv(target: Self.name("a.example.test")))]
        #expect(DNSServiceRecords.serviceRecords(srvResponse(zero), question: srvQuestion).ttl == DNSServiceRecords.minimumTTL)
        let day = [Self.record(type: 33, ttl: 86_400, data: Self.srv(target: Self.name("a.example.test")))]
        #expect(DNSServiceRecords.serviceRecords(srvResponse(day), question: srvQuestion).ttl == DNSServiceRecords.maximumTTL)
        #expect(DNSServiceRecords.serviceRecords(srvResponse([]), question: srvQuestion).ttl == DNSServiceRecords.maximumTTL)
    }

    @Test("a configured name server is a numeric address and a port from 1 to 65535; anything else is an invalid-request error naming it")
    func configuredNameServer() throws {
        #expect(try KerberosClient.NameServer("127.0.0.1", port: 5353).address.port == 5353)
        #expect(try KerberosClient.NameServer("127.0.0.1", port: 5353).description == "127.0.0.1:5353")
        #expect(try KerberosClient.NameServer("2001:db8::53").description == "[2001:db8::53]:53")
        for (address, port) in [("ns.example.test", 53), ("192.0.2.1", 0), ("192.0.2.1", 65_536), ("", 53)] {
            do {
                _ = try KerberosClient.NameServer(address, port: port)
                Issue.record("accepted \(address) port \(port)")
            } catch {
                #expect(error.reason == .invalidRequest)
                #expect(error.message.contains("\"\(address)\""), "\(error.message)")
            }
        }
    }
}
