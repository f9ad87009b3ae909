import WeftCore

/// The resources a node snapshot is made of, read from the store once per
/// snapshot version and shared by every node asking for that version.
struct ClusterView: Sendable {
    var version: Int64
    var namespaces: [Resource]
    var workloads: [Resource]
    var services: [Resource]
    var routes: [Resource] = []
    /// AuthorizationPolicies and PeerAuthentications.
    var policies: [Resource] = []
    var faultInjections: [Resource] = []
    var destinationRules: [Resource] = []
}

/// Builds the snapshot one node receives (docs/control-api.md, "Node snapshot").
/// Pure, so the selection rules are unit-tested.
enum NodeSnapshotBuilder {
    static func build(_ view: ClusterView, node: String, trustDomain: String) -> NodeSnapshot {
        let namespaces = view.namespaces.compactMap { r -> NodeSnapshot.Namespace? in
            guard case .namespace(let spec) = r.spec else { return nil }
            return NodeSnapshot.Namespace(name: r.metadata.name, mesh: spec.meshEnabled)
        }
        var workloads: [NodeSnapshot.Workload] = []
        for r in view.workloads {
            guard case .workload(let spec) = r.spec, spec.node == node, let ns = r.metadata.namespace else { continue }
            var unit: String?
            var cgroup: String?
            switch spec.placement {
            case .unit(let u): unit = u
            case .cgroup(let c): cgroup = c
            }
            workloads.append(NodeSnapshot.Workload(
                namespace: ns.rawValue, name: r.metadata.name, node: spec.node, unit: unit, cgroup: cgroup,
                netns: spec.netns, serviceAccount: spec.serviceAccount, labels: r.metadata.labels,
                addresses: spec.addresses.map(\.description),
                ports: spec.ports.map { NodeSnapshot.Port(name: $0.name, port: Int($0.port), protocol_: $0.appProtocol.rawValue) }))
        }
        var services: [NodeSnapshot.Service] = []
        for r in view.services {
            guard case .service(let spec) = r.spec, let ns = r.metadata.namespace, let vip = spec.virtualIP else { continue }
            let selected = view.workloads.filter { w in
                guard w.metadata.namespace == ns else { return false }
                return spec.selector.allSatisfy { w.metadata.labels[$0.key] == $0.value }
            }
            let endpoints = selected.compactMap { w -> NodeSnapshot.Endpoint? in
                guard case .workload(let ws) = w.spec else { return nil }
                return NodeSnapshot.Endpoint(workload: w.metadata.name, node: ws.node, addresses: ws.addresses.map(\.description))
            }
            let ports = spec.ports.map { p in
                NodeSnapshot.Port(name: p.name, port: Int(p.port), targetPort: targetPort(p, of: selected), protocol_: p.appProtocol.rawValue)
            }
            services.append(NodeSnapshot.Service(namespace: ns.rawValue, name: r.metadata.name, virtualIP: vip.description,
                                                 ports: ports, endpoints: endpoints))
        }
        let meshed = Set(namespaces.filter(\.mesh).map(\.name))
        var peers: [NodeSnapshot.Peer] = []
        for r in view.workloads {
            guard case .workload(let spec) = r.spec, let ns = r.metadata.namespace else { continue }
            peers.append(NodeSnapshot.Peer(
                namespace: ns.rawValue, name: r.metadata.name, node: spec.node, serviceAccount: spec.serviceAccount,
                mesh: meshed.contains(ns.rawValue), addresses: spec.addresses.map(\.description),
                ports: spec.ports.map { Int($0.port) },
                labels: r.metadata.labels.isEmpty ? nil : r.metadata.labels))
        }
        return NodeSnapshot(
            version: view.version, node: node, trustDomain: trustDomain,
            namespaces: namespaces.sorted { $0.name < $1.name },
            workloads: workloads.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) },
            services: services.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) },
            peers: peers.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) },
            routes: view.routes.compactMap { r -> NodeSnapshot.Route? in
                guard case .httpRoute = r.spec, let ns = r.metadata.namespace else { return nil }
                return NodeSnapshot.Route(namespace: ns.rawValue, name: r.metadata.name,
                                          creationTimestamp: r.metadata.creationTimestamp, spec: r.encode()["spec"] ?? .object([:]))
            }.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) },
            policies: view.policies.compactMap { r -> NodeSnapshot.Policy? in
                guard let ns = r.metadata.namespace else { return nil }
                switch r.spec {
                case .authorizationPolicy, .peerAuthentication: break
                default: return nil
                }
                return NodeSnapshot.Policy(kind: r.spec.kind.rawValue, namespace: ns.rawValue, name: r.metadata.name,
                                           spec: r.encode()["spec"] ?? .object([:]))
            }.sorted { ($0.kind, $0.namespace, $0.name) < ($1.kind, $1.namespace, $1.name) },
            faultInjections: view.faultInjections.compactMap { r -> NodeSnapshot.Policy? in
                guard case .faultInjection = r.spec, let ns = r.metadata.namespace else { return nil }
                return NodeSnapshot.Policy(kind: r.spec.kind.rawValue, namespace: ns.rawValue, name: r.metadata.name,
                                           spec: r.encode()["spec"] ?? .object([:]))
            }.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) },
            destinationRules: view.destinationRules.compactMap { r -> NodeSnapshot.Policy? in
                guard case .destinationRule = r.spec, let ns = r.metadata.namespace else { return nil }
                return NodeSnapshot.Policy(kind: r.spec.kind.rawValue, namespace: ns.rawValue, name: r.metadata.name,
                                           spec: r.encode()["spec"] ?? .object([:]))
            }.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) })
    }

    /// The snapshot carries one number per port. A named target port is resolved
    /// through the selected workloads' port names; when they disagree (or none
    /// names it) the number is left out and the agent falls back to `port`.
    static func targetPort(_ port: ServiceSpec.Port, of workloads: [Resource]) -> Int? {
        switch port.targetPort {
        case nil: return Int(port.port)
        case .number(let n)?: return Int(n)
        case .name(let name)?:
            let numbers = Set(workloads.compactMap { w -> UInt16? in
                guard case .workload(let ws) = w.spec else { return nil }
                return ws.ports.first { $0.name == name }?.port
            })
            return numbers.count == 1 ? numbers.first.map { Int($0) } : nil
        }
    }
}
