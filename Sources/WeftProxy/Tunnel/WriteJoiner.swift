import NIOCore

/// Small writes held until a flush and sent as one buffer: what
/// ``FlushCoalescer`` does for a TLS connection (one record per tick) and
/// ``HBONEStreamHandler`` for a stream (one DATA frame per flush).
///
/// A lone write is held as it is, uncopied. With the second one of a run, a
/// connection-level joiner (`reusesBuffer`) starts a buffer of its own, which
/// it keeps for its next run; a stream's joiner appends to the first write's
/// buffer instead (no buffer per stream is kept, and none is made when the
/// first has room). A write that would take the run past `limit` ends it; one
/// that large alone goes on as it is. The caller writes what `add` and `take`
/// hand back, in order: nothing here calls out, so a write that fails at once
/// cannot re-enter it.
struct WriteJoiner {
    /// TLS's largest record, and HTTP/2's default largest frame.
    static let limit = 16 * 1024

    typealias Write = (buffer: ByteBuffer, promise: EventLoopPromise<Void>?)

    private let reusesBuffer: Bool
    private var pending: ByteBuffer?
    private var promise: EventLoopPromise<Void>?
    /// `pending` holds a run of two writes or more and is appended to (the
    /// joiner's own buffer, or for a stream the first write's); else it is a
    /// lone write, held as it came.
    private var pendingIsOwn = false
    private var spare: ByteBuffer?

    init(reusesBuffer: Bool) {
        self.reusesBuffer = reusesBuffer
    }

    var isEmpty: Bool { pending == nil }

    /// Adds a write to the run. Returned, to be written now and in this
    /// order: the run so far when `buffer` does not fit with it, and
    /// `buffer` itself when it is too large to join.
    mutating func add(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?,
                      allocator: ByteBufferAllocator) -> (first: Write?, second: Write?) {
        var incoming = buffer
        var ended: Write?
        if var joined = pending {
            if joined.readableBytes + incoming.readableBytes <= Self.limit {
                if !pendingIsOwn {
                    if reusesBuffer {
                        var own = ownBuffer(allocator)
                        own.writeBuffer(&joined)
                        joined = own
                    }
                    // Else the first write's buffer takes the rest: an encoder's buffer
                    // usually has room for a small body. Still a value: if its writer
                    // kept a reference, appending copies it first, as ever.
                    pendingIsOwn = true
                }
                pending = nil   // so that `joined` is the buffer's only holder while it grows
                joined.writeBuffer(&incoming)
                pending = joined
                _ = chain(promise)
                return (nil, nil)
            }
            ended = take()
        }
        guard incoming.readableBytes < Self.limit else { return (ended, (incoming, promise)) }
        pending = incoming
        pendingIsOwn = false
        self.promise = promise
        return (ended, nil)
    }

    /// Ties `promise` to the run's; false when there is no run.
    mutating func chain(_ promise: EventLoopPromise<Void>?) -> Bool {
        guard pending != nil else { return false }
        guard let promise else { return true }
        if let held = self.promise {
            held.futureResult.cascade(to: promise)
        } else {
            self.promise = promise
        }
        return true
    }

    /// The run, to be written now (nil: none).
    mutating func take() -> Write? {
        guard let joined = pending else { return nil }
        pending = nil
        let held = promise
        promise = nil
        // Sealed or framed by the time it is reused: then it is ours alone again
        // (if not, the next write to it copies it first, as every ByteBuffer does).
        if pendingIsOwn, reusesBuffer { spare = joined }
        return (joined, held)
    }

    /// The channel is gone: the run is dropped and its promise failed.
    mutating func discard(_ error: any Error) {
        pending = nil
        spare = nil
        let held = promise
        promise = nil
        held?.fail(error)
    }

    /// The connection-level joiner's buffer: last run's, or a new one of `limit` bytes.
    private mutating func ownBuffer(_ allocator: ByteBufferAllocator) -> ByteBuffer {
        if var reused = spare {
            spare = nil
            reused.clear()
            return reused
        }
        return allocator.buffer(capacity: Self.limit)
    }
}
