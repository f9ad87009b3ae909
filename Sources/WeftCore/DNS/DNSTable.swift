/// The mesh's names, as weftd's DNS server answers them: every Service as
/// `<service>.<namespace>.svc.<cluster-domain>` (A or AAAA: its virtual IP),
/// SRV records for its named ports, and NXDOMAIN for any other name under
/// the cluster domain. The short forms a search path produces
/// (`<service>.<namespace>.svc`, `<service>.<namespace>` for a namespace of
/// the mesh) resolve too; every other name is forwarded upstream.
public struct DNSTable: Sendable, Equatable {
    public struct Service: Sendable, Equatable {
        public var fqdn: String
        public var addresses: [IPAddress]
        /// Named ports: (name, port).
        public var ports: [(name: String, port: UInt16)]

        public static func == (a: Service, b: Service) -> Bool {
            a.fqdn == b.fqdn && a.addresses == b.addresses
                && a.ports.map(\.name) == b.ports.map(\.name) && a.ports.map(\.port) == b.ports.map(\.port)
        }
    }

    public enum Answer: Sendable, Equatable {
        case records([DNSRecord], additional: [DNSRecord])
        /// The name exists but has no record of this type (NOERROR, empty).
        case noData
        case nxDomain
        /// Not a mesh name: ask the node's resolvers.
        case forward
    }

    /// Short, so that a Service's new address is seen soon after a change.
    public static let ttl: UInt32 = 5

    public private(set) var clusterDomain: String
    private var services: [String: Service] = [:]
    private var namespaces: Set<String> = []

    public init(clusterDomain: String = "cluster.local") {
        self.clusterDomain = Self.normalize(clusterDomain)
    }

    public init(snapshot: NodeSnapshot, clusterDomain: String) {
        self.init(clusterDomain: clusterDomain)
        namespaces = Set(snapshot.namespaces.map(\.name))
        for s in snapshot.services {
            guard let vip = IPAddress(s.virtualIP) else { continue }
            let fqdn = "\(s.name).\(s.namespace).svc.\(self.clusterDomain)"
            let named = s.ports.compactMap { p -> (String, UInt16)? in
                guard let name = p.name, let port = UInt16(exactly: p.port) else { return nil }
                return (name.lowercased(), port)
            }
            services[fqdn] = Service(fqdn: fqdn, addresses: [vip], ports: named)
            namespaces.insert(s.namespace)
        }
    }

    public var count: Int { services.count }

    static func normalize(_ name: String) -> String {
        var n = name.lowercased()
        while n.hasSuffix(".") { n.removeLast() }
        return n
    }

    /// The answer to a question for `name` of `type`.
    public func answer(name rawName: String, type: UInt16) -> Answer {
        let name = Self.normalize(rawName)
        let suffix = ".svc.\(clusterDomain)"
        var fqdn: String?
        if name.hasSuffix(suffix) {
            fqdn = name
        } else if name.hasSuffix(".svc") {
            fqdn = name + "." + clusterDomain
        } else {
            let labels = name.split(separator: ".")
            if labels.count == 2, namespaces.contains(String(labels[1])) {
                fqdn = "\(name).svc.\(clusterDomain)"
            } else if labels.count == 4, labels[0].hasPrefix("_"), labels[1].hasPrefix("_"), namespaces.contains(String(labels[3])) {
                fqdn = "\(name).svc.\(clusterDomain)"
            }
        }
        // The cluster domain is the mesh's zone, as CoreDNS serves it for
        // Kubernetes: a name under it that is not a Service does not exist
        // (search-path expansions must not leak to the upstream resolver).
        let inZone = name == clusterDomain || name.hasSuffix("." + clusterDomain)
        guard let fqdn else { return inZone ? .nxDomain : .forward }
        let authoritative = inZone

        // _<port>._<proto>.<service>.<namespace>.svc.<domain>
        let labels = fqdn.split(separator: ".", maxSplits: 2).map(String.init)
        if labels.count == 3, labels[0].hasPrefix("_"), labels[1].hasPrefix("_") {
            guard let service = services[labels[2]],
                  let port = service.ports.first(where: { "_" + $0.name == labels[0] }),
                  ["_tcp", "_udp"].contains(labels[1]) else {
                return authoritative ? .nxDomain : .forward
            }
            guard type == DNSType.srv.rawValue || type == DNSType.any.rawValue else { return .noData }
            return .records([srv(service, port.port)], additional: addressRecords(service, named: true))
        }
        guard let service = services[fqdn] else {
            return authoritative ? .nxDomain : .forward
        }
        switch type {
        case DNSType.a.rawValue, DNSType.aaaa.rawValue, DNSType.any.rawValue:
            let want: (IPAddress) -> Bool = { ip in
                type == DNSType.any.rawValue || (type == DNSType.a.rawValue) == ip.isIPv4
            }
            let records = service.addresses.filter(want).map(record)
            return records.isEmpty ? .noData : .records(records, additional: [])
        case DNSType.srv.rawValue:
            let records = service.ports.map { srv(service, $0.port) }
            return records.isEmpty ? .noData : .records(records, additional: addressRecords(service, named: true))
        default:
            return .noData
        }
    }

    private func record(_ ip: IPAddress) -> DNSRecord {
        DNSRecord(ttl: Self.ttl, data: ip.isIPv4 ? .a(ip) : .aaaa(ip))
    }

    private func srv(_ s: Service, _ port: UInt16) -> DNSRecord {
        DNSRecord(ttl: Self.ttl, data: .srv(priority: 0, weight: 100, port: port, target: s.fqdn))
    }

    private func addressRecords(_ s: Service, named: Bool) -> [DNSRecord] {
        s.addresses.map { ip in
            DNSRecord(name: s.fqdn, ttl: Self.ttl, data: ip.isIPv4 ? .a(ip) : .aaaa(ip))
        }
    }
}
