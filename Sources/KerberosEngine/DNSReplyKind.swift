extension ReplyKind {
    /// A name server's response to `question` (``DNSServiceRecords/isResponse(_:to:)``), after a 2-byte length over
    /// TCP (RFC 1035 section 4.2.2). Truncated over UDP (the TC bit) asks the same server over TCP (RFC 7766, as glibc
    /// does); an RCODE other than NOERROR or NXDOMAIN (SERVFAIL, REFUSED: ``DNSServiceRecords/isAnswer(_:)``) is no
    /// answer, and the next server is asked.
    static func dns(_ question: DNSServiceRecords.Question) -> ReplyKind {
        ReplyKind(lengthPrefix: 2) { bytes, overUDP in
            guard DNSServiceRecords.isResponse(bytes, to: question) else { return .ignored }
            if overUDP && DNSServiceRecords.isTruncated(bytes) { return .tooBigForDatagram }
            return DNSServiceRecords.isAnswer(bytes) ? .reply : .noAnswer
        }
    }
}
