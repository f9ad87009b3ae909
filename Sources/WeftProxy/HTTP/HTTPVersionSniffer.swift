import NIOCore
import NIOHTTP1
import NIOHTTP2

/// First handler on a connection routed at L7: its first bytes say which
/// HTTP it speaks. The HTTP/2 connection preface (prior knowledge, as gRPC
/// clients send it in plaintext) gets an HTTP/2 server, each stream routed
/// on its own; anything else is read as HTTP/1.1 (and refused by its parser
/// if it is not). Nothing is forwarded before the choice is made.
final class HTTPVersionSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    enum Version { case http1, http2 }

    private var buffered: ByteBuffer?
    private let configure: (ChannelHandlerContext, Version) throws -> Void

    /// `configure` adds the chosen protocol's handlers at the end of the
    /// pipeline (after this one); the bytes read so far then go to them.
    init(configure: @escaping (ChannelHandlerContext, Version) throws -> Void) {
        self.configure = configure
    }

    static func version(of bytes: ByteBufferView) -> Version? {
        let n = min(bytes.count, preface.count)
        guard bytes.prefix(n).elementsEqual(preface.prefix(n)) else { return .http1 }
        return n == preface.count ? .http2 : nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        guard let bytes = buffered, let version = Self.version(of: bytes.readableBytesView) else { return }
        buffered = nil
        do {
            try configure(context, version)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        buffered = nil
        context.fireChannelInactive()
    }
}

extension HTTPVersionSniffer {
    typealias InboundOut = ByteBuffer
}
