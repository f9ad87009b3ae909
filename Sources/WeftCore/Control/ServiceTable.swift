/// Service virtual IPs and the endpoints behind them, as the node proxy uses
/// them: a captured connection to `virtualIP:port` goes to one of the
/// endpoints instead (the VIP itself is never on the wire).
public struct ServiceTable: Sendable, Equatable {
    public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
        public var address: IPAddress
        public var port: UInt16
        public var node: String
        public var workload: String
        /// The workload, validated once when the table is built (not per connection).
        public var ref: WorkloadRef?

        public init(address: IPAddress, port: UInt16, node: String, workload: String, namespace: String? = nil) {
            self.address = address
            self.port = port
            self.node = node
            self.workload = workload
            self.ref = namespace.flatMap { try? WorkloadRef(namespace: NamespaceName($0), name: WorkloadName(workload)) }
        }

        public var description: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
    }

    public struct Key: Hashable, Sendable {
        public var address: IPAddress
        public var port: UInt16
        public init(address: IPAddress, port: UInt16) {
            self.address = address
            self.port = port
        }
    }

    public struct Entry: Sendable, Equatable {
        /// `namespace/name`.
        public var service: String
        public var endpoints: [Endpoint]
        public var namespace: String
        public var name: String
    }

    public private(set) var entries: [Key: Entry] = [:]

    public init() {}

    /// Builds the table from a snapshot. The target port is the service
    /// port's `targetPort`, else the port itself; an entry whose addresses do
    /// not parse is left out rather than guessed.
    public init(snapshot: NodeSnapshot) {
        for svc in snapshot.services {
            guard let vip = IPAddress(svc.virtualIP) else { continue }
            for p in svc.ports {
                guard let port = UInt16(exactly: p.port) else { continue }
                let target = UInt16(exactly: p.targetPort ?? p.port) ?? port
                var endpoints: [Endpoint] = []
                for e in svc.endpoints {
                    for a in e.addresses {
                        if let ip = IPAddress(a) {
                            endpoints.append(Endpoint(address: ip, port: target, node: e.node, workload: e.workload, namespace: svc.namespace))
                        }
                    }
                }
                entries[Key(address: vip, port: port)] = Entry(service: "\(svc.namespace)/\(svc.name)", endpoints: endpoints,
                                                                 namespace: svc.namespace, name: svc.name)
            }
        }
    }

    public func lookup(_ address: IPAddress, port: UInt16) -> Entry? {
        entries[Key(address: address, port: port)]
    }
}
