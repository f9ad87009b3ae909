import CWeftShim
import Glibc
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import WeftCore
import WeftTelemetry

public struct ProxyConfiguration: Sendable, Hashable {
    public var outboundPort: UInt16
    /// SO_MARK of every socket the proxy opens; the eBPF programs never
    /// capture a socket carrying it.
    public var mark: UInt32
    public var connectTimeout: TimeAmount
    public var idleTimeout: TimeAmount
    public var backlog: Int32
    /// HBONE: where this node accepts tunnels, and where it opens them on
    /// other nodes (every node of a mesh uses the same port, as in Istio).
    public var tunnelPort: Int
    /// nil: workloads' DNS is not served by weftd.
    public var dns: DNSSettings?

    public init(outboundPort: UInt16 = 15001, mark: UInt32 = 0x5746, connectTimeout: TimeAmount = .seconds(3),
                idleTimeout: TimeAmount = .hours(1), backlog: Int32 = 4096, tunnelPort: Int = 15008,
                dns: DNSSettings? = nil) {
        self.outboundPort = outboundPort
        self.dns = dns
        self.tunnelPort = tunnelPort
        self.mark = mark
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.backlog = backlog
    }
}

/// The node proxy's L4 path: accepts captured connections, learns from the
/// kernel where each was going and which workload dialled, connects there
/// and relays bytes both ways.
public final class NodeProxy: Sendable {
    let group: MultiThreadedEventLoopGroup
    let blockingPool: NIOThreadPool
    let resolver: any CapturedConnectionResolver
    let workloads: any WorkloadResolver
    public let services = ServiceDirectory()
    /// Every workload of the mesh: decides local, tunnelled or plain.
    public let mesh = MeshTable()
    /// Service ports routed at L7 (an HTTPRoute attaches to them).
    public let httpRoutes = HTTPRouteTable()
    /// Services' traffic policies (DestinationRule).
    public let trafficPolicies = TrafficPolicyTable()
    /// AuthorizationPolicies of this node's workloads.
    public let authorization = AuthorizationTable()
    /// Open connections into this node's workloads, checked again when policies change.
    let live = LiveConnections()
    /// This node's workload certificates and the mesh's trust bundle.
    public let credentials = TunnelCredentials()
    let config: ProxyConfiguration
    let logger: Logger
    public let stats = ProxyStats()
    /// Istio's metrics, access logs and traces.
    public let telemetry: Telemetry
    /// The DNS server for meshed workloads, when enabled.
    public let dns: DNSService?
    let pool: TunnelPool
    private let inboundContextCache = Mutex<(roots: Int, context: NIOSSLContext)?>(nil)
    private let inboundServer = Mutex<InboundTunnelServer?>(nil)

    public init(config: ProxyConfiguration, resolver: any CapturedConnectionResolver, workloads: any WorkloadResolver,
                threads: Int = Int(weft_affinity_cpu_count()), telemetry: Telemetry = .metricsOnly(), logger: Logger) {
        self.config = config
        self.telemetry = telemetry
        self.resolver = resolver
        self.workloads = workloads
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        EventLoopPriority.matchProcess(group, logger: logger)
        // Connects made inside a workload's own netns block a thread until
        // they complete (NIO cannot adopt a socket that is still connecting).
        self.blockingPool = NIOThreadPool(numberOfThreads: 4)
        self.blockingPool.start()
        self.pool = TunnelPool(credentials: credentials, mark: config.mark, connectTimeout: config.connectTimeout,
                               stats: stats, logger: logger)
        let loop = group.next()
        self.dns = config.dns.map { DNSService(settings: $0, loop: loop, mark: config.mark, logger: logger) }
    }

    /// Opens the HBONE listener (`tunnelPort`, all addresses of weftd's own
    /// network namespace). Until this node holds a workload certificate it
    /// accepts and closes: there is nothing it could present.
    public func listenForTunnels(netns: NetworkNamespace) async throws -> [String] {
        let server = InboundTunnelServer(proxy: self)
        let bound = try await server.listen(port: config.tunnelPort, netns: netns)
        inboundServer.withLock { $0 = server }
        return bound
    }

    /// The server context for inbound tunnels, rebuilt when the trust bundle changes.
    func inboundContext() throws -> NIOSSLContext? {
        let roots = credentials.rootsVersion
        if let cached = inboundContextCache.withLock({ $0 }), cached.roots == roots { return cached.context }
        let mesh = self.mesh
        let credentials = self.credentials
        guard let context = try credentials.serverContext(choose: { serverName in
            let directory = mesh.current
            if let serverName, let id = directory.identity(forServerName: serverName) { return id }
            // A client without a server name gets this node's identity when
            // there is exactly one to choose from.
            let held = Set(credentials.identities).intersection(directory.localIdentities)
            return held.count == 1 ? held.first : nil
        }) else { return nil }
        inboundContextCache.withLock { $0 = (roots, context) }
        return context
    }

    /// Opens the outbound listeners (127.0.0.1 and ::1) inside `netns`.
    /// IPv6 is optional: a namespace without ::1 gets the IPv4 listener only,
    /// and its IPv6 connections are refused rather than let through.
    public func listen(in netns: NetworkNamespace) async throws -> ProxyListeners {
        var channels: [any Channel] = []
        var addresses: [String] = []
        do {
            for (family, addr) in [(AF_INET, IPAddress(ipv4: 127, 0, 0, 1)), (AF_INET6, IPAddress("::1")!)] {
                let fd = try netns.makeSocket(family: family, type: Int32(SOCK_STREAM.rawValue))
                let rc = addr.bytes.withUnsafeBufferPointer {
                    weft_bind_listen(fd, family, $0.baseAddress, config.outboundPort, config.backlog)
                }
                if rc != 0 {
                    close(fd)
                    if family == AF_INET6 {
                        logger.warning("no IPv6 proxy listener; IPv6 connections from this namespace will be refused",
                                       metadata: ["netns": "\(netns)", "error": "\(String(cString: strerror(-rc)))"])
                        continue
                    }
                    throw ProxyError.system("listen on 127.0.0.1:\(config.outboundPort) in \(netns) (is another weftd running for this namespace?)", -rc)
                }
                let channel = try await makeServerBootstrap(netns: netns).withBoundSocket(fd).get()
                channels.append(channel)
                addresses.append(family == AF_INET ? "127.0.0.1:\(config.outboundPort)" : "[::1]:\(config.outboundPort)")
            }
            if let dns {
                let udp = try await dns.listen(in: netns, group: group)
                channels += udp
                addresses += udp.compactMap { $0.localAddress.map { "udp \($0.ipAddress ?? "?"):\($0.port ?? 0)" } }
            }
        } catch {
            for c in channels { try? await c.close() }
            throw error
        }
        return ProxyListeners(netns: netns, channels: channels, addresses: addresses)
    }

    public func shutdown() async {
        if let server = inboundServer.withLock({ $0 }) { await server.close() }
        try? await group.shutdownGracefully()
        try? await blockingPool.shutdownGracefully()
    }

    /// How much a socket read asks for: up to 256 KiB while a connection keeps
    /// filling its reads (a bulk transfer, as through the tunnel), so each byte
    /// costs fewer reads and fewer passes through the pipeline and the TLS and
    /// HTTP/2 handlers than with NIO's 64 KiB ceiling. A connection of small
    /// messages stays at a few KiB: the size follows what reads returned.
    static let reads = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 * 1024)

    private func makeServerBootstrap(netns: NetworkNamespace) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: NodeProxy.reads)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        CapturedConnectionHandler(proxy: self, netns: netns))
                }
            }
    }

    /// Connects to the original destination from the namespace the workload
    /// dialled in, so its routes apply, with the proxy's mark.
    func connectUpstream(to dst: OriginalDestination, netns: NetworkNamespace, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: NodeProxy.reads)
        let family = dst.address.isIPv4 ? AF_INET : AF_INET6
        let timeoutMs = Int32(clamping: config.connectTimeout.nanoseconds / 1_000_000)
        let mark = config.mark
        if netns.isNode {
            return bootstrap
                .channelOption(.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_MARK)),
                               value: SocketOptionValue(Int32(bitPattern: mark)))
                .connectTimeout(config.connectTimeout)
                .connect(to: SocketAddress(dst.address, port: dst.port))
                .flatMapErrorThrowing { error in
                    if let e = error as? IOError { throw UpstreamConnectError(destination: dst, errno: e.errnoCode) }
                    if error is ChannelError { throw UpstreamConnectError(destination: dst, errno: ETIMEDOUT) }
                    throw error
                }
        }
        // In a workload's namespace the socket is made there, marked and
        // connected on a pool thread, then handed to NIO.
        return blockingPool.runIfActive(eventLoop: eventLoop) { () throws -> Int32 in
            let fd = try netns.makeSocket(family: family, type: Int32(SOCK_STREAM.rawValue))
            var rc = weft_set_mark(fd, mark)
            if rc == 0 {
                rc = dst.address.bytes.withUnsafeBufferPointer {
                    weft_connect_timeout(fd, family, $0.baseAddress, dst.port, timeoutMs)
                }
            }
            if rc != 0 {
                close(fd)
                throw UpstreamConnectError(destination: dst, errno: -rc)
            }
            return fd
        }.flatMap { fd in
            ClientBootstrap(group: eventLoop)
                .channelOption(.autoRead, value: false)
                .channelOption(.allowRemoteHalfClosure, value: true)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.recvAllocator, value: NodeProxy.reads)
                .withConnectedSocket(fd)
        }
    }
}

public struct UpstreamConnectError: Error, CustomStringConvertible {
    public var destination: OriginalDestination
    public var errno: Int32

    public var description: String {
        let reason = String(cString: strerror(errno))
        if errno == ETIMEDOUT {
            return "connect to \(destination) timed out: is the destination up, and is a firewall dropping traffic to it?"
        }
        return "connect to \(destination): \(reason)"
    }
}

/// The mesh directory the proxy reads per connection, replaced whole by the
/// agent when a snapshot arrives.
public final class MeshTable: Sendable {
    private let directory = Mutex(MeshDirectory())
    public init() {}
    public func replace(_ d: MeshDirectory) { directory.withLock { $0 = d } }
    public var current: MeshDirectory { directory.withLock { $0 } }
}

/// The proxy's listeners in one network namespace.
public final class ProxyListeners: Sendable {
    public let netns: NetworkNamespace
    let channels: [any Channel]
    public let addresses: [String]

    init(netns: NetworkNamespace, channels: [any Channel], addresses: [String]) {
        self.netns = netns
        self.channels = channels
        self.addresses = addresses
    }

    public func close() async {
        for c in channels { try? await c.close() }
    }
}

extension SocketAddress {
    init(_ ip: IPAddress, port: UInt16) {
        if let v4 = ip.ipv4Bytes {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: v4) }
            self.init(sin)
        } else {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: ip.bytes) }
            self.init(sin6)
        }
    }

    /// The address in the 16-byte form the eBPF maps use.
    var weftIPAddress: IPAddress? {
        switch self {
        case .v4(let a):
            var addr = a.address.sin_addr
            let b = withUnsafeBytes(of: &addr) { Array($0) }
            return IPAddress(ipv4: b[0], b[1], b[2], b[3])
        case .v6(let a):
            var addr = a.address.sin6_addr
            return IPAddress(mapped: withUnsafeBytes(of: &addr) { Array($0) })
        default:
            return nil
        }
    }
}

/// The event loops at the process's own priority.
///
/// A thread takes the nice value of the thread that makes it, and the loops
/// are made from a Swift concurrency thread, whose nice value libdispatch sets
/// from its QoS class (0 for the default class). So a weftd started with
/// `nice -n -20`, or under a unit with `Nice=`, ran its data path at 0 all the
/// same: in the benchmark, below the nginx and Envoy it was measured beside,
/// both at -20. Each loop now takes the process's value as it starts.
enum EventLoopPriority {
    static func matchProcess(_ group: MultiThreadedEventLoopGroup, logger: Logger? = nil) {
        let nice = weft_process_nice()
        guard nice != -100 else { return }
        for loop in group.makeIterator() {
            loop.execute {
                let rc = weft_thread_set_nice(nice)
                guard rc != 0 else { return }
                logger?.warning("an event loop kept its nice value instead of the process's (is CAP_SYS_NICE missing?)",
                                metadata: ["process": "\(nice)", "loop": "\(weft_thread_nice())", "errno": "\(-rc)"])
            }
        }
    }
}
