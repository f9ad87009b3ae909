import Synchronization
import WeftCore

/// Counters the admin API reads. Atomics on the data path; the per-workload
/// table takes a lock once per connection, never per byte.
public final class ProxyStats: Sendable {
    public let accepted = Atomic<Int>(0)
    public let active = Atomic<Int>(0)
    public let noOriginalDestination = Atomic<Int>(0)
    public let upstreamConnectFailures = Atomic<Int>(0)
    public let unknownWorkload = Atomic<Int>(0)
    /// Connections to a service with no endpoint that answered (Envoy's UH/UF).
    public let noHealthyEndpoint = Atomic<Int>(0)
    public let bytesFromWorkloads = Atomic<Int>(0)
    public let bytesToWorkloads = Atomic<Int>(0)
    /// HBONE: outbound tunnel connections opened and streams carried.
    public let tunnelsOpened = Atomic<Int>(0)
    public let outboundStreams = Atomic<Int>(0)
    /// Handshakes that failed either way (wrong CA or trust domain, expired,
    /// plaintext, wrong identity).
    public let handshakeFailures = Atomic<Int>(0)
    public let inboundTunnels = Atomic<Int>(0)
    public let inboundStreams = Atomic<Int>(0)
    /// Inbound tunnels or streams refused (no certificate to present, peer
    /// not trusted, destination not a meshed workload of this node).
    public let inboundRefused = Atomic<Int>(0)
    /// HTTP requests no route matched (404, response flag NR).
    public let httpNoRoute = Atomic<Int>(0)
    /// HTTP retries made (HTTPRoute retry), and requests mirrored.
    public let httpRetries = Atomic<Int>(0)
    public let httpMirrored = Atomic<Int>(0)
    /// WebSocket upgrades the backend accepted (the connections became a byte relay).
    public let httpUpgrades = Atomic<Int>(0)
    /// Connections to undeclared (`auto`) ports, by what their first bytes were.
    public let detectedHTTP = Atomic<Int>(0)
    public let detectedTCP = Atomic<Int>(0)

    func protocolDetected(http: Bool) {
        if http {
            detectedHTTP.add(1, ordering: .relaxed)
        } else {
            detectedTCP.add(1, ordering: .relaxed)
        }
    }
    /// Requests or connections refused by a Service's circuit breaker (Envoy's UO).
    public let circuitBreakerOverflow = Atomic<Int>(0)
    private let byWorkload = Mutex<[WorkloadRef: Int]>([:])
    private let authorizations = Mutex<[AuthorizationCount.Key: Int]>([:])
    private let pairs = Mutex<[IdentityPairKey: Int]>([:])

    public enum Direction: String, Sendable, Codable { case inbound, outbound }
    public enum Path: String, Sendable, Codable { case local, hbone }

    struct IdentityPairKey: Hashable {
        var direction: Direction
        var path: Path
        var source: String
        var destination: String
    }

    /// Connections by source and destination identity: what policy and
    /// telemetry are given for each connection (the peer's identity comes
    /// from its certificate across nodes, from the dialling cgroup on one node).
    /// Bounded, so that a churn of identities cannot grow it for ever.
    func recordPair(direction: Direction, path: Path, source: String, destination: String) {
        pairs.withLock { p in
            let key = IdentityPairKey(direction: direction, path: path, source: source, destination: destination)
            if p[key] == nil && p.count >= 10_000 { return }
            p[key, default: 0] += 1
        }
    }

    public init() {}

    /// AuthorizationPolicy outcomes worth counting (denials, audits), by
    /// destination workload.
    func countAuthorization(namespace: String, workload: String, decision: String, protocol: String) {
        authorizations.withLock { a in
            let key = AuthorizationCount.Key(namespace: namespace, workload: workload, decision: decision, protocol: `protocol`)
            if a[key] == nil && a.count >= 10_000 { return }
            a[key, default: 0] += 1
        }
    }

    public struct AuthorizationCount: Sendable, Codable {
        struct Key: Hashable {
            var namespace: String
            var workload: String
            var decision: String
            var `protocol`: String
        }
        public var namespace: String
        public var workload: String
        /// `deny` or `audit`.
        public var decision: String
        /// `tcp` or `http`.
        public var `protocol`: String
        public var count: Int
    }

    func countConnection(from workload: WorkloadRef?) {
        accepted.add(1, ordering: .relaxed)
        guard let workload else {
            unknownWorkload.add(1, ordering: .relaxed)
            return
        }
        byWorkload.withLock { $0[workload, default: 0] += 1 }
    }

    public func connections(by workload: WorkloadRef) -> Int {
        byWorkload.withLock { $0[workload] ?? 0 }
    }

    public struct Snapshot: Sendable, Codable {
        public var accepted: Int
        public var active: Int
        public var noOriginalDestination: Int
        public var upstreamConnectFailures: Int
        public var unknownWorkload: Int
        public var noHealthyEndpoint: Int
        public var tunnelsOpened: Int
        public var outboundStreams: Int
        public var handshakeFailures: Int
        public var inboundTunnels: Int
        public var inboundStreams: Int
        public var inboundRefused: Int
        public var httpNoRoute: Int
        public var httpRetries: Int
        public var httpMirrored: Int
        public var httpUpgrades: Int
        public var detectedHTTP: Int
        public var detectedTCP: Int
        public var circuitBreakerOverflow: Int
        public var identities: [IdentityPair]
        public var authorization: [AuthorizationCount]
    }

    public struct IdentityPair: Sendable, Codable {
        public var direction: Direction
        public var path: Path
        public var source: String
        public var destination: String
        public var connections: Int
    }

    public func snapshot() -> Snapshot {
        Snapshot(
            accepted: accepted.load(ordering: .relaxed),
            active: active.load(ordering: .relaxed),
            noOriginalDestination: noOriginalDestination.load(ordering: .relaxed),
            upstreamConnectFailures: upstreamConnectFailures.load(ordering: .relaxed),
            unknownWorkload: unknownWorkload.load(ordering: .relaxed),
            noHealthyEndpoint: noHealthyEndpoint.load(ordering: .relaxed),
            tunnelsOpened: tunnelsOpened.load(ordering: .relaxed),
            outboundStreams: outboundStreams.load(ordering: .relaxed),
            handshakeFailures: handshakeFailures.load(ordering: .relaxed),
            inboundTunnels: inboundTunnels.load(ordering: .relaxed),
            inboundStreams: inboundStreams.load(ordering: .relaxed),
            inboundRefused: inboundRefused.load(ordering: .relaxed),
            httpNoRoute: httpNoRoute.load(ordering: .relaxed),
            httpRetries: httpRetries.load(ordering: .relaxed),
            httpMirrored: httpMirrored.load(ordering: .relaxed),
            httpUpgrades: httpUpgrades.load(ordering: .relaxed),
            detectedHTTP: detectedHTTP.load(ordering: .relaxed),
            detectedTCP: detectedTCP.load(ordering: .relaxed),
            circuitBreakerOverflow: circuitBreakerOverflow.load(ordering: .relaxed),
            identities: pairs.withLock { p in
                p.map { IdentityPair(direction: $0.key.direction, path: $0.key.path, source: $0.key.source,
                                     destination: $0.key.destination, connections: $0.value) }
            }.sorted { ($0.direction.rawValue, $0.source, $0.destination) < ($1.direction.rawValue, $1.source, $1.destination) },
            authorization: authorizations.withLock { a in
                a.map { AuthorizationCount(namespace: $0.key.namespace, workload: $0.key.workload, decision: $0.key.decision,
                                           protocol: $0.key.protocol, count: $0.value) }
            }.sorted { ($0.namespace, $0.workload, $0.decision, $0.protocol) < ($1.namespace, $1.workload, $1.decision, $1.protocol) })
    }
}
