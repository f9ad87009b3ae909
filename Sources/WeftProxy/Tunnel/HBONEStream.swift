import NIOCore
import NIOHPACK
import NIOHTTP2

/// Turns one HTTP/2 CONNECT stream into a byte pipe that looks like a TCP
/// connection to the relay (``GlueHandler``): DATA frames in and out as
/// ByteBuffers, END_STREAM as a half-close in each direction.
///
/// Client side: sends the CONNECT and succeeds `established` on a 200.
/// Server side: the stream is handed over after the server answered 200.
final class HBONEStreamHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    enum State {
        /// Client: CONNECT sent, waiting for the response headers.
        case awaitingResponse(EventLoopPromise<Void>)
        case open
    }

    private var state: State
    private let authority: String
    private var connectHeaders: [(String, String)] = []
    private var outputClosed = false
    private var inputClosed = false

    /// Client side.
    init(connect authority: String, headers: [(String, String)] = [], established: EventLoopPromise<Void>) {
        self.authority = authority
        self.connectHeaders = headers
        self.state = .awaitingResponse(established)
    }

    /// Server side, after the 200.
    init(open authority: String) {
        self.authority = authority
        self.state = .open
    }

    func channelActive(context: ChannelHandlerContext) {
        if case .awaitingResponse = state {
            sendConnect(context: context)
        }
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if case .awaitingResponse = state, context.channel.isActive {
            sendConnect(context: context)
        }
    }

    private var connectSent = false

    private func sendConnect(context: ChannelHandlerContext) {
        guard !connectSent else { return }
        connectSent = true
        // RFC 9113 8.5: a CONNECT carries :method and :authority only (no
        // :scheme or :path); ordinary headers may follow (baggage, as Istio sends).
        let headers = HPACKHeaders([(":method", "CONNECT"), (":authority", authority)] + connectHeaders)
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        // The relay reads only once it is in place; the response must be read now.
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        switch state {
        case .awaitingResponse(let promise):
            guard case .headers(let h) = payload else {
                fail(context: context, promise, TunnelError.connectRefused(status: "(no headers)", authority: authority))
                return
            }
            let status = h.headers.first(name: ":status") ?? "(none)"
            guard status == "200", !h.endStream else {
                fail(context: context, promise, TunnelError.connectRefused(status: status, authority: authority))
                return
            }
            state = .open
            promise.succeed(())
        case .open:
            switch payload {
            case .data(let d):
                if case .byteBuffer(let buffer) = d.data, buffer.readableBytes > 0 {
                    context.fireChannelRead(wrapInboundOut(buffer))
                }
                if d.endStream { endInput(context: context) }
            case .headers(let h):
                // Trailers end the stream; nothing in them is for the workload.
                if h.endStream { endInput(context: context) }
            default:
                break
            }
        }
    }

    private func endInput(context: ChannelHandlerContext) {
        guard !inputClosed else { return }
        inputClosed = true
        context.fireChannelReadComplete()
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    }

    private func fail(context: ChannelHandlerContext, _ promise: EventLoopPromise<Void>, _ error: any Error) {
        state = .open
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .awaitingResponse(let promise) = state {
            state = .open
            promise.fail(TunnelError.connectRefused(status: "(stream reset)", authority: authority))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .awaitingResponse(let promise) = state {
            state = .open
            promise.fail(error)
        }
        context.fireErrorCaught(error)
    }

    /// Bytes written since the last flush, sent as one DATA frame when it
    /// comes (``WriteJoiner``): an HTTP/1.1 exchange inside the stream is
    /// written as a head, a body and an empty end, which were three frames
    /// each way for every request (each framed, flow-controlled and parsed
    /// again at the peer). Per stream, so no buffer is kept between flushes.
    private var joiner = WriteJoiner(reusesBuffer: false)

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        if buffer.readableBytes == 0 {
            // Nothing to send (an HTTP encoder's end of a framed message): no empty frame.
            if !joiner.chain(promise) { promise?.succeed(()) }
            return
        }
        let out = joiner.add(buffer, promise: promise, allocator: context.channel.allocator)
        if let first = out.first { sendData(context, first) }
        if let second = out.second { sendData(context, second) }
    }

    private func sendData(_ context: ChannelHandlerContext, _ write: WriteJoiner.Write, endStream: Bool = false) {
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(write.buffer), endStream: endStream))), promise: write.promise)
    }

    private func sendJoined(_ context: ChannelHandlerContext, endStream: Bool = false) {
        if let run = joiner.take() { sendData(context, run, endStream: endStream) }
    }

    func flush(context: ChannelHandlerContext) {
        sendJoined(context)
        context.flush()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        joiner.discard(ChannelError.ioOnClosedChannel)
    }

    /// A half-close becomes END_STREAM: an HTTP/2 stream channel would answer
    /// `close(mode: .output)` with RST_STREAM, losing data still in flight.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .output else {
            sendJoined(context)
            context.close(mode: mode, promise: promise)
            return
        }
        guard !outputClosed else {
            promise?.succeed(())
            return
        }
        outputClosed = true
        if !joiner.isEmpty {
            // The last bytes carry the END_STREAM.
            _ = joiner.chain(promise)
            sendJoined(context, endStream: true)
            context.flush()
            return
        }
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: promise)
    }
}
