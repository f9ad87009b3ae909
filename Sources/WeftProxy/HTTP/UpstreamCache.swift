import NIOCore
import NIOHTTP1
import NIOHTTP2
import WeftCore

/// Which kept upstream a request may use: the endpoint, and for an HBONE
/// stream the identity it was opened with.
struct UpstreamKey: Hashable {
    var address: IPAddress
    var port: UInt16
    var tunnelIdentity: String?
}

/// An upstream connection kept open after a response, for a later request
/// to the same endpoint (HTTP/1.1 keep-alive towards the backend; an HBONE
/// stream carries its requests one after the other).
final class IdleUpstream {
    let channel: any Channel
    let relay: UpstreamResponseRelay
    /// Requests it has carried; updated when it is kept again.
    var uses: Int
    init(channel: any Channel, relay: UpstreamResponseRelay, uses: Int) {
        self.channel = channel
        self.relay = relay
        self.uses = uses
    }
}

/// An HTTP/2 connection to a workload that declares its port `http2` or
/// `grpc`: each request is a stream of it, as many at once as the backend
/// allows.
final class H2Upstream {
    let channel: any Channel
    let multiplexer: NIOHTTP2Handler.StreamMultiplexer

    init(channel: any Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer) {
        self.channel = channel
        self.multiplexer = multiplexer
    }

    /// A new stream that speaks HTTP/1-style parts (NIO's codec turns them
    /// into HEADERS and DATA frames, trailers included).
    func openStream() -> EventLoopFuture<any Channel> {
        let promise = channel.eventLoop.makePromise(of: (any Channel).self)
        multiplexer.createStreamChannel(promise: promise) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
            }
        }
        return promise.futureResult
    }

    /// Makes `channel` (connected to the backend) an HTTP/2 client connection.
    static func configure(_ channel: any Channel) throws -> H2Upstream {
        let mux = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client, connectionConfiguration: .init(), streamConfiguration: .init(), inboundStreamInitializer: { $0.close() })
        // The connection reads on its own: responses arrive on its streams.
        channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
        return H2Upstream(channel: channel, multiplexer: mux)
    }
}

/// The upstreams one client connection's requests may reuse: its own for an
/// HTTP/1.1 client; shared by all the streams of an HTTP/2 client's
/// connection (each stream has its own router). All on one event loop.
final class UpstreamCache {
    /// By endpoint, at most `maxEndpoints` of them: a short list compared
    /// key by key costs less than hashing a key (an identity URI) per request.
    private var idle: [(key: UpstreamKey, kept: [IdleUpstream])] = []
    private var h2: [UpstreamKey: EventLoopFuture<H2Upstream>] = [:]
    /// Endpoints kept for, and connections kept per endpoint: a client
    /// rarely talks to more than a few endpoints; an HTTP/2 client's
    /// concurrent streams each need their own HTTP/1.1 upstream.
    let maxEndpoints: Int
    let maxPerEndpoint: Int

    init(maxEndpoints: Int = 4, maxPerEndpoint: Int = 1) {
        self.maxEndpoints = maxEndpoints
        self.maxPerEndpoint = maxPerEndpoint
    }

    /// An endpoint's entry stays when its list empties (a request took the
    /// connection; its response puts it back): the list keeps its storage
    /// instead of being freed and made again per request. An empty entry is
    /// given to another endpoint when one needs room.
    func take(_ key: UpstreamKey) -> IdleUpstream? {
        guard let i = idle.firstIndex(where: { $0.key == key }) else { return nil }
        // Mutated in place (a copy of the list would be made on every request otherwise).
        while let kept = idle[i].kept.popLast() {
            if kept.channel.isActive { return kept }
        }
        return nil
    }

    /// Keeps `kept` unless the cache is full. While idle, anything from the
    /// backend ends the connection; its closing takes it out of the cache.
    func park(_ kept: IdleUpstream, key: UpstreamKey) -> Bool {
        if let i = idle.firstIndex(where: { $0.key == key }) {
            if idle[i].kept.count >= maxPerEndpoint {
                Self.endGently(idle[i].kept.removeFirst().channel)
            }
            idle[i].kept.append(kept)
        } else if let i = idle.firstIndex(where: { $0.kept.isEmpty }) {
            idle[i].key = key
            idle[i].kept.append(kept)
        } else {
            guard idle.count < maxEndpoints else { return false }
            idle.append((key, [kept]))
        }
        kept.relay.binding = .idle(self, key, kept)
        return true
    }

    /// A kept connection closed: it is no longer offered.
    func forget(_ kept: IdleUpstream, key: UpstreamKey) {
        guard let i = idle.firstIndex(where: { $0.key == key }) else { return }
        idle[i].kept.removeAll { $0 === kept }
    }

    /// The HTTP/2 connection to an endpoint, opened by `connect` when there
    /// is none (or the last one closed).
    func h2Connection(_ key: UpstreamKey, on loop: any EventLoop,
                      connect: () -> EventLoopFuture<any Channel>) -> EventLoopFuture<H2Upstream> {
        if let existing = h2[key] { return existing }
        let made = connect().flatMapThrowing { try H2Upstream.configure($0) }
        h2[key] = made
        let bound = NIOLoopBound(self, eventLoop: loop)
        made.whenComplete { result in
            switch result {
            case .success(let upstream):
                upstream.channel.closeFuture.whenComplete { _ in
                    let cache = bound.value
                    if cache.h2[key] === made { cache.h2[key] = nil }
                }
            case .failure:
                let cache = bound.value
                if cache.h2[key] === made { cache.h2[key] = nil }
            }
        }
        return made
    }

    /// Ends everything kept (the client connection is gone).
    func closeAll() {
        let all = idle.flatMap(\.kept)
        idle = []
        for kept in all { Self.endGently(kept.channel) }
        let connections = h2.values
        h2 = [:]
        for c in connections { c.whenSuccess { $0.channel.close(promise: nil) } }
    }

    /// Ends an upstream we are done with the way a finished exchange does:
    /// our side first (FIN, or END_STREAM on an HBONE stream), the rest when
    /// the peer ends its own or after 5 s. Closing outright would reset an
    /// HBONE stream, and a peer counts resets (HTTP/2 rapid-reset protection).
    static func endGently(_ channel: any Channel) {
        channel.close(mode: .output, promise: nil)
        channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
    }
}
