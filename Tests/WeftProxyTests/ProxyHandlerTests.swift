import NIOCore
import CWeftShim
import Glibc
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Testing
import WeftCore
@testable import WeftProxy

@Suite("Proxy channel handlers: flush and write coalescing, forwarded headers")
struct ProxyHandlerTests {
    static func bytes(_ s: String, _ channel: EmbeddedChannel) -> ByteBuffer {
        channel.allocator.buffer(string: s)
    }

    static func outbound(_ channel: EmbeddedChannel) throws -> [String] {
        var out: [String] = []
        while let b = try channel.readOutbound(as: ByteBuffer.self) { out.append(String(buffer: b)) }
        return out
    }

    @Test func aTicksSmallWritesLeaveAsOneBufferAtTheEndOfTheTickWithEveryPromiseKept() throws {
        let channel = EmbeddedChannel(handler: FlushCoalescer(joinWrites: true))
        defer { _ = try? channel.finish() }
        var done: [EventLoopFuture<Void>] = []
        for part in ["HEADERS", "DATA-1", "HEADERS", "DATA-2"] {
            let p = channel.eventLoop.makePromise(of: Void.self)
            channel.write(Self.bytes(part, channel), promise: p)
            done.append(p.futureResult)
        }
        channel.flush()
        // Deferred to the end of the tick: nothing has gone yet.
        #expect(try Self.outbound(channel).isEmpty)
        channel.embeddedEventLoop.run()
        #expect(try Self.outbound(channel) == ["HEADERSDATA-1HEADERSDATA-2"])
        for f in done { try f.wait() }

        // The next tick's writes join in the kept buffer, not in what was sent.
        channel.write(Self.bytes("x", channel), promise: nil)
        channel.write(Self.bytes("y", channel), promise: nil)
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(try Self.outbound(channel) == ["xy"])
    }

    @Test func aWriteTooLargeToJoinGoesUncopiedAfterTheJoinedOnesInOrder() throws {
        let channel = EmbeddedChannel(handler: FlushCoalescer(joinWrites: true))
        defer { _ = try? channel.finish() }
        let large = String(repeating: "L", count: WriteJoiner.limit)
        channel.write(Self.bytes("a", channel), promise: nil)
        channel.write(Self.bytes("b", channel), promise: nil)
        channel.write(Self.bytes(large, channel), promise: nil)
        channel.write(Self.bytes("c", channel), promise: nil)
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(try Self.outbound(channel) == ["ab", large, "c"])

        // Joined up to the limit, and no further.
        let half = String(repeating: "h", count: WriteJoiner.limit / 2)
        for _ in 0..<3 { channel.write(Self.bytes(half, channel), promise: nil) }
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(try Self.outbound(channel) == [half + half, half])
    }

    @Test func withoutJoiningEachWriteStaysItsOwnButTheFlushStillWaitsForTheTick() throws {
        let channel = EmbeddedChannel(handler: FlushCoalescer())
        defer { _ = try? channel.finish() }
        channel.write(Self.bytes("a", channel), promise: nil)
        channel.write(Self.bytes("b", channel), promise: nil)
        channel.flush()
        channel.flush()
        #expect(try Self.outbound(channel).isEmpty)
        channel.embeddedEventLoop.run()
        #expect(try Self.outbound(channel) == ["a", "b"])
    }

    @Test func whatWasJoinedGoesOutBeforeTheConnectionsOutputCloses() throws {
        let channel = EmbeddedChannel(handler: FlushCoalescer(joinWrites: true))
        channel.write(Self.bytes("last", channel), promise: nil)
        channel.write(Self.bytes("-frame", channel), promise: nil)
        channel.flush()
        try channel.close().wait()
        #expect(try Self.outbound(channel) == ["last-frame"])
    }

    @Test func aRelayClosesBothSidesAfterItsIdleTimeoutWithoutABytesAndNotBefore() throws {
        let loop = EmbeddedEventLoop()
        let activity = RelayActivity()
        let (down, up) = GlueHandler.matchedPair(activity: activity)
        let downstream = EmbeddedChannel(handler: down, loop: loop)
        let upstream = EmbeddedChannel(handler: up, loop: loop)
        defer {
            _ = try? downstream.finish()
            _ = try? upstream.finish()
        }
        try downstream.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try upstream.connect(to: .init(ipAddress: "127.0.0.1", port: 2)).wait()
        activity.start(on: loop, timeout: .seconds(4)) { down.idleTimedOut() }
        // Bytes every 3 s, either way, for 30 s: the relay stays.
        for i in 0..<10 {
            loop.advanceTime(by: .seconds(3))
            try (i % 2 == 0 ? downstream : upstream).writeInbound(downstream.allocator.buffer(string: "x"))
            #expect(downstream.isActive && upstream.isActive, "closed at \(3 * (i + 1)) s")
        }
        // Then nothing: still open just under the timeout, closed within a quarter of it after.
        loop.advanceTime(by: .milliseconds(3_900))
        #expect(downstream.isActive && upstream.isActive)
        loop.advanceTime(by: .milliseconds(1_100))
        #expect(!downstream.isActive && !upstream.isActive)
    }

    @Test func hopByHopHeadersAreDroppedAndEverythingElseKeptInOrder() {
        let cases: [([(String, String)], [String])] = [
            // Nothing hop-by-hop: the same headers.
            ([("Host", "a"), ("X-A", "1")], ["Host", "X-A"]),
            // The usual one or two, in any case.
            ([("Host", "a"), ("Connection", "keep-alive"), ("X-A", "1")], ["Host", "X-A"]),
            ([("Transfer-Encoding", "chunked"), ("Host", "a"), ("KEEP-ALIVE", "5"), ("X-A", "1")], ["Host", "X-A"]),
            ([("connection", "Close"), ("te", "trailers")], []),
            // A Connection header naming another one.
            ([("Host", "a"), ("Connection", "keep-alive, X-Secret"), ("x-secret", "s"), ("X-A", "1")], ["Host", "X-A"]),
            // Three distinct, or one repeated.
            ([("Upgrade", "h2c"), ("TE", "trailers"), ("Proxy-Authorization", "x"), ("X-A", "1")], ["X-A"]),
            ([("Keep-Alive", "1"), ("X-A", "1"), ("keep-alive", "2")], ["X-A"]),
        ]
        for (given, kept) in cases {
            let out = HTTPRouter.forwardable(HTTPHeaders(given))
            #expect(out.map(\.name) == kept, "\(given)")
        }
    }

    @Test func aStreamsJoinerAppendsToTheFirstWritesBufferWhichItsWriterStillSeesUnchanged() throws {
        let allocator = ByteBufferAllocator()
        var joiner = WriteJoiner(reusesBuffer: false)
        var head = allocator.buffer(capacity: 256)
        head.writeString("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        let writersView = head
        let first = joiner.add(head, promise: nil, allocator: allocator)
        #expect(first.first == nil && first.second == nil)
        let second = joiner.add(allocator.buffer(string: "ok"), promise: nil, allocator: allocator)
        #expect(second.first == nil && second.second == nil)
        let taken = joiner.take()
        let run = try #require(taken)
        #expect(String(buffer: run.buffer) == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        // A value still: the writer's copy of its buffer did not grow.
        #expect(String(buffer: writersView) == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        let again = joiner.take()
        #expect(again == nil)
    }

    @Test func aCoalescerFlushesOncePerTickForAsLongAsItIsInThePipelineAndNotAfter() throws {
        let coalescer = FlushCoalescer()
        let channel = EmbeddedChannel(handler: coalescer)
        defer { _ = try? channel.finish() }
        for tick in 0..<3 {
            channel.write(Self.bytes("t\(tick)", channel), promise: nil)
            channel.flush()
            channel.flush()
            #expect(try Self.outbound(channel).isEmpty)
            channel.embeddedEventLoop.run()
            #expect(try Self.outbound(channel) == ["t\(tick)"])
        }
        // Removed with a flush pending: what it held goes out at once, and the queued task finds it gone.
        channel.write(Self.bytes("last", channel), promise: nil)
        channel.flush()
        try channel.pipeline.syncOperations.removeHandler(coalescer).wait()
        #expect(try Self.outbound(channel) == ["last"])
        channel.embeddedEventLoop.run()
        #expect(try Self.outbound(channel).isEmpty)
    }

    @Test func anUpstreamCacheOffersOnlyLiveConnectionsAndGivesAnEmptiedEndpointsPlaceToAnother() throws {
        let cache = UpstreamCache(maxEndpoints: 1, maxPerEndpoint: 1)
        func kept(active: Bool) throws -> IdleUpstream {
            let channel = EmbeddedChannel()
            if active { try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait() }
            return IdleUpstream(channel: channel, relay: UpstreamResponseRelay(), uses: 1)
        }
        let one = UpstreamKey(address: try #require(IPAddress("198.18.0.1")), port: 80, tunnelIdentity: nil)
        let two = UpstreamKey(address: try #require(IPAddress("198.18.0.2")), port: 80, tunnelIdentity: nil)
        let a = try kept(active: true)
        #expect(cache.park(a, key: one))
        #expect(cache.take(one) === a)
        #expect(cache.take(one) == nil)
        // The endpoint's list is empty: another endpoint takes its place.
        let b = try kept(active: true)
        #expect(cache.park(b, key: two))
        #expect(cache.take(one) == nil)
        // Full (one endpoint, and it holds b): a third endpoint is not kept.
        let three = UpstreamKey(address: try #require(IPAddress("198.18.0.3")), port: 80, tunnelIdentity: nil)
        #expect(!cache.park(try kept(active: true), key: three))
        #expect(cache.take(two) === b)
        // A closed connection is never offered; a forgotten one neither.
        #expect(cache.park(try kept(active: false), key: two))
        #expect(cache.take(two) == nil)
        let c = try kept(active: true)
        #expect(cache.park(c, key: two))
        cache.forget(c, key: two)
        #expect(cache.take(two) == nil)
    }

    /// The flushes that reached the recorders, in order (one event loop).
    final class FlushLog { var names: [String] = [] }

    /// Notes each flush that reaches it, by channel name.
    final class FlushRecorder: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        let name: String
        let log: FlushLog
        init(_ name: String, _ log: FlushLog) { self.name = name; self.log = log }
        func flush(context: ChannelHandlerContext) {
            log.names.append(name)
            context.flush()
        }
    }

    @Test func aLastCoalescerFlushesAfterTheTicksOtherDeferredFlushes() throws {
        let loop = EmbeddedEventLoop()
        let log = FlushLog()
        let toWorkload = EmbeddedChannel(handlers: [FlushRecorder("workload", log), FlushCoalescer(last: true)], loop: loop)
        let toClient = EmbeddedChannel(handlers: [FlushRecorder("client", log), FlushCoalescer()], loop: loop)
        defer {
            _ = try? toWorkload.finish()
            _ = try? toClient.finish()
        }
        toWorkload.write(Self.bytes("request", toWorkload), promise: nil as EventLoopPromise<Void>?)
        toWorkload.flush()
        toClient.write(Self.bytes("response", toClient), promise: nil as EventLoopPromise<Void>?)
        toClient.flush()
        #expect(log.names.isEmpty)
        loop.run()
        #expect(log.names == ["client", "workload"])
        #expect(try Self.outbound(toWorkload) == ["request"])
        #expect(try Self.outbound(toClient) == ["response"])
    }
}

@Suite("Event loops at the process's priority")
struct EventLoopPriorityTests {
    @Test func eventLoopsTakeTheProcesssNiceValueNotTheirMakersThread() throws {
        let main = weft_process_nice()
        try #require(main != -100)
        // The process (its main thread) three levels lower, as `nice -n 3` would start it;
        // this test's thread, which makes the loops, stays where it is.
        let wanted = min(19, main + 3)
        try #require(setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(getpid()), wanted) == 0)
        defer { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(getpid()), main) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        EventLoopPriority.matchProcess(group)
        for loop in group.makeIterator() {
            #expect(try loop.submit { weft_thread_nice() }.wait() == wanted)
        }
        #expect(weft_thread_nice() != wanted || main + 3 > 19, "the maker's thread is not what set them")
    }
}
