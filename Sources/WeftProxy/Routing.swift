import Glibc
import NIOCore
import WeftCore

/// One way to reach a destination.
enum Hop: Sendable, CustomStringConvertible {
    /// Plain TCP: a workload on this node, or a destination outside the mesh.
    /// `destination` is the workload when the mesh knows it; `sourceIdentity`
    /// the dialling workload's identity, when it has one.
    case direct(OriginalDestination, destination: MeshDirectory.Entry?, sourceIdentity: String?)
    /// An HBONE stream through the destination's node.
    case tunnel(OriginalDestination, source: TunnelCredential, destination: MeshDirectory.Entry)

    struct IdentityPair: Sendable {
        var source: String
        var destination: String
    }

    var isTunnel: Bool {
        if case .tunnel = self { return true }
        return false
    }

    /// Both identities, when both ends are meshed workloads the proxy knows
    /// (across nodes from certificates; on one node from the cgroups).
    var identities: IdentityPair? {
        switch self {
        case .direct(_, let destination, let source):
            guard let destination, destination.mesh, let source else { return nil }
            return IdentityPair(source: source, destination: destination.identity)
        case .tunnel(_, let source, let destination): return IdentityPair(source: source.identity, destination: destination.identity)
        }
    }

    var destinationEntry: MeshDirectory.Entry? {
        switch self {
        case .direct(_, let d, _): return d
        case .tunnel(_, _, let d): return d
        }
    }

    var target: OriginalDestination {
        switch self {
        case .direct(let t, _, _): return t
        case .tunnel(let t, _, _): return t
        }
    }

    /// The destination proxy is this one: a meshed workload of this node.
    var isLocalMeshed: Bool {
        if case .direct(_, let d, _) = self, let d, d.mesh, identities != nil { return true }
        return false
    }

    var description: String {
        switch self {
        case .direct(let d, _, _): return "\(d) direct"
        case .tunnel(let d, _, let e): return "\(d) via HBONE to \(e.identity)"
        }
    }
}

/// How a connection travels, and the Service it was addressed to (nil: no Service).
struct Planned: Sendable {
    var hops: [Hop]
    var service: (namespace: String, name: String)?
    /// The Service's traffic policy (DestinationRule), when it has one.
    var traffic: ServiceTraffic?
    /// Endpoints of the Service in all (outlier detection's maxEjectionPercent).
    var endpointCount = 0
    /// The dialling workload's SPIFFE ID, when the directory knows it.
    var sourceIdentity: String?
}

struct Refusal: Error, CustomStringConvertible {
    var description: String
}

extension NodeProxy {
    /// How a captured connection travels. A service's virtual IP is never
    /// dialled: its endpoints are, up to three, in turn. A meshed workload on
    /// another node is reached only through a tunnel with the source
    /// workload's certificate: without one the connection is refused, never
    /// sent in plaintext.
    func plan(_ original: OriginalDestination, source: WorkloadRef?, hashKey: String? = nil) -> Result<Planned, Refusal> {
        let directory = mesh.current
        var serviceName: (namespace: String, name: String)?
        var traffic: ServiceTraffic?
        var endpointCount = 0
        let sourceIdentity = source.flatMap { directory.entry($0) }?.identity
        // Each candidate becomes its hop as it is found (no list of candidates first).
        var hops: [Hop] = []
        var refusals: [String] = []
        func consider(_ target: OriginalDestination, _ lookup: MeshDirectory.Lookup) {
            switch lookup {
            case .external:
                hops.append(.direct(target, destination: nil, sourceIdentity: sourceIdentity))
            case .ambiguous:
                refusals.append(TunnelError.ambiguousDestination("\(target)").description)
            case .workload(let entry):
                if entry.node == directory.localNode || !entry.mesh {
                    // Same node: no wire to protect; both identities are known.
                    // Outside the mesh: plaintext is what the destination speaks.
                    hops.append(.direct(target, destination: entry, sourceIdentity: sourceIdentity))
                    return
                }
                guard let sourceIdentity else {
                    refusals.append(TunnelError.noSourceIdentity("\(source.map { "\($0)" } ?? "unknown workload") is not in the control plane's directory").description)
                    return
                }
                guard let credential = credentials.credential(for: sourceIdentity) else {
                    refusals.append(TunnelError.noSourceIdentity(sourceIdentity).description)
                    return
                }
                hops.append(.tunnel(target, source: credential, destination: entry))
            }
        }
        if var service = services.endpoints(for: original.address, port: original.port) {
            traffic = trafficPolicies.service(service.service)
            endpointCount = service.endpoints.count
            if let traffic { service.endpoints = traffic.order(service.endpoints, hashKey: hashKey) }
            serviceName = (service.namespace, service.name)
            if service.endpoints.isEmpty {
                stats.noHealthyEndpoint.add(1, ordering: .relaxed)
                return .failure(Refusal(description: "service \(service.service) has no endpoints"))
            }
            for e in service.endpoints.prefix(3) {
                var t = original
                t.address = e.address
                t.port = e.port
                if let ref = e.ref, let entry = directory.entry(ref) {
                    consider(t, .workload(entry))
                } else {
                    consider(t, directory.lookup(e.address, port: e.port))
                }
            }
        } else {
            consider(original, directory.lookup(original.address, port: original.port))
        }
        if hops.isEmpty {
            return .failure(Refusal(description: refusals.joined(separator: "; ")))
        }
        return .success(Planned(hops: hops, service: serviceName, traffic: traffic, endpointCount: endpointCount,
                                sourceIdentity: sourceIdentity))
    }

    /// Tries each hop in turn until one connects (a dead node's endpoint is
    /// skipped for the next).
    func connectFirst(_ hops: ArraySlice<Hop>, netns: NetworkNamespace, connectHeaders: [(String, String)] = [],
                      on loop: any EventLoop) -> EventLoopFuture<(any Channel, Hop)> {
        @Sendable func attempt(_ rest: ArraySlice<Hop>) -> EventLoopFuture<(any Channel, Hop)> {
            let hop = rest.first!
            return open(hop, netns: netns, connectHeaders: connectHeaders, on: loop).map { ($0, hop) }.flatMapError { error in
                let remaining = rest.dropFirst()
                guard !remaining.isEmpty else { return loop.makeFailedFuture(error) }
                self.logger.info("endpoint did not answer; trying the next", metadata: ["endpoint": "\(hop)", "error": "\(error)"])
                return attempt(remaining)
            }
        }
        return attempt(hops)
    }

    /// Opens the upstream side of one hop on `loop`. `connectHeaders` go on
    /// an HBONE CONNECT (the source's telemetry labels, the stream's protocol).
    func open(_ hop: Hop, netns: NetworkNamespace, connectHeaders: [(String, String)] = [],
              on loop: any EventLoop) -> EventLoopFuture<any Channel> {
        switch hop {
        case .direct(let target, _, _):
            return connectUpstream(to: target, netns: netns, on: loop)
        case .tunnel(let target, let source, let destination):
            let authority = target.description
            let tunnel = SocketAddress(target.address, port: UInt16(config.tunnelPort))
            let serverName = MeshDirectory.serverName(namespace: destination.ref.namespace.rawValue,
                                                      serviceAccount: destination.serviceAccount)
            return pool.openStream(source: source, destination: destination.identity, serverName: serverName,
                                   tunnel: tunnel, authority: authority, headers: connectHeaders, on: loop)
        }
    }

    /// Joins two channels of one event loop with the relay, replacing the
    /// handler at `context` on the downstream side, and starts reading both.
    func relay(downstream: any Channel, downstreamHandlers: [any ChannelHandler] = [],
               upstream: any Channel, meter: ConnectionMeter? = nil, removing context: ChannelHandlerContext) throws {
        let stats = self.stats
        let idle = config.idleTimeout
        let activity = RelayActivity()
        let (down, up) = GlueHandler.matchedPair(
            downstreamBytes: { n in
                stats.bytesFromWorkloads.add(n, ordering: .relaxed)
                meter?.request(n)
            },
            upstreamBytes: { n in
                stats.bytesToWorkloads.add(n, ordering: .relaxed)
                meter?.response(n)
            },
            activity: activity)
        if let meter {
            downstream.closeFuture.whenComplete { _ in meter.closed() }
        }
        try upstream.pipeline.syncOperations.addHandler(up)
        let ops = context.pipeline.syncOperations
        try ops.addHandlers(downstreamHandlers + [down])
        ops.removeHandler(context: context, promise: nil)
        // Both channels are on this event loop: the relay's handlers are called from the check.
        activity.start(on: context.eventLoop, timeout: idle) { down.idleTimedOut() }
        let stop = NIOLoopBound(activity, eventLoop: context.eventLoop)
        downstream.closeFuture.whenComplete { _ in stop.value.stop() }
        // An HTTP/2 stream channel only records autoRead: the first read is
        // asked for here (a socket channel takes the extra read in its stride).
        upstream.setOption(.autoRead, value: true).whenComplete { _ in upstream.read() }
        downstream.setOption(.autoRead, value: true).whenComplete { _ in downstream.read() }
    }
}
