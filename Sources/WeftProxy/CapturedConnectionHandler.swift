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
    typealias InboundIn = NIOAny

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
            // An HTTPRoute attaches to this Service port: HTTP/1.1 or HTTP/2 (as the
            // first bytes say), routed per request.
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
                            HTTPResponseEncoder(),
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
                ops.removeHandler(context: context, promise: nil)
                channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
            } catch {
                Self.reset(channel)
            }
            return
        }
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
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
                    HTTPResponseEncoder(),
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
