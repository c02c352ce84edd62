/// Just enough DER to route KDC replies: the message type and a KRB-ERROR's error code.
package enum KDCMessage {
    /// `KRB_ERR_RESPONSE_TOO_BIG`.
    static let responseTooBig = 52

    /// AS-REP (`[APPLICATION 11]`), TGS-REP (`[APPLICATION 13]`) or KRB-ERROR (`[APPLICATION 30]`), as MIT's
    /// `krb5_is_as_rep`/`krb5_is_tgs_rep`/`krb5_is_krb_error` check before accepting a reply.
    package static func looksLikeReply(_ bytes: [UInt8]) -> Bool {
        guard let first = bytes.first else { return false }
        return first == 0x6B || first == 0x6D || first == 0x7E
    }

    /// The `error-code` of a KRB-ERROR, or nil for anything else.
    package static func errorCode(_ bytes: [UInt8]) -> Int? {
        guard let value = krbErrorField(bytes, tag: 0xA6) else { return nil }  // error-code [6] Int32
        var inner = DERReader(bytes: value)
        guard let (integerTag, integer) = inner.next(), integerTag == 0x02 else { return nil }
        return Self.integer(integer)
    }

    /// The contents of the first field tagged `tag` in a KRB-ERROR (`[APPLICATION 30]` SEQUENCE), or nil when
    /// `bytes` is no KRB-ERROR or has no such field.
    private static func krbErrorField(_ bytes: [UInt8], tag: UInt8) -> ArraySlice<UInt8>? {
        var reader = DERReader(bytes: bytes[...])
        guard let (applicationTag, body) = reader.next(), applicationTag == 0x7E else { return nil }
        var outer = DERReader(bytes: body)
        guard let (sequenceTag, fields) = outer.next(), sequenceTag == 0x30 else { return nil }
        var fieldReader = DERReader(bytes: fields)
        while let (fieldTag, value) = fieldReader.next() {
            if fieldTag == tag { return value }
        }
        return nil
    }

    private static func integer(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 4 else { return nil }
        var result = Int(Int8(bitPattern: bytes.first!))
        for byte in bytes.dropFirst() { result = result << 8 | Int(byte) }
        return result
    }

    private struct DERReader {
        var bytes: ArraySlice<UInt8>

        mutating func next() -> (UInt8, ArraySlice<UInt8>)? {
            guard bytes.count >= 2 else { return nil }
            let tag = bytes[bytes.startIndex]
            var index = bytes.startIndex + 1
            var length = Int(bytes[index])
            index += 1
            if length & 0x80 != 0 {
                let count = length & 0x7F
                guard count >= 1, count <= 4, index + count <= bytes.endIndex else { return nil }
                length = 0
                for byte in bytes[index..<(index + count)] { length = length << 8 | Int(byte) }
                index += count
            }
            guard length >= 0, index + length <= bytes.endIndex else { return nil }
            let body = bytes[index..<(index + length)]
            bytes = bytes[(index + length)...]
            return (tag, body)
        }
    }
}

extension ReplyKind {
    /// A KDC's reply: an AS-REP, a TGS-REP or a KRB-ERROR (``KDCMessage/looksLikeReply(_:)``), after a 4-byte length
    /// over TCP (RFC 4120 section 7.2.2); a KRB-ERROR `KRB_ERR_RESPONSE_TOO_BIG` over UDP asks for TCP.
    static let kdc = ReplyKind(lengthPrefix: 4) { bytes, overUDP in
        guard KDCMessage.looksLikeReply(bytes) else { return .ignored }
        return overUDP && KDCMessage.errorCode(bytes) == KDCMessage.responseTooBig ? .tooBigForDatagram : .reply
    }
}
