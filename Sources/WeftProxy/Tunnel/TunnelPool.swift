import Foundation
import Logging
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// Outbound HBONE tunnels: one mutual-TLS HTTP/2 connection per (source
/// identity, destination identity, destination node address) on each event
/// loop of the proxy, carrying one CONNECT stream per workload connection.
///
/// The key holds the destination identity because the destination node
/// presents that workload's certificate (chosen by server name), which this
/// side checks against what the control plane says lives at the address. It
/// holds the source credential's generation so that after a renewal new
/// connections open a tunnel with the new certificate while streams already
/// open finish on the old one.
final class TunnelPool: Sendable {
    struct Key: Hashable, Sendable {
        var source: String
        var generation: Int
        var destination: String
        var tunnel: SocketAddress
        var loop: ObjectIdentifier
    }

    struct Tunnel: Sendable {
        let channel: any Channel
        let multiplexer: NIOHTTP2Handler.StreamMultiplexer
        let lifecycle: NIOLoopBound<TunnelLifecycle>
    }

    private let tunnels = Mutex<[Key: EventLoopFuture<Tunnel>]>([:])
    private let credentials: TunnelCredentials
    private let mark: UInt32
    private let connectTimeout: TimeAmount
    private let stats: ProxyStats
    private let logger: Logger

    init(credentials: TunnelCredentials, mark: UInt32, connectTimeout: TimeAmount, stats: ProxyStats, logger: Logger) {
        self.credentials = credentials
        self.mark = mark
        self.connectTimeout = connectTimeout
        self.stats = stats
        self.logger = logger
    }

    var openTunnels: Int { tunnels.withLock { $0.count } }

    /// A CONNECT stream to `authority` through the destination node at
    /// `tunnel`, on `loop`, ready for bytes.
    func openStream(source: TunnelCredential, destination: String, serverName: String, tunnel: SocketAddress,
                    authority: String, headers: [(String, String)] = [], on loop: any EventLoop) -> EventLoopFuture<any Channel> {
        let key = Key(source: source.identity, generation: source.generation, destination: destination,
                      tunnel: tunnel, loop: ObjectIdentifier(loop))
        var created = false
        let connection = tunnels.withLock { t -> EventLoopFuture<Tunnel> in
            if let existing = t[key] { return existing }
            created = true
            let made = connect(source: source, destination: destination, serverName: serverName, tunnel: tunnel, on: loop)
            t[key] = made
            // Dropped from the pool when it fails or closes; the next
            // connection to that node opens a fresh one.
            made.whenComplete { [self] result in
                switch result {
                case .success(let tunnelValue):
                    tunnelValue.channel.closeFuture.whenComplete { _ in self.evict(key, made) }
                case .failure:
                    self.evict(key, made)
                }
            }
            return made
        }
        // A new tunnel may replace one of an older certificate generation:
        // that one takes no new streams and closes once its streams end.
        // (Only then: the common case, an existing tunnel, scans nothing.)
        if created { retireOlder(than: key) }
        return connection.flatMap { tunnelValue in
            let established = loop.makePromise(of: Void.self)
            let stream = tunnelValue.multiplexer.createStreamChannel { stream in
                // The relay decides when to read (backpressure); until then
                // only the CONNECT's response is read.
                stream.setOption(.autoRead, value: false).flatMapThrowing {
                    try stream.pipeline.syncOperations.addHandler(
                        HBONEStreamHandler(connect: authority, headers: headers, established: established))
                }
            }
            stream.whenFailure { established.fail($0) }
            return stream.flatMap { channel in
                self.stats.outboundStreams.add(1, ordering: .relaxed)
                // Stream channels live on their connection's event loop.
                tunnelValue.lifecycle.value.streamOpened()
                channel.closeFuture.whenComplete { _ in tunnelValue.lifecycle.value.streamClosed() }
                return established.futureResult.map { channel }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
        }
    }

    private func evict(_ key: Key, _ future: EventLoopFuture<Tunnel>) {
        tunnels.withLock { t in
            if let current = t[key], current === future { t[key] = nil }
        }
    }

    private func retireOlder(than key: Key) {
        let old = tunnels.withLock { t -> [EventLoopFuture<Tunnel>] in
            let stale = t.filter { k, _ in
                k.source == key.source && k.generation < key.generation && k.destination == key.destination
                    && k.tunnel == key.tunnel && k.loop == key.loop
            }
            for k in stale.keys { t[k] = nil }
            return Array(stale.values)
        }
        for f in old {
            // The streams still open finish on the old certificate; the
            // connection closes once they have.
            f.whenSuccess { tunnelValue in
                tunnelValue.channel.eventLoop.execute {
                    tunnelValue.lifecycle.value.retire()
                }
            }
        }
    }

    private func connect(source: TunnelCredential, destination: String, serverName: String, tunnel: SocketAddress,
                         on loop: any EventLoop) -> EventLoopFuture<Tunnel> {
        let context: NIOSSLContext
        do {
            context = try credentials.clientContext(for: source)
        } catch {
            return loop.makeFailedFuture(error)
        }
        let credentials = self.credentials
        let stats = self.stats
        let logger = self.logger
        return ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: NodeProxy.reads)
            .channelOption(.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_MARK)),
                           value: SocketOptionValue(Int32(bitPattern: mark)))
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try NIOSSLClientHandler(
                        context: context, serverHostname: serverName,
                        customVerificationCallback: { peer, promise in
                            promise.completeWithTask {
                                do {
                                    let got = try await credentials.verify(peer, role: .server).uri
                                    guard got == destination else { throw TunnelError.wrongPeer(expected: destination, got: got) }
                                    return .certificateVerified
                                } catch {
                                    stats.handshakeFailures.add(1, ordering: .relaxed)
                                    logger.warning("refused the destination node's certificate",
                                                   metadata: ["tunnel": "\(tunnel)", "error": "\(error)"])
                                    return .failed
                                }
                            }
                        })
                    try channel.pipeline.syncOperations.addHandlers([tls, FlushCoalescer(joinWrites: true)])
                }
            }
            .connect(to: tunnel)
            .flatMapError { error in
                // Name the usual cause: a firewall between nodes.
                loop.makeFailedFuture(TunnelConnectError(tunnel: tunnel, underlying: error))
            }
            .flatMap { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    let mux = try sync.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: HBONE.connection, streamConfiguration: HBONE.stream,
                        inboundStreamInitializer: { $0.close() })
                    let lifecycle = TunnelLifecycle(idleTimeout: HBONE.idleTunnelTimeout)
                    try sync.addHandler(lifecycle)
                    HBONE.openConnectionWindow(channel)
                    stats.tunnelsOpened.add(1, ordering: .relaxed)
                    return Tunnel(channel: channel, multiplexer: mux,
                                  lifecycle: NIOLoopBound(lifecycle, eventLoop: channel.eventLoop))
                }
            }
    }
}

/// HBONE's HTTP/2 settings, shared by both ends.
enum HBONE {
    static let windowSize = 4 << 20
    /// Bytes NIOHTTP2 may hold for a connection before its streams report
    /// unwritable (the relay then stops reading from the workload): the
    /// default of 8 KiB throttles bulk transfers to a few frames in flight.
    static let outboundHighWatermark = 1 << 20
    /// The connection-level receive window each end grants, and keeps
    /// granted (HTTP/2 starts every connection at 64 KiB; Envoy grants 1 MiB
    /// and more): all streams of a tunnel share it. With 16 MiB a bulk
    /// transfer went no faster than with 4 MiB (`make bench-hbone`'s iperf3),
    /// and the receiving weftd held 53 MB instead of 14 MB after it.
    static let connectionWindow = 4 << 20

    static var connection: NIOHTTP2Handler.ConnectionConfiguration {
        var c = NIOHTTP2Handler.ConnectionConfiguration()
        c.initialSettings = settings
        // The window NIOHTTP2 keeps topping up as data is read. Left at HTTP/2's 64 KiB, the
        // large window granted at the start was used up once and then a bulk transfer ran on
        // 64 KiB per round trip, with a WINDOW_UPDATE (and a wake-up of the sender) every 32 KiB.
        c.targetWindowSize = connectionWindow
        return c
    }

    static var stream: NIOHTTP2Handler.StreamConfiguration {
        var s = NIOHTTP2Handler.StreamConfiguration()
        s.targetWindowSize = windowSize
        s.outboundBufferSizeHighWatermark = outboundHighWatermark
        s.outboundBufferSizeLowWatermark = outboundLowWatermark
        return s
    }

    /// Raises the connection's receive window from HTTP/2's 64 KiB.
    static func openConnectionWindow(_ channel: any Channel) {
        let frame = HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: connectionWindow - 65_535))
        channel.writeAndFlush(frame, promise: nil)
    }
    static let outboundLowWatermark = 512 << 10
    static let settings: HTTP2Settings = [
        HTTP2Setting(parameter: .maxConcurrentStreams, value: 10_000),
        HTTP2Setting(parameter: .initialWindowSize, value: windowSize),
        HTTP2Setting(parameter: .maxFrameSize, value: 1 << 20),
    ]
    /// A tunnel without streams for this long is closed.
    static let idleTunnelTimeout: TimeAmount = .seconds(60)
}

/// Closes a tunnel connection once it has had no open stream for a while,
/// and once its last stream ends after it was retired (certificate renewed).
/// Streams are counted by the pool, which opens them.
final class TunnelLifecycle: ChannelInboundHandler {
    typealias InboundIn = Never

    private let idleTimeout: TimeAmount
    private var open = 0
    private var retired = false
    private var idleTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(idleTimeout: TimeAmount) {
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        armIdle()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        self.context = nil
    }

    func streamOpened() {
        open += 1
        idleTimer?.cancel()
        idleTimer = nil
    }

    func streamClosed() {
        open = max(0, open - 1)
        if open == 0 {
            if retired { context?.close(promise: nil) } else { armIdle() }
        }
    }

    func retire() {
        retired = true
        if open == 0 { context?.close(promise: nil) }
    }

    private func armIdle() {
        guard let context else { return }
        idleTimer?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(in: idleTimeout) {
            loopBound.value.close(promise: nil)
        }
    }
}

public struct TunnelConnectError: Error, CustomStringConvertible {
    public var tunnel: SocketAddress
    public var underlying: any Error

    public var description: String {
        "cannot reach the destination node's HBONE port at \(tunnel) (\(underlying)): is weftd running there, and is port \(tunnel.port ?? 15008) open between nodes?"
    }
}
