/// Wire types of agent sync (docs/control-api.md): what weft-control sends a
/// node, and what the node reports back. Shared by the server, the client
/// and weftd so the three cannot drift.

/// Everything one node needs, at one store revision.
public struct NodeSnapshot: Codable, Sendable, Equatable {
    public struct Namespace: Codable, Sendable, Equatable {
        public var name: String
        public var mesh: Bool
        public init(name: String, mesh: Bool) { self.name = name; self.mesh = mesh }
    }

    public struct Port: Codable, Sendable, Equatable {
        public var name: String?
        public var port: Int
        public var targetPort: Int?
        public var protocol_: String

        enum CodingKeys: String, CodingKey { case name, port, targetPort, protocol_ = "protocol" }

        public init(name: String?, port: Int, targetPort: Int? = nil, protocol_: String) {
            self.name = name
            self.port = port
            self.targetPort = targetPort
            self.protocol_ = protocol_
        }
    }

    public struct Workload: Codable, Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var node: String
        public var unit: String?
        public var cgroup: String?
        public var netns: String?
        public var serviceAccount: String
        public var labels: [String: String]
        public var addresses: [String]
        public var ports: [Port]

        public init(namespace: String, name: String, node: String, unit: String?, cgroup: String?, netns: String?,
                    serviceAccount: String, labels: [String: String], addresses: [String], ports: [Port]) {
            self.namespace = namespace
            self.name = name
            self.node = node
            self.unit = unit
            self.cgroup = cgroup
            self.netns = netns
            self.serviceAccount = serviceAccount
            self.labels = labels
            self.addresses = addresses
            self.ports = ports
        }
    }

    public struct Endpoint: Codable, Sendable, Equatable {
        public var workload: String
        public var node: String
        public var addresses: [String]
        public init(workload: String, node: String, addresses: [String]) {
            self.workload = workload
            self.node = node
            self.addresses = addresses
        }
    }

    public struct Service: Codable, Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var virtualIP: String
        public var ports: [Port]
        public var endpoints: [Endpoint]
        public init(namespace: String, name: String, virtualIP: String, ports: [Port], endpoints: [Endpoint]) {
            self.namespace = namespace
            self.name = name
            self.virtualIP = virtualIP
            self.ports = ports
            self.endpoints = endpoints
        }
    }

    /// A workload anywhere in the mesh, as another node's proxy needs it:
    /// where it is, which identity it must present, and whether its
    /// namespace is meshed (mTLS required) or not (plain TCP).
    public struct Peer: Codable, Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var node: String
        public var serviceAccount: String
        public var mesh: Bool
        public var addresses: [String]
        /// Declared ports; a destination port outside them still matches when
        /// the address is the workload's alone.
        public var ports: [Int]
        /// The workload's labels (telemetry reads app and version from them).
        public var labels: [String: String]?

        public init(namespace: String, name: String, node: String, serviceAccount: String, mesh: Bool,
                    addresses: [String], ports: [Int], labels: [String: String]? = nil) {
            self.labels = labels
            self.namespace = namespace
            self.name = name
            self.node = node
            self.serviceAccount = serviceAccount
            self.mesh = mesh
            self.addresses = addresses
            self.ports = ports
        }
    }

    /// An HTTPRoute as stored (its spec as written), for the node proxy's L7 path.
    public struct Route: Codable, Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var creationTimestamp: String?
        public var spec: JSONValue

        public init(namespace: String, name: String, creationTimestamp: String?, spec: JSONValue) {
            self.namespace = namespace
            self.name = name
            self.creationTimestamp = creationTimestamp
            self.spec = spec
        }
    }

    /// A resource the node applies as stored (its spec as written): an
    /// AuthorizationPolicy or PeerAuthentication (what the destination's node
    /// proxy and kernel enforce), or a FaultInjection (what HTTPRoutes name).
    public struct Policy: Codable, Sendable, Equatable {
        /// `AuthorizationPolicy`, `PeerAuthentication` or `FaultInjection`.
        public var kind: String
        public var namespace: String
        public var name: String
        public var spec: JSONValue

        public init(kind: String, namespace: String, name: String, spec: JSONValue) {
            self.kind = kind
            self.namespace = namespace
            self.name = name
            self.spec = spec
        }
    }

    public var version: Int64
    public var node: String
    public var trustDomain: String
    public var namespaces: [Namespace]
    /// Only this node's workloads.
    public var workloads: [Workload]
    /// Every service, with its endpoints on any node.
    public var services: [Service]
    /// Every workload on every node (this one included). Absent from
    /// snapshots persisted by older weftd versions.
    public var peers: [Peer]?
    /// Every HTTPRoute. Absent from snapshots of older versions.
    public var routes: [Route]?
    /// Every AuthorizationPolicy and PeerAuthentication. Absent from
    /// snapshots of older versions.
    public var policies: [Policy]?
    /// Every FaultInjection (HTTPRoutes name them in ExtensionRef filters).
    /// Absent from snapshots of older versions.
    public var faultInjections: [Policy]?
    /// Every DestinationRule (Services' traffic policies). Absent from
    /// snapshots of older versions.
    public var destinationRules: [Policy]?

    public init(version: Int64, node: String, trustDomain: String, namespaces: [Namespace], workloads: [Workload],
                services: [Service], peers: [Peer]? = nil, routes: [Route]? = nil, policies: [Policy]? = nil,
                faultInjections: [Policy]? = nil, destinationRules: [Policy]? = nil) {
        self.faultInjections = faultInjections
        self.destinationRules = destinationRules
        self.routes = routes
        self.policies = policies
        self.version = version
        self.node = node
        self.trustDomain = trustDomain
        self.namespaces = namespaces
        self.workloads = workloads
        self.services = services
        self.peers = peers
    }
}

/// What a node reports: the snapshot it applied, what it found, what it holds.
public struct NodeStatus: Codable, Sendable, Equatable {
    public struct WorkloadState: Codable, Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var cgroup: String
        public var captured: Bool
        /// Why not captured, when not.
        public var reason: String?
        public var netns: String
        /// Capture programs effective on the cgroup (the kernel's word), and
        /// how many a captured workload has. Absent from older weftds.
        public var hooksAttached: Int?
        public var hooksExpected: Int?
        /// When weftd last re-attached missing capture (RFC 3339).
        public var lastRepair: String?

        public init(namespace: String, name: String, cgroup: String, captured: Bool, reason: String?, netns: String,
                    hooksAttached: Int? = nil, hooksExpected: Int? = nil, lastRepair: String? = nil) {
            self.namespace = namespace
            self.name = name
            self.cgroup = cgroup
            self.captured = captured
            self.reason = reason
            self.netns = netns
            self.hooksAttached = hooksAttached
            self.hooksExpected = hooksExpected
            self.lastRepair = lastRepair
        }
    }

    public struct CertificateState: Codable, Sendable, Equatable {
        public var spiffeID: String
        /// RFC 3339.
        public var notAfter: String
        public init(spiffeID: String, notAfter: String) {
            self.spiffeID = spiffeID
            self.notAfter = notAfter
        }
    }

    public var appliedVersion: Int64
    public var weftdVersion: String
    public var workloads: [WorkloadState]
    public var certificates: [CertificateState]

    public init(appliedVersion: Int64, weftdVersion: String, workloads: [WorkloadState], certificates: [CertificateState]) {
        self.appliedVersion = appliedVersion
        self.weftdVersion = weftdVersion
        self.workloads = workloads
        self.certificates = certificates
    }
}
