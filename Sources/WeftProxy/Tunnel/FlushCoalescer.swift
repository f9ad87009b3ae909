import NIOCore

/// One flush of a connection per event-loop tick, and on a TLS connection
/// one TLS record per flush.
///
/// Every HBONE stream that writes flushes the shared connection. When one
/// wake-up of the loop reads requests from 50 clients (or responses from
/// 50 workloads), that was 50 flushes and 50 `write` calls; deferring the
/// flush to the end of the tick (NIO runs tasks after the I/O events of a
/// wake-up) sends them as one. Nothing waits longer than the tick.
///
/// With `joinWrites` (placed next to the TLS handler), the small writes of a
/// tick are also joined into one buffer: NIOSSL seals one record per write,
/// and an HTTP/2 frame is two writes (its header and its payload), so 50
/// streams' frames were 100 records, each with its own 22 bytes of framing,
/// seal and, at the peer, open. Joined, they are one record of up to 16 KiB
/// (the largest TLS allows). A write that large goes on as it is, uncopied.
final class FlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// TLS's largest record payload.
    static let joinLimit = 16 * 1024

    private let joinWrites: Bool
    private var scheduled = false
    private var removed = false
    /// Joined writes not passed on yet, and the promise that completes with them.
    private var pending: ByteBuffer?
    private var pendingPromise: EventLoopPromise<Void>?
    /// Whether `pending` is our own buffer (to append to), or still a writer's (to copy first).
    private var pendingIsOwn = false
    /// Kept between ticks: once TLS has sealed its bytes it is ours alone again.
    private var scratch: ByteBuffer?

    init(joinWrites: Bool = false) {
        self.joinWrites = joinWrites
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard joinWrites, case .byteBuffer(var incoming) = unwrapOutboundIn(data) else {
            passPending(context: context)
            return context.write(data, promise: promise)
        }
        if var joined = pending {
            guard joined.readableBytes + incoming.readableBytes <= Self.joinLimit else {
                passPending(context: context)
                return hold(incoming, promise: promise, context: context)
            }
            pending = nil
            if !pendingIsOwn {
                // The first write is still the writer's buffer: start our own with it.
                var own = takeScratch(context: context)
                own.writeBuffer(&joined)
                joined = own
                pendingIsOwn = true
            }
            joined.writeBuffer(&incoming)
            pending = joined
            join(promise)
        } else {
            hold(incoming, promise: promise, context: context)
        }
    }

    /// The first write of a run (or one too large to join, passed on).
    private func hold(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard buffer.readableBytes < Self.joinLimit else {
            return context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
        }
        pending = buffer
        pendingIsOwn = false
        pendingPromise = promise
    }

    private func join(_ promise: EventLoopPromise<Void>?) {
        guard let promise else { return }
        if let held = pendingPromise {
            held.futureResult.cascade(to: promise)
        } else {
            pendingPromise = promise
        }
    }

    private func takeScratch(context: ChannelHandlerContext) -> ByteBuffer {
        if var reused = scratch {
            scratch = nil
            reused.clear()
            return reused
        }
        return context.channel.allocator.buffer(capacity: Self.joinLimit)
    }

    private func passPending(context: ChannelHandlerContext) {
        guard let joined = pending else { return }
        pending = nil
        let promise = pendingPromise
        pendingPromise = nil
        if pendingIsOwn { scratch = joined }
        context.write(wrapOutboundOut(.byteBuffer(joined)), promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        guard !scheduled else { return }
        scheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (coalescer, context) = bound.value
            coalescer.scheduled = false
            if !coalescer.removed {
                coalescer.passPending(context: context)
                context.flush()
            }
        }
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // What was written before a close goes out before it (a GOAWAY, a final frame).
        passPending(context: context)
        if scheduled { context.flush() }
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
        passPending(context: context)
        if scheduled { context.flush() }
    }
}
