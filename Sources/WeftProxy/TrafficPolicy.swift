import Foundation
import NIOCore
import Synchronization
import WeftCore

/// Services' traffic policies (DestinationRule) as the source node's proxy
/// applies them: which endpoint a request or connection goes to (round robin,
/// power of two choices, random, rendezvous hashing on a header or cookie),
/// which endpoints are ejected for failing (outlier detection), and how much
/// may be in flight (circuit breaking). State is per node proxy, as in Envoy.
public final class TrafficPolicyTable: Sendable {
    private let services = Mutex<[String: ServiceTraffic]>([:])

    public init() {}

    /// From a snapshot's DestinationRules. A Service keeps its counters and
    /// ejections across snapshots while its policy is unchanged.
    public func replace(_ snapshot: NodeSnapshot) {
        var specs: [String: DestinationRuleSpec.TrafficPolicy] = [:]
        for r in (snapshot.destinationRules ?? []).sorted(by: { ($0.namespace, $0.name) < ($1.namespace, $1.name) }) {
            guard case .destinationRule(let spec)? = r.decodedSpec,
                  let service = spec.serviceName(namespace: r.namespace) else { continue }
            // Several rules for one Service: the first by name wins (Istio merges; Weft does not guess).
            let key = "\(r.namespace)/\(service)"
            if specs[key] == nil { specs[key] = spec.trafficPolicy }
        }
        services.withLock { held in
            var next: [String: ServiceTraffic] = [:]
            for (key, policy) in specs {
                if let old = held[key], old.policy == policy { next[key] = old } else { next[key] = ServiceTraffic(policy: policy) }
            }
            held = next
        }
    }

    /// The policy of Service `namespace/name`, if it has one.
    func service(_ name: String) -> ServiceTraffic? {
        services.withLock { $0[name] }
    }
}

/// One Service's traffic policy and live state.
final class ServiceTraffic: Sendable {
    let policy: DestinationRuleSpec.TrafficPolicy

    struct Health {
        var consecutive5xx = 0
        var consecutiveGateway = 0
        var ejections = 0
        var ejectedUntil: NIODeadline?
    }

    struct State {
        var health: [String: Health] = [:]
        /// Requests or connections in flight, per endpoint (for least request) and in all.
        var activeByEndpoint: [String: Int] = [:]
        var active = 0
        /// Requests waiting for room (circuit breaking), in order.
        var pending: [@Sendable (Bool) -> Void] = []
    }

    private let state = Mutex(State())

    init(policy: DestinationRuleSpec.TrafficPolicy) {
        self.policy = policy
    }

    /// How many may be in flight at once (maxConnections and
    /// http2MaxRequests; each request has its own upstream connection).
    var limit: Int? {
        let c = policy.connectionPool
        switch (c?.maxConnections, c?.http2MaxRequests) {
        case (let a?, let b?): return min(a, b)
        case (let a?, nil): return a
        case (nil, let b?): return b
        case (nil, nil): return nil
        }
    }

    /// Envoy's default for pending requests when a limit is set.
    var pendingLimit: Int { policy.connectionPool?.http1MaxPendingRequests ?? 1024 }

    // MARK: choosing

    /// Orders `endpoints` (already rotated for round robin) by the policy:
    /// the one to try first, then the rest. Ejected endpoints go last, in
    /// case every one is ejected (Envoy's panic threshold, at its extreme).
    func order(_ endpoints: [ServiceTable.Endpoint], hashKey: String?, now: NIODeadline = .now()) -> [ServiceTable.Endpoint] {
        guard endpoints.count > 1 else { return endpoints }
        var ordered = endpoints
        if case .some = policy.loadBalancer?.consistentHash, let hashKey {
            // Rendezvous hashing: the same key picks the same endpoint while
            // it is there, and only its keys move when one goes.
            ordered.sort { Self.score(hashKey, $0) > Self.score(hashKey, $1) }
        } else {
            switch policy.loadBalancer?.simple {
            case .random?:
                ordered.shuffle()
            case .leastRequest?:
                // Power of two choices: the less loaded of two picked at random.
                let a = Int.random(in: 0..<ordered.count)
                var b = Int.random(in: 0..<(ordered.count - 1))
                if b >= a { b += 1 }
                let load = state.withLock { s in (s.activeByEndpoint[ordered[a].description] ?? 0, s.activeByEndpoint[ordered[b].description] ?? 0) }
                let first = load.1 < load.0 ? b : a
                ordered.swapAt(0, first)
            case .roundRobin?, .unspecified?, nil:
                break
            }
        }
        let ejected = state.withLock { s in
            Set(ordered.filter { e in s.health[e.description]?.ejectedUntil.map { $0 > now } ?? false }.map(\.description))
        }
        if ejected.isEmpty { return ordered }
        return ordered.filter { !ejected.contains($0.description) } + ordered.filter { ejected.contains($0.description) }
    }

    static func score(_ key: String, _ e: ServiceTable.Endpoint) -> UInt64 {
        // FNV-1a over key and endpoint: stable across processes and nodes.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        h = (h ^ 0xff) &* 0x100_0000_01b3
        for b in e.description.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    // MARK: outcomes (outlier detection)

    enum Outcome { case success, serverError(Int), gatewayError }

    /// What one try at `endpoint` came to. Consecutive errors past a
    /// threshold eject it for baseEjectionTime times its ejections so far,
    /// unless maxEjectionPercent of the Service's endpoints are out already.
    func record(_ outcome: Outcome, endpoint: String, endpoints total: Int, now: NIODeadline = .now()) {
        guard let od = policy.outlierDetection else { return }
        state.withLock { s in
            var h = s.health[endpoint] ?? Health()
            switch outcome {
            case .success:
                h.consecutive5xx = 0
                h.consecutiveGateway = 0
            case .serverError(let code):
                h.consecutive5xx += 1
                if [502, 503, 504].contains(code) { h.consecutiveGateway += 1 } else { h.consecutiveGateway = 0 }
            case .gatewayError:
                h.consecutive5xx += 1
                h.consecutiveGateway += 1
            }
            let tripped = (od.consecutive5xxErrors.map { $0 > 0 && h.consecutive5xx >= $0 } ?? false)
                || (od.consecutiveGatewayErrors.map { $0 > 0 && h.consecutiveGateway >= $0 } ?? false)
            let alreadyOut = h.ejectedUntil.map { $0 > now } ?? false
            if tripped, !alreadyOut {
                let out = s.health.values.filter { $0.ejectedUntil.map { $0 > now } ?? false }.count
                if Double(out + 1) <= Double(max(total, 1)) * Double(od.maxEjectionPercent) / 100 {
                    h.ejections += 1
                    h.ejectedUntil = now + .milliseconds(od.baseEjectionTime.milliseconds * Int64(h.ejections))
                    h.consecutive5xx = 0
                    h.consecutiveGateway = 0
                }
            }
            s.health[endpoint] = h
        }
    }

    /// Endpoints ejected now (for /debug and metrics).
    func ejected(now: NIODeadline = .now()) -> [String] {
        state.withLock { s in s.health.filter { $0.value.ejectedUntil.map { $0 > now } ?? false }.map(\.key).sorted() }
    }

    // MARK: admission (circuit breaking)

    /// Asks for room for one request or connection. `admitted` is called
    /// with true at once or when room frees up, with false when the pending
    /// queue is full too (Envoy's UO).
    func admit(queue: Bool, _ admitted: @escaping @Sendable (Bool) -> Void) {
        guard let limit else {
            state.withLock { $0.active += 1 }
            return admitted(true)
        }
        let now: Bool? = state.withLock { s in
            if s.active < limit {
                s.active += 1
                return true
            }
            if queue, s.pending.count < pendingLimit {
                s.pending.append(admitted)
                return nil
            }
            return false
        }
        if let now { admitted(now) }
    }

    /// Room for one connection now, or none (connections do not wait).
    func tryAdmit() -> Bool {
        state.withLock { s in
            if let limit, s.active >= limit { return false }
            s.active += 1
            return true
        }
    }

    /// A request or connection admitted earlier is done: the next waiting one goes.
    func release() {
        let next: (@Sendable (Bool) -> Void)? = state.withLock { s in
            if !s.pending.isEmpty { return s.pending.removeFirst() }  // its slot passes on
            s.active = max(0, s.active - 1)
            return nil
        }
        next?(true)
    }

    func started(_ endpoint: String) {
        state.withLock { $0.activeByEndpoint[endpoint, default: 0] += 1 }
    }

    func finished(_ endpoint: String) {
        state.withLock { s in
            let n = (s.activeByEndpoint[endpoint] ?? 1) - 1
            s.activeByEndpoint[endpoint] = n > 0 ? n : nil
        }
    }

    var inFlight: Int { state.withLock { $0.active } }
}
