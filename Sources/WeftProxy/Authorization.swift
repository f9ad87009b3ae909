import Logging
import NIOCore
import Synchronization
import WeftCore
import WeftTelemetry

/// The AuthorizationPolicies of this node's workloads, as the destination
/// proxy enforces them. Replaced whole when a snapshot arrives; read per
/// connection and per request (one lock, a dictionary lookup).
public final class AuthorizationTable: Sendable {
    struct State: Sendable {
        var policies = SnapshotPolicies()
        var byWorkload: [WorkloadRef: WorkloadAuthorization] = [:]
        /// Ports a local workload declares as HTTP.
        var httpPorts: [WorkloadRef: Set<UInt16>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Returns whether the policies (or the workloads they apply to) changed,
    /// so that open connections must be checked again.
    @discardableResult
    public func replace(_ snapshot: NodeSnapshot) -> Bool {
        var s = State()
        s.policies = SnapshotPolicies(snapshot: snapshot)
        let meshed = Set(snapshot.namespaces.filter(\.mesh).map(\.name))
        for w in snapshot.workloads where w.node == snapshot.node && meshed.contains(w.namespace) {
            guard let ns = try? NamespaceName(w.namespace), let name = try? WorkloadName(w.name) else { continue }
            let ref = WorkloadRef(namespace: ns, name: name)
            s.byWorkload[ref] = s.policies.authorization(namespace: w.namespace, labels: w.labels)
            s.httpPorts[ref] = Set(w.ports.filter { AppProtocol(snapshotValue: $0.protocol_) == .http }
                .compactMap { UInt16(exactly: $0.port) })
        }
        return state.withLock { old in
            let changed = old.byWorkload != s.byWorkload
            old = s
            return changed
        }
    }

    /// The policies of a meshed workload of this node. A workload the
    /// snapshot does not list on this node gets its namespace's policies
    /// with no labels (selectors then never match it): a workload is never
    /// left unchecked for being unknown.
    func policies(for entry: MeshDirectory.Entry) -> WorkloadAuthorization {
        state.withLock { s in
            s.byWorkload[entry.ref] ?? s.policies.authorization(namespace: entry.ref.namespace.rawValue, labels: entry.labels)
        }
    }

    /// HTTP must be parsed at the destination for its rules to apply: the
    /// port is declared HTTP and a rule names an HTTP attribute.
    func parsesHTTP(_ entry: MeshDirectory.Entry, port: UInt16) -> Bool {
        state.withLock { s in
            guard s.httpPorts[entry.ref]?.contains(port) == true else { return false }
            return s.byWorkload[entry.ref]?.usesHTTPFields == true
        }
    }
}

/// What the destination proxy checks a connection's requests against: the
/// workload, and who is calling.
struct AuthorizationContext: Sendable {
    var destination: MeshDirectory.Entry
    /// SPIFFE ID: from the dialling cgroup (this node) or the verified peer
    /// certificate (another node). nil: no identity.
    var sourcePrincipal: String?
    var sourceIP: IPAddress?
    var destinationIP: IPAddress
    var destinationPort: UInt16

    func request(http: AuthorizationRequest.HTTP? = nil) -> AuthorizationRequest {
        AuthorizationRequest(sourcePrincipal: sourcePrincipal, sourceIP: sourceIP, destinationIP: destinationIP,
                             destinationPort: destinationPort, http: http)
    }
}

/// Open connections into this node's workloads, with what they were
/// authorized on, so that a policy change that denies one closes it.
final class LiveConnections: Sendable {
    final class Entry: Sendable {
        let context: AuthorizationContext
        /// The last request's HTTP attributes (nil: TCP).
        let http: Mutex<AuthorizationRequest.HTTP?>
        let close: @Sendable () -> Void

        init(context: AuthorizationContext, http: AuthorizationRequest.HTTP?, close: @escaping @Sendable () -> Void) {
            self.context = context
            self.http = Mutex(http)
            self.close = close
        }
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])

    /// Tracks `entry` until `channel` closes.
    func track(_ entry: Entry, until channel: any Channel) {
        let id = ObjectIdentifier(entry)
        entries.withLock { $0[id] = entry }
        channel.closeFuture.whenComplete { [weak self] _ in
            _ = self?.entries.withLock { $0.removeValue(forKey: id) }
        }
    }

    var count: Int { entries.withLock { $0.count } }

    /// Closes every connection the current policies deny; returns how many.
    func revoke(_ table: AuthorizationTable) -> [(Entry, AuthorizationDecision)] {
        let all = entries.withLock { Array($0.values) }
        var closed: [(Entry, AuthorizationDecision)] = []
        for e in all {
            let decision = table.policies(for: e.context.destination).evaluate(e.context.request(http: e.http.withLock { $0 }))
            if !decision.allowed {
                e.close()
                closed.append((e, decision))
            }
        }
        return closed
    }
}

extension NodeProxy {
    /// Checks a connection or request into `context.destination`, counting
    /// and logging the outcome. AUDIT matches are logged, never enforced.
    /// `http` is only built when the workload has policies.
    func authorize(_ context: AuthorizationContext, http makeHTTP: @autoclosure () -> AuthorizationRequest.HTTP? = nil) -> AuthorizationDecision {
        let policies = authorization.policies(for: context.destination)
        if policies.isEmpty { return .allowAll }
        let http = makeHTTP()
        let request = context.request(http: http)
        let decision = policies.evaluate(request)
        let ref = context.destination.ref
        let proto = http == nil ? "tcp" : "http"
        if !decision.allowed {
            stats.countAuthorization(namespace: ref.namespace.rawValue, workload: ref.name.rawValue, decision: "deny", protocol: proto)
            logger.info("denied by authorization policy", metadata: [
                "destination": "\(ref)", "source": "\(context.sourcePrincipal ?? "none")",
                "policy": "\(decision.deniedBy ?? "no ALLOW policy matched")",
                "port": "\(context.destinationPort)", "method": "\(http?.method ?? "-")", "path": "\(http?.path ?? "-")"])
        }
        if !decision.audited.isEmpty {
            stats.countAuthorization(namespace: ref.namespace.rawValue, workload: ref.name.rawValue, decision: "audit", protocol: proto)
            logger.notice("audited by authorization policy", metadata: [
                "destination": "\(ref)", "source": "\(context.sourcePrincipal ?? "none")",
                "policies": "\(decision.audited.joined(separator: ","))", "allowed": "\(decision.allowed)",
                "port": "\(context.destinationPort)", "method": "\(http?.method ?? "-")", "path": "\(http?.path ?? "-")"])
        }
        return decision
    }

    /// The meshed workload of this node a hop delivers to, if any.
    static func localMeshedDestination(_ hop: Hop) -> MeshDirectory.Entry? {
        if case .direct(_, let d?, _) = hop, d.mesh { return d }
        return nil
    }

    /// Hops whose destination (when it is a workload of this node) allows
    /// the connection; the first denial, when every hop was denied by one.
    func authorizedHops(_ hops: [Hop], sourcePrincipal: String?, sourceIP: IPAddress?,
                        http: @autoclosure () -> AuthorizationRequest.HTTP? = nil) -> (hops: [Hop], denied: AuthorizationDecision?) {
        // Made only once a hop is denied: when all pass (nearly always), `hops` is returned as it is.
        var kept: [Hop]?
        var denial: AuthorizationDecision?
        for (i, hop) in hops.enumerated() {
            guard let d = Self.localMeshedDestination(hop) else {
                kept?.append(hop)
                continue
            }
            let context = AuthorizationContext(destination: d, sourcePrincipal: sourcePrincipal, sourceIP: sourceIP,
                                               destinationIP: hop.target.address, destinationPort: hop.target.port)
            let decision = authorize(context, http: http())
            if decision.allowed {
                kept?.append(hop)
            } else {
                if kept == nil { kept = Array(hops[..<i]) }
                if denial == nil { denial = decision }
            }
        }
        let allowed = kept ?? hops
        return (allowed, allowed.isEmpty ? denial : nil)
    }

    /// After a snapshot: closes open connections the new policies deny.
    public func revokeDeniedConnections() {
        for (entry, decision) in live.revoke(authorization) {
            logger.info("closed an open connection a policy change denies", metadata: [
                "destination": "\(entry.context.destination.ref)", "source": "\(entry.context.sourcePrincipal ?? "none")",
                "policy": "\(decision.deniedBy ?? "no ALLOW policy matched")"])
        }
    }

    /// Counts PeerAuthentication's plaintext connections (PERMISSIVE or
    /// DISABLE) into a workload of this node: the kernel saw them, the proxy
    /// did not. Reported by the destination, with no source identity.
    public func recordPlaintextInbound(_ ref: WorkloadRef, connections: Int) {
        guard connections > 0, let entry = mesh.current.entry(ref) else { return }
        let traffic = TrafficLabels(reporter: .destination, source: .unknown, destination: peerLabels(entry),
                                    service: .unknown, requestProtocol: "tcp", security: .none)
        for _ in 0..<connections { _ = telemetry.metrics.openConnection(traffic) }
    }
}

/// Envoy's RBAC answer, byte for byte: clients and dashboards know it.
enum RBAC {
    static let deniedBody = "RBAC: access denied"
}
