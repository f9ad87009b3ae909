import NIOCore

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
                context.close(promise: nil)
                partner?.partnerClose()
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
