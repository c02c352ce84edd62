import Kerberos
import KerberosEngine
import LoginProtocol
import NIOCore
import NIOEmbedded
import VerifyDaemon

/// The parsers that read bytes from the network or from a client, one libFuzzer target each (`make fuzz`,
/// docs/fuzzing.md). Each takes any bytes and must neither crash nor run away in time or memory; the answers are
/// thrown away. Seeds: `Tests/Fuzz/corpus/<name>`.
enum FuzzTarget: String, CaseIterable {
    /// A name server's response (DNSServiceRecords): the question check, SRV, A and AAAA answers.
    case dns
    /// TCP replies of KDCs (4-byte length) and name servers (2-byte length) through the frame decoder, fed in pieces.
    case frames
    /// The DER reader of KDC replies (KDCMessage): the message type, a KRB-ERROR's code, PA-ETYPE-INFO2.
    case der
    /// A kpasswd server's reply up to its sealed part (RFC 3244 framing, a KRB-ERROR's result, MIT's chpw message).
    case kpasswd
    /// The conversation socket's JSON lines: the line framer, the JSON parser, client and server messages.
    case json
    /// saslauthd requests (fed in pieces) and replies.
    case saslauthd
    /// krb5-verifyd's TOML configuration.
    case toml

    /// Runs one input.
    func run(_ bytes: [UInt8]) {
        switch self {
        case .dns: Self.dns(bytes)
        case .frames: Self.frames(bytes)
        case .der: Self.der(bytes)
        case .kpasswd: Self.kpasswd(bytes)
        case .json: Self.json(bytes)
        case .saslauthd: Self.saslauthd(bytes)
        case .toml: Self.toml(bytes)
        }
    }

    /// The response is read as the answer to each of the three questions the engine asks, with the message's own ID
    /// (a forged ID is checked by the same comparison).
    private static func dns(_ bytes: [UInt8]) {
        let id = bytes.count >= 2 ? UInt16(bytes[0]) << 8 | UInt16(bytes[1]) : 0
        _ = DNSServiceRecords.isTruncated(bytes)
        _ = DNSServiceRecords.isAnswer(bytes)
        _ = DNSServiceRecords.serviceRecords(bytes, question: .init(id: id, name: "_kerberos._udp.example.test", type: DNSServiceRecords.typeSRV))
        for type in [DNSServiceRecords.typeA, DNSServiceRecords.typeAAAA] {
            _ = DNSServiceRecords.addresses(bytes, question: .init(id: id, name: "kdc.example.test", type: type), port: 88)
        }
    }

    /// The first byte picks the length prefix (even: 4 bytes, odd: 2) and the size of the pieces the rest arrives in.
    private static func frames(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return }
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(KDCFrameDecoder(maxLength: 1 << 16, lengthPrefix: first & 1 == 0 ? 4 : 2)))
        defer { _ = try? channel.finish() }
        let piece = Int(first >> 1) + 1
        var offset = 1
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            do { try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end])) } catch { return }
            while let frame = try? channel.readInbound(as: ByteBuffer.self) {
                der(Array(frame.readableBytesView))
            }
            offset = end
        }
    }

    private static func der(_ bytes: [UInt8]) {
        _ = KDCMessage.looksLikeReply(bytes)
        _ = KDCMessage.errorCode(bytes)
    }

    /// One krb5 context for every input (as a worker has one).
    nonisolated(unsafe) private static let context = try? Context()

    private static func kpasswd(_ bytes: [UInt8]) {
        guard let context else { fatalError("krb5_init_context failed") }
        _ = try? PasswordChangeExchange.readUnsealed(bytes, context: context)
    }

    /// Whole lines, then the bytes through the framer in pieces as a socket delivers them.
    private static func json(_ bytes: [UInt8]) {
        _ = try? ClientMessage.decode(bytes)
        _ = try? ServerMessage.decode(bytes)
        var framer = LineFramer(maximumLength: 4096)
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + 1 + Int(bytes[offset] % 64))
            for case .line(let line) in framer.feed(bytes[offset..<end]) {
                _ = line.withUnsafeBytes { try? ClientMessage.decode($0) }
            }
            offset = end
        }
    }

    /// The input as a request, fed in pieces whose size its first byte picks, and as a reply.
    private static func saslauthd(_ bytes: [UInt8]) {
        _ = try? SaslauthdReply(decoding: bytes)
        guard let first = bytes.first else { return }
        var decoder = SaslauthdDecoder(maximumFieldLength: 256)
        let piece = Int(first % 64) + 1
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            do {
                try decoder.feed(bytes[offset..<end])
                switch try decoder.progress() {
                case .fourFields: _ = try? decoder.fourFieldRequest()
                default: break
                }
            } catch { return }
            offset = end
        }
    }

    private static func toml(_ bytes: [UInt8]) {
        var configuration = DaemonConfiguration()
        do {
            try configuration.load(toml: String(decoding: bytes, as: UTF8.self))
            try configuration.validate()
        } catch {}
    }
}
