public import NIOCore

/// The one handler of the tests' fake servers over UDP (KDCs, DNS, proxies): runs `onRead` with each datagram.
/// A handler lives on its channel's loop, hence `@unchecked Sendable`.
public final class DatagramReader: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let onRead: (ChannelHandlerContext, AddressedEnvelope<ByteBuffer>) -> Void

    public init(_ onRead: @escaping (_ context: ChannelHandlerContext, _ datagram: AddressedEnvelope<ByteBuffer>) -> Void) {
        self.onRead = onRead
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        onRead(context, unwrapInboundIn(data))
    }

    /// Sends `bytes` to the sender of `datagram`.
    public static func reply(_ bytes: [UInt8], to datagram: AddressedEnvelope<ByteBuffer>, on context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(AddressedEnvelope(remoteAddress: datagram.remoteAddress, data: ByteBuffer(bytes: bytes))), promise: nil)
    }
}

/// The same over TCP, after a length-prefix decoder (`KDCFrameDecoder`): runs `onRead` with each frame's bytes and
/// writes back what it returns (nil: nothing) with a big-endian length of `lengthPrefix` bytes (4 or 2).
public final class FrameReader: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = ByteBuffer
    private let lengthPrefix: Int
    private let onRead: ([UInt8]) -> [UInt8]?

    public init(lengthPrefix: Int, _ onRead: @escaping (_ frame: [UInt8]) -> [UInt8]?) {
        self.lengthPrefix = lengthPrefix
        self.onRead = onRead
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let reply = onRead(Array(unwrapInboundIn(data).readableBytesView)) else { return }
        var buffer = context.channel.allocator.buffer(capacity: reply.count + lengthPrefix)
        if lengthPrefix == 2 { buffer.writeInteger(UInt16(reply.count)) } else { buffer.writeInteger(UInt32(reply.count)) }
        buffer.writeBytes(reply)
        context.writeAndFlush(NIOAny(buffer), promise: nil)
    }
}
