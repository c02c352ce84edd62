import Foundation
import KerberosSecrets
import LoginProtocol
import Testing

@Suite("JSON-lines conversation protocol")
struct ConversationProtocolTests {
    func decode(_ text: String) throws(ProtocolError) -> ClientMessage {
        try ClientMessage.decode(Array(text.utf8))
    }

    @Test("a login request decodes, with the password as a Secret")
    func login() throws {
        guard case .login(let request) = try decode(#"{"type":"login","principal":"bob","password":"p\u00e4ss\"w","service":"imap","extra":1}"#) else {
            Issue.record("not a login"); return
        }
        #expect(request.principal == "bob")
        #expect(request.service == "imap")
        #expect(request.password?.withUnsafeBytes { Array($0) } == Array("päss\"w".utf8))
        guard case .login(let bare) = try decode(#"{"type":"login","principal":"carol"}"#) else { Issue.record("not a login"); return }
        #expect(bare.password == nil && bare.clientAddress == nil)
    }

    @Test("a login request's client_address decodes and round-trips; one over 256 bytes is refused")
    func clientAddress() throws {
        guard case .login(let request) = try decode(#"{"type":"login","principal":"bob","client_address":"2001:db8::7"}"#) else {
            Issue.record("not a login"); return
        }
        #expect(request.clientAddress == "2001:db8::7")
        guard case .login(let again) = try ClientMessage.decode(ClientMessage.login(request).encodedLine.dropLast().map { $0 }) else {
            Issue.record("not a login"); return
        }
        #expect(again.clientAddress == "2001:db8::7")
        let long = String(repeating: "a", count: LoginRequest.maxClientAddressLength + 1)
        let error = #expect(throws: ProtocolError.self) { try decode(#"{"type":"login","principal":"bob","client_address":""# + long + #""}"#) }
        #expect(error?.reason.contains("client_address") == true)
    }

    @Test("answers of every kind decode and round-trip")
    func answers() throws {
        let line = #"{"type":"answers","id":3,"answers":{"password":"pw","otp":{"token":0,"value":"123456","pin":"77"},"pkinit":{"PKCS11:token=a":"1234"},"new-password":"n1","new-password-again":"n1","text":["t1","t2"],"raw":{"q":"{}"}}}"#
        guard case .answers(let id, let answers) = try decode(line) else { Issue.record("not answers"); return }
        #expect(id == 3)
        #expect(answers.password.map(text) == "pw")
        #expect(answers.otp?.token == 0)
        #expect(answers.otp?.value.map(text) == "123456")
        #expect(answers.otp?.pin.map(text) == "77")
        #expect(answers.pkinit["PKCS11:token=a"].map(text) == "1234")
        #expect(answers.newPassword.map(text) == "n1")
        #expect(answers.text.map(text) == ["t1", "t2"])
        #expect(answers.raw["q"].map(text) == "{}")
        let again = ClientMessage.answers(id: 3, answers).encodedLine
        #expect(again.last == UInt8(ascii: "\n"))
        guard case .answers(_, let decoded) = try ClientMessage.decode(Array(again.dropLast())) else { Issue.record("round trip"); return }
        #expect(decoded.otp?.pin.map(text) == "77")
        guard case .answers(_, let empty) = try decode(#"{"type":"answers","id":1,"answers":{}}"#) else { Issue.record("empty"); return }
        #expect(empty.isEmpty)
    }

    @Test("every question kind encodes to the documented shape and decodes back")
    func questions() throws {
        let questions: [LoginQuestion] = [
            .password(prompt: "Password for bob@R"),
            .otp(OTPChallenge(service: "R", tokens: [OTPToken(flags: [.collectToken, .collectPIN], vendor: "v", challenge: "c", length: 6, format: .decimal, tokenID: "t", algorithmID: "a")])),
            .pkinit([PKINITIdentity(identity: "PKCS11:token=x", flags: [.pinCountLow])]),
            .newPassword(prompt: "Enter new password"), .newPasswordAgain(prompt: "Enter it again"),
            .text(prompt: "Pass phrase", hidden: true), .raw(name: "custom", challenge: "{\"a\":1}"),
        ]
        let line = ServerMessage.questions(id: 7, questions).encodedLine
        let text = String(decoding: line, as: UTF8.self)
        #expect(text.hasPrefix(#"{"type":"questions","id":7,"questions":[{"kind":"password","prompt":"Password for bob@R"}"#))
        #expect(text.contains(#"{"kind":"otp","service":"R","tokens":[{"flags":["collect-token","collect-pin"],"vendor":"v","challenge":"c","length":6,"format":"decimal","tokenID":"t","algID":"a"}]}"#))
        #expect(text.contains(#"{"kind":"pkinit","identities":[{"identity":"PKCS11:token=x","flags":["pin-count-low"]}]}"#))
        guard case .questions(let id, let decoded) = try ServerMessage.decode(Array(line.dropLast())) else { Issue.record("not questions"); return }
        #expect(id == 7)
        #expect(decoded == questions)
    }

    @Test("results encode with the protocol's error names")
    func results() throws {
        let ok = String(decoding: ServerMessage.result(.success(principal: "bob@R", verified: true, expires: KerberosTime(secondsSince1970: 1_795_000_000))).encodedLine, as: UTF8.self)
        #expect(ok == #"{"type":"result","ok":true,"principal":"bob@R","verified":true,"expires":"2026-11-18T11:06:40Z"}"# + "\n")
        guard case .result(let success) = try ServerMessage.decode(Array(ok.utf8.dropLast())) else { Issue.record("not result"); return }
        #expect(success.expires == KerberosTime(secondsSince1970: 1_795_000_000))
        let badTime = #expect(throws: ProtocolError.self) {
            try ServerMessage.decode(Array(#"{"type":"result","ok":true,"principal":"bob@R","expires":"2026-11-31T11:06:40Z"}"#.utf8))
        }
        #expect(badTime?.reason.contains("\"expires\"") == true)
        let failed = String(decoding: ServerMessage.result(.failed(.badCredentials, "Authentication failed")).encodedLine, as: UTF8.self)
        #expect(failed == #"{"type":"result","ok":false,"error":"bad-credentials","message":"Authentication failed"}"# + "\n")
        guard case .result(let decoded) = try ServerMessage.decode(Array(failed.utf8.dropLast())) else { Issue.record("not result"); return }
        #expect(decoded.failure == .badCredentials)
        #expect(String(decoding: ServerMessage.info("Password expires in 3 days").encodedLine, as: UTF8.self) == #"{"type":"info","message":"Password expires in 3 days"}"# + "\n")
    }

    @Test("malformed JSON and messages are refused with a reason", arguments: [
        ("", "unexpected end"), ("{", "expected a member name"), (#"{"type":"login"}"#, "missing \"principal\""),
        (#"{"type":"login","principal":""}"#, "\"principal\" is empty"), (#"{"type":"nope"}"#, "unknown message type"),
        (#"[1]"#, "must be a JSON object"), (#"{"type":"login","principal":"a"} x"#, "unexpected bytes"),
        (#"{"type":"login","principal":5}"#, "must be a string"), (#"{"type":"answers","id":1.5,"answers":{}}"#, "integer"),
        (#"{"type":"answers","id":1,"answers":[]}"#, "must be an object"), (#"{"a":1,"a":2}"#, "duplicate"),
        (#"{"type":"login","principal":"\ud800"}"#, "surrogate"), (#"{"type":"login","principal":"a\u0"}"#, "\\u"),
        (#"{"x":1e999}"#, "out of range"), (#"{"x":01}"#, "expected ','"), ("{\"x\":\"\u{01}\"}", "control character"),
    ])
    func malformed(input: String, reason: String) {
        let error = #expect(throws: ProtocolError.self) { try decode(input) }
        #expect(error?.reason.contains(reason) == true, "\(error?.reason ?? "no error") should mention \(reason)")
    }

    @Test("invalid UTF-8 and deep nesting are refused")
    func bytesAndDepth() {
        #expect(throws: ProtocolError.self) { try ClientMessage.decode(Array(#"{"type":"login","principal":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8)) }
        #expect(throws: ProtocolError.self) { try ClientMessage.decode(Array(#"{"type":"login","principal":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8)) }
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        let error = #expect(throws: ProtocolError.self) { try decode(deep) }
        #expect(error?.reason.contains("nested deeper") == true)
    }

    @Test("the line framer splits lines, strips CR and skips one over-long line")
    func framer() {
        var framer = LineFramer(maximumLength: 8)
        var lines = framer.feed(Array("ab\r\ncd\n0123456789xyz\nok\n".utf8))
        #expect(lines.count == 4)
        guard case .line(let first) = lines.removeFirst(), case .line(let second) = lines.removeFirst(),
              case .tooLong = lines.removeFirst(), case .line(let last) = lines.removeFirst() else { Issue.record("framing"); return }
        #expect(text(first) == "ab")
        #expect(text(second) == "cd")
        #expect(text(last) == "ok")
        #expect(framer.feed(Array("par".utf8)).isEmpty)
        let partial = framer.hasPartialLine
        #expect(partial)
    }

    @Test("lines of every size up to the 64 KiB limit come out whole whatever the read sizes; one byte more is too long")
    func framerSizes() {
        var framer = LineFramer()
        var generator = SeededGenerator(seed: 11)
        for length in [0, 1, 511, 512, 513, 1023, 1024, 4097, 65_535, 65_536] {
            let line = (0..<length).map { UInt8(ascii: "a") + UInt8($0 % 26) }
            var input = line + [UInt8(ascii: "\n")]
            var out: [LineFramer.Line] = []
            while !input.isEmpty {
                let chunk = Int.random(in: 1...max(1, min(input.count, 9000)), using: &generator)
                out += framer.feed(Array(input.prefix(chunk)))
                input.removeFirst(chunk)
            }
            guard out.count == 1, case .line(let secret) = out[0] else { Issue.record("length \(length): \(out.count) lines"); continue }
            #expect(secret.withUnsafeBytes { Array($0) } == line, "length \(length)")
        }
        let tooLong = framer.feed([UInt8](repeating: UInt8(ascii: "x"), count: 65_537) + [UInt8(ascii: "\n")] + Array("ok\n".utf8))
        #expect(tooLong.count == 2)
        if case .tooLong = tooLong.first {} else { Issue.record("expected tooLong first") }
    }

    @Test("20,000 random and mutated lines never crash the decoder")
    func randomInputs() {
        var generator = SeededGenerator(seed: 7)
        let valid = Array(#"{"type":"answers","id":1,"answers":{"otp":{"token":0,"value":"1"},"pkinit":{"x":"y"},"text":["a"]}}"#.utf8)
        for round in 0..<20_000 {
            var bytes = valid
            if round % 3 == 0 {
                bytes = (0..<Int.random(in: 0...48, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            } else {
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                }
            }
            _ = try? ClientMessage.decode(bytes)
            _ = try? ServerMessage.decode(bytes)
        }
    }

    private func text(_ secret: Secret) -> String { secret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
}
