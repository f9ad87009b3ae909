import NIOCore

/// One flush of a tunnel's connection per event-loop tick.
///
/// Every HBONE stream that writes flushes the shared connection. When one
/// wake-up of the loop reads requests from 50 clients (or responses from
/// 50 workloads), that was 50 TLS records and 50 `write` calls; deferring
/// the flush to the end of the tick (NIO runs tasks after the I/O events of
/// a wake-up) sends them as one. Nothing waits longer than the tick.
final class FlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = NIOAny

    private var scheduled = false
    private var removed = false

    func flush(context: ChannelHandlerContext) {
        guard !scheduled else { return }
        scheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (coalescer, context) = bound.value
            coalescer.scheduled = false
            if !coalescer.removed { context.flush() }
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // What was written before a close goes out before it (a GOAWAY, a final frame).
        if scheduled { context.flush() }
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        if scheduled { context.flush() }
    }
}
