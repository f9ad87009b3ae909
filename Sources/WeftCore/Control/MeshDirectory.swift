/// Every workload of the mesh by address, as the node proxy needs it to decide
/// how a connection travels: to a workload on this node directly, to a meshed
/// workload on another node through an HBONE tunnel (mutual TLS, the
/// destination's identity checked), to anything else as plain TCP.
public struct MeshDirectory: Sendable, Equatable {
    public struct Entry: Sendable, Hashable, CustomStringConvertible {
        public var ref: WorkloadRef
        public var node: String
        public var serviceAccount: String
        /// The namespace is meshed: traffic to it must be mutual TLS.
        public var mesh: Bool
        public var ports: Set<UInt16>
        /// `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`.
        public var identity: String
        /// The workload's labels: telemetry's app and version.
        public var labels: [String: String] = [:]

        public var description: String { "\(ref) (\(identity)) on \(node)" }
    }

    /// How a destination address and port resolve.
    public enum Lookup: Sendable, Equatable {
        /// No workload has this address: not a mesh destination.
        case external
        case workload(Entry)
        /// Several workloads with different identities share the address and
        /// none declares the port: the proxy cannot tell which identity the
        /// peer must present, so it refuses rather than guess.
        case ambiguous([Entry])
    }

    public private(set) var localNode: String
    public private(set) var trustDomain: String
    private var byAddress: [IPAddress: [Entry]] = [:]
    private var byRef: [WorkloadRef: Entry] = [:]

    public init(localNode: String = "", trustDomain: String = "") {
        self.localNode = localNode
        self.trustDomain = trustDomain
    }

    /// From a snapshot's `peers`. Entries whose names or addresses do not
    /// parse are left out (the control API validated them; a malformed one
    /// is not guessed at).
    public init(snapshot: NodeSnapshot) {
        self.init(localNode: snapshot.node, trustDomain: snapshot.trustDomain)
        for p in snapshot.peers ?? [] {
            guard let ns = try? NamespaceName(p.namespace), let name = try? WorkloadName(p.name) else { continue }
            let entry = Entry(
                ref: WorkloadRef(namespace: ns, name: name), node: p.node, serviceAccount: p.serviceAccount,
                mesh: p.mesh, ports: Set(p.ports.compactMap { UInt16(exactly: $0) }),
                identity: Self.identity(trustDomain: snapshot.trustDomain, namespace: p.namespace, serviceAccount: p.serviceAccount),
                labels: p.labels ?? [:])
            byRef[entry.ref] = entry
            for a in p.addresses {
                if let ip = IPAddress(a) { byAddress[ip, default: []].append(entry) }
            }
        }
    }

    public static func identity(trustDomain: String, namespace: String, serviceAccount: String) -> String {
        "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)"
    }

    public var isEmpty: Bool { byRef.isEmpty }

    public func entry(_ ref: WorkloadRef) -> Entry? { byRef[ref] }

    /// The workload behind `address:port`. Workloads declaring the port win;
    /// without one, the address decides when all its workloads share one
    /// identity and node.
    public func lookup(_ address: IPAddress, port: UInt16) -> Lookup {
        guard let all = byAddress[address], !all.isEmpty else { return .external }
        let declaring = all.filter { $0.ports.contains(port) }
        let candidates = declaring.isEmpty ? all : declaring
        let first = candidates[0]
        if candidates.allSatisfy({ $0.identity == first.identity && $0.node == first.node && $0.mesh == first.mesh }) {
            return .workload(first)
        }
        return .ambiguous(candidates)
    }

    /// The identities of this node's meshed workloads.
    public var localIdentities: Set<String> {
        Set(byRef.values.filter { $0.node == localNode && $0.mesh }.map(\.identity))
    }

    // MARK: TLS server names

    /// The TLS server name a tunnel's client sends so that the destination
    /// node presents the certificate of the identity the client expects:
    /// `<namespace>.<serviceAccount>.hbone.weft` (a namespace is one DNS label).
    public static func serverName(namespace: String, serviceAccount: String) -> String {
        "\(namespace).\(serviceAccount).\(serverNameSuffix)"
    }

    public static let serverNameSuffix = "hbone.weft"

    /// The identity a server name asks for, or nil when it is not one of ours.
    public func identity(forServerName name: String) -> String? {
        let suffix = "." + Self.serverNameSuffix
        guard name.hasSuffix(suffix) else { return nil }
        let body = name.dropLast(suffix.count)
        guard let dot = body.firstIndex(of: ".") else { return nil }
        let ns = body[..<dot], sa = body[body.index(after: dot)...]
        guard !ns.isEmpty, !sa.isEmpty else { return nil }
        return Self.identity(trustDomain: trustDomain, namespace: String(ns), serviceAccount: String(sa))
    }
}
