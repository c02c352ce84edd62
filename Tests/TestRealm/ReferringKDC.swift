import Kerberos
import KerberosEngine
import NIOCore
import NIOPosix

/// A KDC on 127.0.0.1 (UDP and TCP, one free port) that answers every request with a KRB-ERROR `KDC_ERR_WRONG_REALM`
/// whose client is `client@realm`: the referral an Active Directory KDC sends for a user of another domain.
public final class ReferringKDC: @unchecked Sendable {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    /// The port of both sockets.
    public let port: Int
    private let count = Locked(0)
    private var channels: [any Channel] = []

    /// How many requests came.
    public var requests: Int { count.withLock { $0 } }

    /// Listens on a free port of 127.0.0.1 (UDP first, then TCP on the same port).
    public init(to realm: String, client: String, serverRealm: String) throws {
        let reply = Self.wrongRealm(clientRealm: realm, client: client, serverRealm: serverRealm)
        let count = self.count
        for _ in 0..<20 {
            let udp = try DatagramBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DatagramReader { context, datagram in
                            count.withLock { $0 += 1 }
                            DatagramReader.reply(reply, to: datagram, on: context)
                        })
                    }
                }
                .bind(host: "127.0.0.1", port: 0).wait()
            let port = udp.localAddress?.port ?? 0
            let tcp = try? ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(KDCFrameDecoder(maxLength: 65_536)))
                        try channel.pipeline.syncOperations.addHandler(FrameReader(lengthPrefix: 4) { _ in
                            count.withLock { $0 += 1 }
                            return reply
                        })
                    }
                }
                .bind(host: "127.0.0.1", port: port).wait()
            if let tcp {
                self.port = port
                channels = [udp, tcp]
                return
            }
            try? udp.close().wait()
        }
        throw TestRealmError("no free port for the referring KDC")
    }

    public func stop() {
        for channel in channels { try? channel.close().wait() }
        try? group.syncShutdownGracefully()
    }

    /// KRB-ERROR ::= [APPLICATION 30] SEQUENCE { pvno[0] 5, msg-type[1] 30, stime[4], susec[5], error-code[6] 68,
    /// crealm[7], cname[8], realm[9], sname[10] krbtgt/realm } (RFC 4120 section 5.9.1).
    public static func wrongRealm(clientRealm: String, client: String, serverRealm: String) -> [UInt8] {
        func tlv(_ tag: UInt8, _ body: [UInt8]) -> [UInt8] {
            let length: [UInt8] = body.count < 0x80 ? [UInt8(body.count)] : [0x81, UInt8(body.count)]
            return [tag] + length + body
        }
        func name(_ type: UInt8, _ parts: [String]) -> [UInt8] {
            tlv(0x30, tlv(0xA0, tlv(0x02, [type])) + tlv(0xA1, tlv(0x30, parts.flatMap { tlv(0x1B, Array($0.utf8)) })))
        }
        var fields = tlv(0xA0, tlv(0x02, [5])) + tlv(0xA1, tlv(0x02, [30]))
        fields += tlv(0xA4, tlv(0x18, Array("20260101000000Z".utf8))) + tlv(0xA5, tlv(0x02, [0]))
        fields += tlv(0xA6, tlv(0x02, [68]))
        fields += tlv(0xA7, tlv(0x1B, Array(clientRealm.utf8))) + tlv(0xA8, name(1, [client]))
        fields += tlv(0xA9, tlv(0x1B, Array(serverRealm.utf8))) + tlv(0xAA, name(2, ["krbtgt", serverRealm]))
        return tlv(0x7E, tlv(0x30, fields))
    }
}
