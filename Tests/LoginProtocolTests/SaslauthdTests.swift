import KerberosSecrets
import LoginProtocol
import Testing

@Suite("saslauthd wire protocol")
struct SaslauthdTests {
    func frame(_ fields: [String]) -> [UInt8] {
        fields.flatMap { field -> [UInt8] in
            let bytes = Array(field.utf8)
            return [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xff)] + bytes
        }
    }

    @Test("replies encode as counted strings")
    func replies() throws {
        #expect(SaslauthdReply.ok.encoded == [0x00, 0x02, 0x4F, 0x4B])
        #expect(SaslauthdReply.no("authentication failed").encoded == [0x00, 0x18] + Array("NO authentication failed".utf8))
        #expect(try SaslauthdReply(decoding: [0, 2, 0x4F, 0x4B]) == .ok)
        #expect(try SaslauthdReply(decoding: [0, 5] + Array("NO xy".utf8)) == .no("xy"))
        #expect(throws: ProtocolError.self) { try SaslauthdReply(decoding: [0, 9, 0x4F]) }
    }

    @Test("a five-field request decodes, fed whole or a byte at a time")
    func fiveFields() throws {
        let bytes = frame(["bob", "s3cret", "imap", "EXAMPLE.ORG", "192.0.2.1"])
        var whole = SaslauthdDecoder()
        try whole.feed(bytes)
        guard case .request(let request) = try whole.progress() else { Issue.record("not decoded"); return }
        #expect(request.login == "bob")
        #expect(request.password.withUnsafeBytes { Array($0) } == Array("s3cret".utf8))
        #expect(request.service == "imap")
        #expect(request.realm == "EXAMPLE.ORG")
        #expect(request.clientAddress == "192.0.2.1")

        var split = SaslauthdDecoder()
        for (index, byte) in bytes.enumerated() {
            try split.feed([byte])
            let progress = try split.progress()
            if index == bytes.count - 1 {
                guard case .request = progress else { Issue.record("last byte did not complete"); return }
            } else if case .request = progress {
                Issue.record("completed early at \(index)")
            }
        }
    }

    @Test("four fields are reported so an old client's request can be answered")
    func fourFields() throws {
        var decoder = SaslauthdDecoder()
        try decoder.feed(frame(["alice@R", "pw", "smtp", ""]))
        guard case .fourFields = try decoder.progress() else { Issue.record("four fields not seen"); return }
        let request = try decoder.fourFieldRequest()
        #expect(request.clientAddress == nil)
        #expect(request.login == "alice@R" && request.realm.isEmpty)
    }

    @Test("malformed requests are refused with a reason that names the problem")
    func malformed() throws {
        var long = SaslauthdDecoder(maximumFieldLength: 16)
        try long.feed([0x01, 0x00] + Array(repeating: 0x41, count: 4))
        #expect(throws: ProtocolError("field 1 is 256 bytes, more than the limit of 16")) { try long.progress() }

        var nonUTF8 = SaslauthdDecoder()
        try nonUTF8.feed([0, 2, 0xff, 0xfe] + frame(["pw", "svc", "R", ""]))
        #expect(throws: ProtocolError("the login is not UTF-8")) { try nonUTF8.progress() }

        var empty = SaslauthdDecoder()
        try empty.feed(frame(["", "pw", "svc", "R", ""]))
        #expect(throws: ProtocolError("the login is empty")) { try empty.progress() }

        var trailing = SaslauthdDecoder()
        try trailing.feed(frame(["a", "b", "c", "d", "e"]) + [0x00])
        #expect(throws: ProtocolError.self) { try trailing.progress() }

        var overflow = SaslauthdDecoder(maximumFieldLength: 4)
        #expect(throws: ProtocolError.self) { try overflow.feed(Array(repeating: 0, count: 64)) }

        var truncated = SaslauthdDecoder()
        try truncated.feed([0x00, 0x05, 0x61])
        guard case .needMore = try truncated.progress() else { Issue.record("truncated frame accepted"); return }
    }

    @Test("a zero-length password is a valid frame")
    func zeroLengthPassword() throws {
        var decoder = SaslauthdDecoder()
        try decoder.feed(frame(["bob", "", "imap", "", ""]))
        guard case .request(let request) = try decoder.progress() else { Issue.record("not decoded"); return }
        #expect(request.password.isEmpty)
    }

    @Test("client encoding round-trips through the decoder")
    func roundTrip() throws {
        let request = SaslauthdRequest(login: "bob", password: Secret("pw"), service: "imap", realm: "R", clientAddress: "::1")
        var decoder = SaslauthdDecoder()
        try decoder.feed(request.encoded(fieldCount: 5))
        guard case .request(let decoded) = try decoder.progress() else { Issue.record("not decoded"); return }
        #expect(decoded.clientAddress == "::1")
        var four = SaslauthdDecoder()
        try four.feed(request.encoded(fieldCount: 4))
        guard case .fourFields = try four.progress() else { Issue.record("not four"); return }
    }

    @Test("20,000 random and mutated inputs never crash the decoder")
    func randomInputs() {
        var generator = SeededGenerator(seed: 42)
        let valid = frame(["bob", "pw", "imap", "R", "addr"])
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                bytes = valid
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            }
            var decoder = SaslauthdDecoder()
            do {
                try decoder.feed(bytes)
                _ = try decoder.progress()
            } catch {}
        }
    }
}

/// A deterministic random source (SplitMix64) for reproducible fuzz rounds.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
