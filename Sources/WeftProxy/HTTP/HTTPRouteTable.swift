import Synchronization
import WeftCore
import WeftHTTP

/// Which Service ports are routed at L7: those an HTTPRoute attaches to
/// (GAMMA: a parentRef to the Service). Every other port stays L4. Replaced
/// whole when a snapshot arrives.
public final class HTTPRouteTable: Sendable {
    struct Port: Sendable {
        var namespace: String
        var service: String
        var port: UInt16
        var routes: CompiledRoutes
    }

    struct State: Sendable {
        var byVIP: [ServiceTable.Key: Port] = [:]
        /// Ports that declare no protocol (`auto`) and have no route: HTTP when the client's
        /// first bytes say so (then as if a route sent everything to the Service), else TCP.
        var detected: [ServiceTable.Key: Port] = [:]
        /// A backendRef names a Service and port; the proxy dials its virtual IP.
        var vipByName: [String: IPAddress] = [:]
        /// A workload's address and port → the Service it serves there (the
        /// first by name, when several select it): the destination proxy's
        /// `destination_service`.
        var serviceByEndpoint: [ServiceTable.Key: (namespace: String, name: String)] = [:]
        /// FaultInjections by `namespace/name`.
        var faults: [String: FaultInjectionSpec] = [:]
        /// A workload's first address, by `namespace/name`: its x-forwarded-for.
        var addressByWorkload: [String: String] = [:]
        /// Ports this node's workloads declare `http2` or `grpc`: the proxy speaks HTTP/2 to them.
        var http2Ports: [WorkloadRef: Set<UInt16>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public func replace(_ snapshot: NodeSnapshot) {
        let routes = RouteSource.all(in: snapshot)
        var s = State()
        for f in snapshot.faultInjections ?? [] {
            // One that does not decode is left out: a route naming it answers 500, never forwards unfaulted.
            if case .faultInjection(let spec)? = f.decodedSpec {
                s.faults["\(f.namespace)/\(f.name)"] = spec
            }
        }
        for p in snapshot.peers ?? [] {
            if let a = p.addresses.first { s.addressByWorkload["\(p.namespace)/\(p.name)"] = a }
        }
        for w in snapshot.workloads {
            let ports = w.ports.filter { AppProtocol(snapshotValue: $0.protocol_)?.isHTTP2 == true }.compactMap { UInt16(exactly: $0.port) }
            guard !ports.isEmpty, let ns = try? NamespaceName(w.namespace), let name = try? WorkloadName(w.name) else { continue }
            s.http2Ports[WorkloadRef(namespace: ns, name: name)] = Set(ports)
        }
        for svc in snapshot.services {
            guard let vip = IPAddress(svc.virtualIP) else { continue }
            s.vipByName["\(svc.namespace)/\(svc.name)"] = vip
            for p in svc.ports {
                if let target = UInt16(exactly: p.targetPort ?? p.port) {
                    for e in svc.endpoints {
                        for a in e.addresses {
                            guard let ip = IPAddress(a) else { continue }
                            let key = ServiceTable.Key(address: ip, port: target)
                            if let held = s.serviceByEndpoint[key], (held.namespace, held.name) < (svc.namespace, svc.name) { continue }
                            s.serviceByEndpoint[key] = (svc.namespace, svc.name)
                        }
                    }
                }
                guard let port = UInt16(exactly: p.port) else { continue }
                var compiled = CompiledRoutes(routes: routes, namespace: svc.namespace, service: svc.name, port: port, portName: p.name)
                let declared = AppProtocol(snapshotValue: p.protocol_)
                if compiled.isEmpty, declared?.isHTTP == true || declared == .auto {
                    // A port declared HTTP, HTTP/2 or gRPC is handled at L7 without a route too
                    // (requests reported, retried by none, HTTP/2 and gRPC understood), as if a
                    // route sent every request to the Service itself. Istio treats declared ports so;
                    // an undeclared one only once its first bytes turn out to be HTTP.
                    let implicit = CompiledRoutes(routes: [Self.implicitRoute(namespace: svc.namespace, service: svc.name, port: port)],
                                                  namespace: svc.namespace, service: svc.name, port: port, portName: p.name)
                    if declared == .auto {
                        s.detected[ServiceTable.Key(address: vip, port: port)] = Port(namespace: svc.namespace, service: svc.name,
                                                                                    port: port, routes: implicit)
                        continue
                    }
                    compiled = implicit
                }
                if !compiled.isEmpty {
                    s.byVIP[ServiceTable.Key(address: vip, port: port)] = Port(namespace: svc.namespace, service: svc.name,
                                                                             port: port, routes: compiled)
                }
            }
        }
        state.withLock { $0 = s }
    }

    func routes(for address: IPAddress, port: UInt16) -> Port? {
        state.withLock { $0.byVIP[ServiceTable.Key(address: address, port: port)] }
    }

    /// An undeclared Service port: L7 if the connection's first bytes are HTTP.
    func detectedRoutes(for address: IPAddress, port: UInt16) -> Port? {
        state.withLock { $0.detected[ServiceTable.Key(address: address, port: port)] }
    }

    func service(ofEndpoint address: IPAddress, port: UInt16) -> (namespace: String, name: String)? {
        state.withLock { $0.serviceByEndpoint[ServiceTable.Key(address: address, port: port)] }
    }

    func fault(namespace: String, name: String) -> FaultInjectionSpec? {
        state.withLock { $0.faults["\(namespace)/\(name)"] }
    }

    /// A workload's address, by `namespace/name` (a router keeps the key rather than build it per request).
    func address(key: String) -> String? {
        state.withLock { $0.addressByWorkload[key] }
    }

    /// The route a declared HTTP port without an HTTPRoute gets: everything to the Service.
    static func implicitRoute(namespace: String, service: String, port: UInt16) -> RouteSource {
        let backend = HTTPRouteSpec.BackendRef(backend: .init(name: service, port: port))
        return RouteSource(namespace: namespace, name: "\(service)-\(port)-default", creationTimestamp: "",
                           spec: HTTPRouteSpec(parentRefs: [.init(name: service, port: port)],
                                               rules: [HTTPRouteSpec.Rule(backendRefs: [backend])]))
    }

    func speaksHTTP2(_ workload: WorkloadRef, port: UInt16) -> Bool {
        state.withLock { $0.http2Ports[workload]?.contains(port) == true }
    }

    func virtualIP(namespace: String, service: String) -> IPAddress? {
        virtualIP(key: "\(namespace)/\(service)")
    }

    /// By `namespace/name`.
    func virtualIP(key: String) -> IPAddress? {
        state.withLock { $0.vipByName[key] }
    }
}
