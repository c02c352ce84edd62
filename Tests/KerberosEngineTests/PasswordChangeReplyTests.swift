import Foundation
@testable import KerberosEngine
import Kerberos
import Testing

/// A kpasswd reply's unsealed part (``PasswordChangeExchange/readUnsealed(_:context:)``), on crafted KRB-ERRORs.
@Suite("kpasswd replies (unit)")
struct PasswordChangeReplyTests {
    /// A KRB-ERROR (KRB_ERR_GENERIC, 60) from kadmin/changepw whose e-data is the result `code`
    /// followed by `server`, the server's message.
    static func krbError(code: UInt8, server: [UInt8]) -> [UInt8] {
        func tlv(_ tag: UInt8, _ body: [UInt8]) -> [UInt8] {
            [tag] + (body.count < 0x80 ? [UInt8(body.count)] : [0x81, UInt8(body.count)]) + body
        }
        var fields = tlv(0xA0, tlv(0x02, [5])) + tlv(0xA1, tlv(0x02, [30]))
        fields += tlv(0xA4, tlv(0x18, Array("20260101000000Z".utf8))) + tlv(0xA5, tlv(0x02, [0])) + tlv(0xA6, tlv(0x02, [60]))
        fields += tlv(0xA9, tlv(0x1B, Array("EXAMPLE.TEST".utf8)))
        fields += tlv(0xAA, tlv(0x30, tlv(0xA0, tlv(0x02, [2])) + tlv(0xA1, tlv(0x30, tlv(0x1B, Array("kadmin".utf8)) + tlv(0x1B, Array("changepw".utf8))))))
        fields += tlv(0xAC, tlv(0x04, [0, code] + server))
        return tlv(0x7E, tlv(0x30, fields))
    }

    func message(_ server: [UInt8]) throws -> String {
        guard case .result(let result) = try PasswordChangeExchange.readUnsealed(Self.krbError(code: 4, server: server), context: Context()) else {
            Issue.record("no result")
            return ""
        }
        #expect(result.code == 4)
        return result.message
    }

    @Test("the server's message: UTF-8 taken as it is; a message ending inside a UTF-8 sequence (MIT reads past it: make fuzz) or with NUL is none")
    func serverMessages() throws {
        #expect(try message(Array("Password too short".utf8)) == "Password too short")
        #expect(try message(Array("Mot de passe trop court, Zoë".utf8)) == "Mot de passe trop court, Zoë")
        #expect(try message(Array("Password too shor".utf8) + [0xC2]) == "", "the input make fuzz found")
        #expect(try message(Array("a\u{0}b".utf8)) == "")
        let fuzzed = try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/kpasswd/truncated-utf8-message"))
        guard case .result(let result) = try PasswordChangeExchange.readUnsealed(Array(fuzzed), context: Context()) else {
            Issue.record("no result")
            return
        }
        #expect(result.message == "")
    }

    @Test("an Active Directory policy blob is worded by MIT")
    func activeDirectoryPolicy() throws {
        // zero, version 0, min length 7, history 0, properties 1 (complexity), max age 0, min age 0 (100 ns units).
        let blob: [UInt8] = [0, 0] + [0, 0, 0, 7] + [0, 0, 0, 0] + [0, 0, 0, 1] + [UInt8](repeating: 0, count: 16)
        #expect(blob.count == PasswordChangeExchange.adPolicyLength)
        let text = try message(blob)
        #expect(text.contains("7 characters"), "\(text)")
    }
}
