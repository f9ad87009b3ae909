import NIOCore
import NIOHTTP2

/// Joins two channels on one event loop and relays bytes both ways:
/// - backpressure: a side reads only while its partner is writable;
/// - half-close: EOF on one side shuts down the partner's write side, and
///   the pair closes once both directions have ended;
/// - any error or close on one side closes the other.
/// (The shape of SwiftNIO's connect-proxy example, with half-close added.)
final class GlueHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputEnded = false
    private let onBytes: (@Sendable (Int) -> Void)?

    private init(onBytes: (@Sendable (Int) -> Void)?) {
        self.onBytes = onBytes
    }

    /// `first` is installed on the downstream (workload) side, `second` on the upstream.
    static func matchedPair(downstreamBytes: (@Sendable (Int) -> Void)? = nil,
                            upstreamBytes: (@Sendable (Int) -> Void)? = nil) -> (GlueHandler, GlueHandler) {
        let a = GlueHandler(onBytes: downstreamBytes), b = GlueHandler(onBytes: upstreamBytes)
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let onBytes { onBytes(unwrapInboundIn(data).readableBytes) }
        partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.partnerClose()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputEnded = true
            partner?.partnerShutdownOutput()
            if partner?.inputEnded ?? true {
                // Both directions ended cleanly: each side finishes as its
                // transport does. An HTTP/2 stream closes by itself once both
                // END_STREAMs are out; closing it outright could overtake its
                // own END_STREAM and reset it, and peers count resets (NIO's
                // rapid-reset guard drops a connection after 200 in 30 s).
                Self.finish(context)
                partner?.partnerFinish()
            }
            return
        }
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            partner?.partnerClose()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
        partner?.partnerClose()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    // MARK: outbound

    func read(context: ChannelHandlerContext) {
        if partner?.partnerWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }

    // MARK: partner calls (same event loop)

    private func partnerWrite(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerShutdownOutput() {
        guard let context else { return }
        context.flush()
        context.close(mode: .output, promise: nil)
    }

    private func partnerClose() {
        context?.close(promise: nil)
    }

    private func partnerFinish() {
        if let context { Self.finish(context) }
    }

    /// Closes a socket now; leaves a stream to close itself, with a deadline.
    private static func finish(_ context: ChannelHandlerContext) {
        let channel = context.channel
        let isStream = (try? channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)) != nil
        if isStream {
            channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
        } else {
            context.close(promise: nil)
        }
    }

    private var partnerWritable: Bool {
        context?.channel.isWritable ?? false
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }
}
