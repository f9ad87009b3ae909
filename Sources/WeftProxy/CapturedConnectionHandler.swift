import Glibc
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import WeftCore

/// First handler on an accepted connection. Finds the kernel's record of the
/// connection (it must exist: a connection the kernel did not redirect has no
/// business on this listener), connects to the original destination, then
/// replaces itself with the relay. Until then the connection is not read, so
/// nothing is buffered in the proxy.
final class CapturedConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let proxy: NodeProxy
    private let netns: NetworkNamespace

    init(proxy: NodeProxy, netns: NetworkNamespace) {
        self.proxy = proxy
        self.netns = netns
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        guard let remote = channel.remoteAddress, let local = channel.localAddress,
              let src = remote.weftIPAddress, let dst = local.weftIPAddress,
              let srcPort = remote.port, let dstPort = local.port else {
            Self.reset(channel)
            return
        }
        let key = CapturedConnectionKey(netnsCookie: netns.cookie, source: src, sourcePort: UInt16(srcPort),
                                        destination: dst, destinationPort: UInt16(dstPort))
        guard let original = proxy.resolver.take(key) else {
            proxy.stats.noOriginalDestination.add(1, ordering: .relaxed)
            proxy.logger.warning("captured connection without a kernel record; closing it",
                                 metadata: ["peer": "\(remote)", "netns": "\(netns)"])
            Self.reset(channel)
            return
        }
        let workload = proxy.workloads.workload(cgroupID: original.cgroupID)
        proxy.stats.countConnection(from: workload)
        proxy.stats.active.add(1, ordering: .relaxed)
        let stats = proxy.stats
        channel.closeFuture.whenComplete { _ in stats.active.subtract(1, ordering: .relaxed) }

        let logger = proxy.logger
        if original.port == 53, let dns = proxy.dns {
            // DNS over TCP: answered here, like the UDP queries the kernel
            // sends to the DNS server.
            do {
                let ops = context.pipeline.syncOperations
                try ops.addHandlers([ByteToMessageHandler(DNSLengthFrameDecoder()), DNSTCPHandler(service: dns)])
                ops.removeHandler(context: context, promise: nil)
                channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
            } catch {
                Self.reset(channel)
            }
            return
        }
        if let routed = proxy.httpRoutes.routes(for: original.address, port: original.port) {
            // An HTTPRoute attaches to this Service port (or it is declared HTTP): routed per request.
            startL7(context: context, routed: routed, workload: workload, initial: nil)
            return
        }
        if let detected = proxy.httpRoutes.detectedRoutes(for: original.address, port: original.port) {
            // A port that declares no protocol: the client's first bytes decide.
            detecting = Detection(original: original, workload: workload, routes: detected)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            detecting?.timer = context.eventLoop.scheduleTask(in: Self.protocolDetectionTimeout) {
                let (handler, context) = bound.value
                // Nothing (or nothing decisive) from the client in time: a server-first protocol, so TCP.
                handler.decide(context: context, http: false)
            }
            context.read()
            return
        }
        startL4(context: context, original: original, workload: workload, initial: nil)
    }

    /// How long an undeclared port waits for the client's first bytes before
    /// it takes the connection for TCP (a server-first protocol sends nothing
    /// until the server has spoken). Istio's default was 100 ms as well.
    static let protocolDetectionTimeout: TimeAmount = .milliseconds(100)

    private struct Detection {
        var original: OriginalDestination
        var workload: WorkloadRef?
        var routes: HTTPRouteTable.Port
        var buffered: ByteBuffer?
        var timer: Scheduled<Void>?
    }
    private var detecting: Detection?

    /// Bytes a read asked for during detection brought after the choice of
    /// TCP, while the upstream connects: sent after the detected ones.
    private var lateBytes: ByteBuffer?

    /// TCP was chosen after detection; the upstream is connecting.
    private var connectingAfterDetection = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        guard detecting != nil else {
            guard connectingAfterDetection else { return context.fireChannelRead(data) }
            if lateBytes == nil { lateBytes = incoming } else { lateBytes!.writeBuffer(&incoming) }
            return
        }
        if detecting!.buffered == nil {
            detecting!.buffered = incoming
        } else {
            detecting!.buffered!.writeBuffer(&incoming)
        }
        switch Self.looksLikeHTTP(detecting!.buffered!.readableBytesView) {
        case true?: decide(context: context, http: true)
        case false?: decide(context: context, http: false)
        case nil: context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        detecting?.timer?.cancel()
        detecting = nil
        context.fireChannelInactive()
    }

    private func decide(context: ChannelHandlerContext, http: Bool) {
        guard let d = detecting else { return }
        detecting = nil
        d.timer?.cancel()
        proxy.stats.protocolDetected(http: http)
        if http {
            startL7(context: context, routed: d.routes, workload: d.workload, initial: d.buffered)
        } else {
            connectingAfterDetection = true
            startL4(context: context, original: d.original, workload: d.workload, initial: d.buffered)
        }
    }

    /// An HTTP/1.x request line's start (an upper-case method, then a space;
    /// the HTTP/2 preface, `PRI * HTTP/2.0`, is one too): true; other bytes,
    /// TLS's ClientHello among them: false; too few bytes to tell: nil.
    static func looksLikeHTTP(_ bytes: ByteBufferView) -> Bool? {
        var length = 0
        for b in bytes {
            if b == UInt8(ascii: " ") { return length >= 3 }
            guard (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z")) || b == UInt8(ascii: "-") || b == UInt8(ascii: "_") else {
                return false
            }
            length += 1
            if length > 24 { return false }
        }
        return nil
    }

    /// HTTP/1.1 or HTTP/2, as the first bytes say, routed per request;
    /// `initial`: bytes already read (by protocol detection), handed on.
    private func startL7(context: ChannelHandlerContext, routed: HTTPRouteTable.Port, workload: WorkloadRef?, initial: ByteBuffer?) {
        let channel = context.channel
        let proxy = self.proxy, netns = self.netns
        do {
            let ops = context.pipeline.syncOperations
            // Writes go out once per event-loop tick, after every connection that was ready has
            // been read (Envoy's dispatcher does the same): fewer wake-ups of the peers.
            try ops.addHandler(FlushCoalescer())
            try ops.addHandler(HTTPVersionSniffer { context, version in
                let ops = context.pipeline.syncOperations
                switch version {
                case .http1:
                    try ops.addHandlers([
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
                        HTTP1ResponseEncoder(),
                        HTTPRouter(proxy: proxy, netns: netns, role: .source(service: routed, workload: workload)),
                    ])
                case .http2:
                    // One router per stream; their upstreams are shared, and closed with the connection.
                    let upstreams = UpstreamCache(maxEndpoints: 8, maxPerEndpoint: 16)
                    let channel = context.channel
                    let bound = NIOLoopBound(upstreams, eventLoop: channel.eventLoop)
                    channel.closeFuture.whenComplete { _ in bound.value.closeAll() }
                    _ = try ops.configureHTTP2Pipeline(mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandlers([
                                HTTP2FramePayloadToHTTP1ServerCodec(),
                                HTTPRouter(proxy: proxy, netns: netns, role: .source(service: routed, workload: workload),
                                           sharedUpstreams: bound.value),
                            ])
                        }
                    }
                }
            })
            if let initial {
                context.fireChannelRead(NIOAny(initial))
                context.fireChannelReadComplete()
            }
            ops.removeHandler(context: context, promise: nil)
            channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
        } catch {
            Self.reset(channel)
        }
    }

    /// Relayed as bytes to the planned endpoint; `initial`: bytes already
    /// read (by protocol detection), sent first.
    private func startL4(context: ChannelHandlerContext, original: OriginalDestination, workload: WorkloadRef?, initial: ByteBuffer?) {
        let channel = context.channel
        let logger = proxy.logger
        let stats = proxy.stats
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let boundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        var planned: Planned
        switch proxy.plan(original, source: workload) {
        case .success(let p):
            planned = p
        case .failure(let refusal):
            logger.info("connection refused by the proxy", metadata: [
                "source": "\(workload.map(String.init(describing:)) ?? "unknown")",
                "destination": "\(original)", "reason": "\(refusal)"])
            Self.reset(channel)
            return
        }
        let proxy = self.proxy
        let netns = self.netns
        // The source's labels: for telemetry, and as baggage on a tunnel's CONNECT.
        let sourceLabels = proxy.sourceLabels(workload)
        // On this node the source's identity is its cgroup's workload: this
        // proxy is the destination's proxy too, and enforces its policies.
        let sourcePrincipal = planned.sourceIdentity
        if let first = planned.hops.first, let destination = NodeProxy.localMeshedDestination(first),
           proxy.authorization.parsesHTTP(destination, port: first.target.port) {
            // An HTTP port whose policies name HTTP attributes: each request is checked.
            let authz = AuthorizationContext(destination: destination, sourcePrincipal: sourcePrincipal, sourceIP: nil,
                                             destinationIP: first.target.address, destinationPort: first.target.port)
            let traffic = proxy.sourceTraffic(source: sourceLabels, hop: first, service: planned.service, protocol: "http")
            do {
                let ops = context.pipeline.syncOperations
                try ops.addHandlers([
                    ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
                    HTTP1ResponseEncoder(),
                    HTTPRouter(proxy: proxy, netns: netns,
                               role: .destination(target: first.target, traffic: [traffic, traffic.reported(by: .destination)],
                                                  authorization: authz)),
                ])
                ops.removeHandler(context: context, promise: nil)
                channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
            } catch {
                Self.reset(channel)
            }
            return
        }
        let authorized = proxy.authorizedHops(planned.hops, sourcePrincipal: sourcePrincipal, sourceIP: nil)
        if authorized.hops.isEmpty {
            // Denied TCP: reset, as Istio's proxies do.
            Self.reset(channel)
            return
        }
        planned.hops = authorized.hops
        // A Service's circuit breaker: connections do not wait for room (UO: reset).
        if let traffic = planned.traffic {
            guard traffic.tryAdmit() else {
                proxy.stats.circuitBreakerOverflow.add(1, ordering: .relaxed)
                logger.info("connection refused by the Service's circuit breaker (UO)", metadata: [
                    "service": "\(planned.service.map { "\($0.namespace)/\($0.name)" } ?? "?")"])
                Self.reset(channel)
                return
            }
            channel.closeFuture.whenComplete { _ in traffic.release() }
        }
        let tried = planned.hops.map(\.target.description)
        let plan = planned
        let headers = plan.hops.contains(where: \.isTunnel) ? proxy.connectHeaders(source: sourceLabels, protocol: nil) : []
        proxy.connectFirst(plan.hops[...], netns: netns, connectHeaders: headers, on: context.eventLoop).whenComplete { result in
            let context = loopBoundContext.value
            switch result {
            case .success(let (upstream, hop)):
                if let policy = plan.traffic {
                    // Endpoints tried before this one did not answer; this one did.
                    let endpoint = hop.target.description
                    for failed in tried.prefix(while: { $0 != endpoint }) {
                        policy.record(.gatewayError, endpoint: failed, endpoints: plan.endpointCount)
                    }
                    policy.record(.success, endpoint: endpoint, endpoints: plan.endpointCount)
                    policy.started(endpoint)
                    upstream.closeFuture.whenComplete { _ in policy.finished(endpoint) }
                }
                guard channel.isActive else {
                    upstream.close(promise: nil)
                    return
                }
                if let pair = hop.identities {
                    stats.recordPair(direction: .outbound, path: hop.isTunnel ? .hbone : .local,
                                     source: pair.source, destination: pair.destination)
                }
                let traffic = proxy.sourceTraffic(source: sourceLabels, hop: hop, service: plan.service, protocol: "tcp")
                let meter = proxy.meter(traffic, alsoDestination: hop.isLocalMeshed, upstream: hop.target.description,
                                        transport: hop.isTunnel ? "hbone" : "tcp")
                do {
                    try proxy.relay(downstream: channel, upstream: upstream, meter: meter, removing: context)
                } catch {
                    upstream.close(promise: nil)
                    Self.reset(channel)
                    return
                }
                var first = initial
                if var late = boundSelf.value.lateBytes {
                    boundSelf.value.lateBytes = nil
                    if first == nil { first = late } else { first!.writeBuffer(&late) }
                }
                if let first {
                    // What protocol detection read goes first, through the relay like the rest.
                    channel.pipeline.fireChannelRead(NIOAny(first))
                    channel.pipeline.fireChannelReadComplete()
                }
                if let destination = NodeProxy.localMeshedDestination(hop) {
                    let authz = AuthorizationContext(destination: destination, sourcePrincipal: sourcePrincipal, sourceIP: nil,
                                                     destinationIP: hop.target.address, destinationPort: hop.target.port)
                    proxy.live.track(LiveConnections.Entry(context: authz, http: nil) {
                        upstream.close(promise: nil)
                        channel.eventLoop.execute { Self.reset(channel) }
                    }, until: channel)
                }
                logger.debug("relaying", metadata: [
                    "source": "\(workload.map(String.init(describing:)) ?? "unknown")",
                    "destination": "\(original)", "via": "\(hop)"])
            case .failure(let error):
                stats.upstreamConnectFailures.add(1, ordering: .relaxed)
                for failed in tried {
                    plan.traffic?.record(.gatewayError, endpoint: failed, endpoints: plan.endpointCount)
                }
                logger.info("upstream connect failed; resetting the workload's connection",
                            metadata: ["source": "\(workload.map(String.init(describing:)) ?? "unknown")",
                                       "error": "\(error)"])
                Self.reset(channel)
            }
        }
    }

    /// Close with RST so the workload learns at once that its connection
    /// failed, as it would have from the destination itself.
    static func reset(_ channel: any Channel) {
        if let provider = channel as? any SocketOptionProvider {
            provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            channel.close(promise: nil)
        }
    }
}
