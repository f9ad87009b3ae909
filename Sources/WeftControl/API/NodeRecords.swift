import Foundation
import WeftCore
import WeftIdentity

/// What the server keeps about a joined node (`_Node/<name>` in the store).
struct NodeRecord: Codable, Sendable, Equatable {
    var name: String
    /// RFC 3339.
    var joinedAt: String
    /// When the node credential issued at join expires, RFC 3339.
    var credentialNotAfter: String
    /// The last status report, RFC 3339.
    var lastSeen: String?
    var status: NodeStatus?
}

/// A bootstrap token as stored (`_BootstrapToken/<id>`): never the secret.
struct StoredToken: Codable, Sendable {
    var record: BootstrapTokenRecord
    /// The node that redeemed it, for the audit trail.
    var usedBy: String?
}

enum RFC3339 {
    static func string(_ date: Date) -> String { date.formatted(.iso8601) }
    static func date(_ text: String) -> Date? { try? Date(text, strategy: .iso8601) }
}

enum InternalJSON {
    static func encode(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }
}

/// Which Workload resource a node's report is about, and which reported
/// workloads become new Workload resources.
enum WorkloadReports {
    /// The cgroup path below the cgroup2 root, the form `spec.cgroup` takes:
    /// weftd reports absolute paths (`/sys/fs/cgroup/weft.slice/…`).
    static func relativeCgroup(_ path: String) -> String {
        if let range = path.range(of: "/weft.slice/") {
            return String(path[path.index(after: range.lowerBound)...])
        }
        for root in ["/sys/fs/cgroup/unified/", "/sys/fs/cgroup/"] where path.hasPrefix(root) {
            return String(path.dropFirst(root.count))
        }
        return String(path.drop { $0 == "/" })
    }

    /// Whether a reported workload is this Workload resource: same namespace, and
    /// the same name, unit or cgroup.
    static func matches(_ report: NodeStatus.WorkloadState, _ resource: Resource) -> Bool {
        guard case .workload(let spec) = resource.spec, resource.metadata.namespace?.rawValue == report.namespace else { return false }
        if resource.metadata.name == report.name { return true }
        switch spec.placement {
        case .unit(let unit): return unit == report.name
        case .cgroup(let cgroup): return cgroup == relativeCgroup(report.cgroup)
        }
    }

    /// Workload resources to create for what `node` discovered: one per reported
    /// workload that no Workload resource describes yet. Operator-declared
    /// Workloads are never replaced; a reported name that is not a valid resource
    /// name, or a namespace that does not exist, is skipped (and returned in `skipped`
    /// with the reason) rather than failing the node's report.
    static func discovered(node: String, reported: [NodeStatus.WorkloadState], existing: [Resource],
                           namespaces: Set<String>) -> (new: [Resource], skipped: [(String, String)]) {
        var new: [Resource] = []
        var skipped: [(String, String)] = []
        var names = Set(existing.compactMap { r in r.metadata.namespace.map { "\($0.rawValue)/\(r.metadata.name)" } })
        for report in reported {
            let ref = "\(report.namespace)/\(report.name)"
            if names.contains(ref) || existing.contains(where: { matches(report, $0) }) { continue }
            guard namespaces.contains(report.namespace) else {
                skipped.append((ref, "namespace \(report.namespace) has no Namespace resource"))
                continue
            }
            var spec: JSONObject = ["node": .string(node), "cgroup": .string(relativeCgroup(report.cgroup))]
            if report.netns.hasPrefix("/") { spec["netns"] = .string(report.netns) }
            let document: JSONValue = [
                "apiVersion": .string(ResourceKind.weftAPIVersion), "kind": "Workload",
                "metadata": ["name": .string(report.name), "namespace": .string(report.namespace),
                             "annotations": ["weft.dev/discovered-by": .string(node)]],
                "spec": .object(spec),
            ]
            do {
                new.append(try ResourceDocument.decode(document))
                names.insert(ref)
            } catch {
                skipped.append((ref, "\(error.field): \(error.message)"))
            }
        }
        return (new, skipped)
    }
}
