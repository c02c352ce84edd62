@testable import KerberosEngine
import Testing

/// KRB-ERROR parsing for the engine's routing, on hand-made DER.
@Suite("KDCMessage (unit)")
struct KDCMessageTests {
    private func tlv(_ tag: UInt8, _ body: [UInt8]) -> [UInt8] {
        precondition(body.count < 0x80 || body.count <= 0xFF)
        return [tag] + (body.count < 0x80 ? [UInt8(body.count)] : [0x81, UInt8(body.count)]) + body
    }

    private func krbError(code: UInt8, eData: [UInt8]?) -> [UInt8] {
        let fields = tlv(0xA0, tlv(0x02, [5])) + tlv(0xA1, tlv(0x02, [30])) + tlv(0xA6, tlv(0x02, [code]))
        return tlv(0x7E, tlv(0x30, fields + (eData.map { tlv(0xAC, tlv(0x04, $0)) } ?? [])))
    }

    @Test("the error code is read from a KRB-ERROR, with or without e-data; other messages have none")
    func errorCodes() {
        #expect(KDCMessage.errorCode(krbError(code: 25, eData: [0x30, 0x00])) == 25)
        #expect(KDCMessage.errorCode(krbError(code: 6, eData: nil)) == 6)
        #expect(KDCMessage.errorCode([0x6B, 0x03, 0x30, 0x01, 0x00]) == nil, "an AS-REP is no KRB-ERROR")
    }
}
