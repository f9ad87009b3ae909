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
    private let activity: RelayActivity?

    private init(onBytes: (@Sendable (Int) -> Void)?, activity: RelayActivity?) {
        self.onBytes = onBytes
        self.activity = activity
    }

    /// `first` is installed on the downstream (workload) side, `second` on the upstream.
    /// `activity`: counts the bytes read on either side, for an idle timeout.
    static func matchedPair(downstreamBytes: (@Sendable (Int) -> Void)? = nil,
                            upstreamBytes: (@Sendable (Int) -> Void)? = nil,
                            activity: RelayActivity? = nil) -> (GlueHandler, GlueHandler) {
        let a = GlueHandler(onBytes: downstreamBytes, activity: activity)
        let b = GlueHandler(onBytes: upstreamBytes, activity: activity)
        a.partner = b
        b.partner = a
        return (a, b)
    }

    /// The relay was idle too long: both sides close.
    func idleTimedOut() {
        context?.close(promise: nil)
        partner?.partnerClose()
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
        activity?.reads &+= 1
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

/// A relay's idle timeout (Envoy's tcp_proxy `idle_timeout`: no byte either
/// way for that long closes both sides). Reads are counted and the count
/// looked at four times per timeout, so a relay closes between 1 and 1.25
/// timeouts after its last byte. NIO's IdleStateHandler does the same by
/// making a promise for every write, which showed in the tunnel's profile.
final class RelayActivity {
    fileprivate(set) var reads = 0
    private var seen = 0
    private var quietChecks = 0
    private var task: RepeatedTask?
    static let checksPerTimeout = 4

    init() {}

    /// Checks until `stop`; `expired` runs once the relay was quiet for `timeout`.
    func start(on loop: any EventLoop, timeout: TimeAmount, expired: @escaping () -> Void) {
        let every = TimeAmount.nanoseconds(max(timeout.nanoseconds / Int64(Self.checksPerTimeout), 1_000_000))
        let bound = NIOLoopBound((self, expired), eventLoop: loop)
        task = loop.scheduleRepeatedTask(initialDelay: every, delay: every) { _ in
            let (activity, expired) = bound.value
            if activity.reads != activity.seen {
                activity.seen = activity.reads
                activity.quietChecks = 0
                return
            }
            activity.quietChecks += 1
            if activity.quietChecks >= Self.checksPerTimeout {
                activity.stop()
                expired()
            }
        }
    }

    func stop() {
        task?.cancel()
        task = nil
    }
}
