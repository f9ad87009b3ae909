import Glibc
import Logging
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import NIOHTTP1
import WeftCore
import WeftIdentity
import WeftTelemetry

/// The HBONE listener (port 15008): mutual TLS 1.3 with a mesh identity
/// required of the client, then HTTP/2 CONNECT streams, each to a meshed
/// workload of this node.
///
/// It is not an open proxy: a CONNECT to anything but a meshed workload of
/// this node is refused, whoever asks.
final class InboundTunnelServer: Sendable {
    private let proxy: NodeProxy
    private let channels: Mutex<[any Channel]> = Mutex([])

    init(proxy: NodeProxy) {
        self.proxy = proxy
    }

    /// Listens on every address of weftd's own network namespace, IPv4 and
    /// (where the node has it) IPv6.
    func listen(port: Int, netns: NetworkNamespace) async throws -> [String] {
        var bound: [String] = []
        for host in ["0.0.0.0", "::"] {
            var bootstrap = ServerBootstrap(group: proxy.group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.recvAllocator, value: NodeProxy.reads)
                .childChannelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture { try self.initialize(channel, netns: netns) }
                }
            if host == "::" {
                bootstrap = bootstrap.serverChannelOption(
                    .socket(SocketOptionLevel(IPPROTO_IPV6), SocketOptionName(IPV6_V6ONLY)), value: 1)
            }
            do {
                let channel = try await bootstrap.bind(host: host, port: port).get()
                channels.withLock { $0.append(channel) }
                bound.append(host == "::" ? "[::]:\(port)" : "\(host):\(port)")
            } catch {
                if host == "::" {
                    proxy.logger.info("no IPv6 HBONE listener", metadata: ["error": "\(error)"])
                    continue
                }
                throw ProxyError.system("listen on 0.0.0.0:\(port) for HBONE (is another weftd or a ztunnel on this node?)", EADDRINUSE)
            }
        }
        return bound
    }

    func close() async {
        for c in channels.withLock({ $0 }) { try? await c.close() }
    }

    private func initialize(_ channel: any Channel, netns: NetworkNamespace) throws {
        let proxy = self.proxy
        let stats = proxy.stats
        guard let context = try proxy.inboundContext() else {
            // No workload certificate yet: nothing to present, so nothing to accept.
            stats.inboundRefused.add(1, ordering: .relaxed)
            channel.close(promise: nil)
            return
        }
        stats.inboundTunnels.add(1, ordering: .relaxed)
        let peer = PeerIdentity()
        let remote = channel.remoteAddress
        let tls = NIOSSLServerHandler(context: context, customVerificationCallback: { certificates, promise in
            promise.completeWithTask {
                do {
                    peer.value.withLock { $0 = nil }
                    let id = try await proxy.credentials.verify(certificates, role: .client)
                    peer.value.withLock { $0 = id }
                    return .certificateVerified
                } catch {
                    stats.inboundRefused.add(1, ordering: .relaxed)
                    proxy.logger.warning("refused a tunnel client's certificate",
                                         metadata: ["peer": "\(remote.map { "\($0)" } ?? "?")", "error": "\(error)"])
                    return .failed
                }
            }
        })
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(tls)
        try sync.addHandler(FlushCoalescer(joinWrites: true))
        try sync.addHandler(HandshakeFailureCounter(stats: stats, logger: proxy.logger, remote: remote))
        _ = try sync.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: HBONE.connection, streamConfiguration: HBONE.stream
        ) { stream in
            // Bytes after the CONNECT wait in the stream until the relay is in place.
            stream.setOption(.autoRead, value: false).flatMapThrowing {
                try stream.pipeline.syncOperations.addHandler(
                    InboundStreamHandler(proxy: proxy, netns: netns, peer: peer))
            }
        }
        try sync.addHandler(WindowOpener())
    }
}

/// Grants the client a large connection window once the connection is up.
final class WindowOpener: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted = tls {
            HBONE.openConnectionWindow(context.channel)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// The verified client identity of one tunnel connection, set during the
/// handshake and read by its streams.
final class PeerIdentity: Sendable {
    let value = Mutex<SpiffeID?>(nil)
}

/// Logs and counts handshakes that fail (plaintext, wrong CA, no client
/// certificate) so that refusals are visible to the operator.
final class HandshakeFailureCounter: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private let stats: ProxyStats
    private let logger: Logger
    private let remote: SocketAddress?

    init(stats: ProxyStats, logger: Logger, remote: SocketAddress?) {
        self.stats = stats
        self.logger = logger
        self.remote = remote
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            stats.handshakeFailures.add(1, ordering: .relaxed)
            logger.info("HBONE handshake failed; connection closed",
                        metadata: ["peer": "\(remote.map { "\($0)" } ?? "?")", "error": "\(error)"])
        }
        context.close(promise: nil)
    }
}

/// One inbound CONNECT: checks it, connects to the local workload, answers
/// 200 and relays.
final class InboundStreamHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let proxy: NodeProxy
    private let netns: NetworkNamespace
    private let peer: PeerIdentity
    private var started = false

    init(proxy: NodeProxy, netns: NetworkNamespace, peer: PeerIdentity) {
        self.proxy = proxy
        self.netns = netns
        self.peer = peer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !started else { return }
        guard case .headers(let h) = unwrapInboundIn(data) else {
            respond(context: context, status: "400")
            return
        }
        started = true
        let stats = proxy.stats
        stats.inboundStreams.add(1, ordering: .relaxed)
        guard let sourceID = peer.value.withLock({ $0 }) else {
            respond(context: context, status: "401")
            return
        }
        let source = sourceID.uri
        let method = h.headers.first(name: ":method")
        let authority = h.headers.first(name: ":authority") ?? ""
        // Extended CONNECT (:protocol) and requests with a path are not HBONE.
        guard method == "CONNECT", !h.headers.contains(name: ":path"), !h.headers.contains(name: ":protocol"),
              let (address, port) = Self.parseAuthority(authority) else {
            proxy.logger.info("refused a malformed HBONE request", metadata: ["peer": "\(source)", "method": "\(method ?? "")", "authority": "\(authority)"])
            respond(context: context, status: "400")
            return
        }
        let directory = proxy.mesh.current
        guard case .workload(let destination) = directory.lookup(address, port: port),
              destination.node == directory.localNode, destination.mesh else {
            stats.inboundRefused.add(1, ordering: .relaxed)
            proxy.logger.warning("refused a CONNECT to a destination that is not a meshed workload of this node",
                                 metadata: ["peer": "\(source)", "authority": "\(authority)"])
            respond(context: context, status: "403")
            return
        }
        let target = OriginalDestination(address: address, port: port, socketFamily: address.isIPv4 ? AF_INET : AF_INET6,
                                         pid: 0, cgroupID: 0, netnsCookie: 0)
        let channel = context.channel
        // The destination proxy's view: the source from its certificate (and
        // its baggage, for names), the workload from the directory.
        // The policies of the workload, with the identity its certificate proved.
        let authz = AuthorizationContext(destination: destination, sourcePrincipal: source,
                                         sourceIP: channel.parent?.remoteAddress?.weftIPAddress,
                                         destinationIP: address, destinationPort: port)
        let httpStream = h.headers.first(name: "x-weft-protocol") == "http/1.1"
            || proxy.authorization.parsesHTTP(destination, port: port)
        let traffic = TrafficLabels(
            reporter: .destination,
            source: Baggage.sourceLabels(peer: sourceID, baggage: h.headers.first(name: "baggage")),
            destination: proxy.peerLabels(destination),
            service: proxy.serviceLabels(proxy.httpRoutes.service(ofEndpoint: address, port: port)),
            requestProtocol: httpStream ? "http" : "tcp", security: .mutualTLS)
        if httpStream {
            // The source proxy speaks HTTP/1.1 in this stream: requests are
            // seen (and reported, and traced) here too, then sent to the workload.
            stats.recordPair(direction: .inbound, path: .hbone, source: source, destination: destination.identity)
            let headers = HPACKHeaders([(":status", "200")])
            context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
            do {
                let ops = context.pipeline.syncOperations
                try ops.addHandlers([
                    HBONEStreamHandler(open: authority),
                    ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
                    HTTP1ResponseEncoder(),
                    HTTPRouter(proxy: proxy, netns: netns, role: .destination(target: target, traffic: [traffic], authorization: authz)),
                ])
                ops.removeHandler(context: context, promise: nil)
                channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
            } catch {
                channel.close(promise: nil)
            }
            return
        }
        if !proxy.authorize(authz).allowed {
            // Denied TCP: the source proxy resets its workload's connection.
            respond(context: context, status: "403")
            return
        }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let boundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let proxy = self.proxy
        proxy.connectUpstream(to: target, netns: netns, on: context.eventLoop).whenComplete { result in
            let context = loopBound.value
            let handler = boundSelf.value
            switch result {
            case .failure(let error):
                stats.upstreamConnectFailures.add(1, ordering: .relaxed)
                proxy.logger.info("inbound connect to the local workload failed",
                                  metadata: ["peer": "\(source)", "destination": "\(destination)", "error": "\(error)"])
                handler.respond(context: context, status: "503")
            case .success(let upstream):
                guard channel.isActive else {
                    upstream.close(promise: nil)
                    return
                }
                stats.recordPair(direction: .inbound, path: .hbone, source: source, destination: destination.identity)
                proxy.logger.debug("inbound tunnel stream", metadata: [
                    "source": "\(source)", "destination": "\(destination)"])
                let headers = HPACKHeaders([(":status", "200")])
                context.writeAndFlush(handler.wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
                let meter = proxy.meter(traffic, alsoDestination: false, upstream: target.description, transport: "tcp")
                do {
                    try proxy.relay(downstream: channel, downstreamHandlers: [HBONEStreamHandler(open: authority)],
                                    upstream: upstream, meter: meter, removing: context)
                } catch {
                    upstream.close(promise: nil)
                    channel.close(promise: nil)
                    return
                }
                proxy.live.track(LiveConnections.Entry(context: authz, http: nil) {
                    // Reset both ends: the stream (RST_STREAM) and the workload's socket.
                    upstream.close(promise: nil)
                    channel.close(promise: nil)
                }, until: channel)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, status: String) {
        let headers = HPACKHeaders([(":status", status)])
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: headers, endStream: true))), promise: nil)
        context.close(promise: nil)
    }

    /// `ip:port` or `[ipv6]:port`, port not 0.
    static func parseAuthority(_ s: String) -> (IPAddress, UInt16)? {
        guard let (ip, port) = IPAddress.parseEndpoint(s), port != 0 else { return nil }
        return (ip, port)
    }
}
