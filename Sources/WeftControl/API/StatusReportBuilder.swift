import WeftCore

/// `GET /v1/status`: what `weftctl status` shows — each node's applied snapshot
/// version against the current one, when it was last heard from, its
/// certificates; each workload, whether it is captured and, if not, why.
/// Pure: built from the node records and Workload resources.
enum StatusReportBuilder {
    /// `attached/expected` capture programs and the last repair, as the node reported them.
    static func integrity(_ report: NodeStatus.WorkloadState) -> (hooks: JSONValue, lastRepair: JSONValue) {
        let hooks: JSONValue = report.hooksAttached.map { a in .string("\(a)/\(report.hooksExpected.map(String.init) ?? "?")") } ?? .null
        return (hooks, report.lastRepair.map { .string($0) } ?? .null)
    }

    static func build(revision: Int64, version: Int64, nodes: [NodeRecord], workloads: [Resource]) -> JSONValue {
        var nodeItems: [JSONValue] = []
        let byName = Dictionary(nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for n in nodes.sorted(by: { $0.name < $1.name }) {
            var o = JSONObject()
            o["name"] = .string(n.name)
            o["joinedAt"] = .string(n.joinedAt)
            o["credentialNotAfter"] = .string(n.credentialNotAfter)
            o["lastSeen"] = n.lastSeen.map { .string($0) } ?? .null
            o["appliedVersion"] = n.status.map { .int($0.appliedVersion) } ?? .null
            o["upToDate"] = .bool((n.status?.appliedVersion ?? -1) >= version)
            o["weftdVersion"] = n.status.map { .string($0.weftdVersion) } ?? .null
            o["certificates"] = .array((n.status?.certificates ?? []).map { c in
                ["spiffeID": .string(c.spiffeID), "notAfter": .string(c.notAfter)]
            })
            nodeItems.append(.object(o))
        }

        var workloadItems: [(key: String, value: JSONValue)] = []
        var explained = Set<String>()
        for r in workloads {
            guard case .workload(let spec) = r.spec, let ns = r.metadata.namespace?.rawValue else { continue }
            var captured: JSONValue = .null
            var reason: JSONValue = .null
            var hooks: JSONValue = .null
            var lastRepair: JSONValue = .null
            if let node = byName[spec.node] {
                if let status = node.status {
                    if let report = status.workloads.first(where: { WorkloadReports.matches($0, r) }) {
                        explained.insert("\(spec.node)|\(report.namespace)/\(report.name)")
                        captured = .bool(report.captured)
                        reason = report.reason.map { .string($0) } ?? .null
                        (hooks, lastRepair) = Self.integrity(report)
                    } else {
                        captured = false
                        reason = .string("node \(spec.node) does not report it: no process runs in its unit or cgroup, or namespace \(ns) is not meshed")
                    }
                } else {
                    reason = .string("node \(spec.node) has joined but not reported yet (is weftd running there?)")
                }
            } else {
                reason = .string("node \(spec.node) has not joined (create a token with weftctl and start weftd there)")
            }
            workloadItems.append(("\(ns)/\(r.metadata.name)", [
                "namespace": .string(ns), "name": .string(r.metadata.name), "node": .string(spec.node),
                "captured": captured, "reason": reason, "hooks": hooks, "lastRepair": lastRepair,
            ]))
        }
        // What nodes report without a Workload resource (discovery skipped it).
        for n in nodes {
            for report in n.status?.workloads ?? [] where !explained.contains("\(n.name)|\(report.namespace)/\(report.name)") {
                if workloads.contains(where: { WorkloadReports.matches(report, $0) }) { continue }
                workloadItems.append(("\(report.namespace)/\(report.name)", [
                    "namespace": .string(report.namespace), "name": .string(report.name), "node": .string(n.name),
                    "captured": .bool(report.captured), "reason": report.reason.map { .string($0) } ?? .null,
                    "hooks": Self.integrity(report).hooks, "lastRepair": Self.integrity(report).lastRepair,
                ]))
            }
        }
        return [
            "revision": .int(revision),
            "version": .int(version),
            "nodes": .array(nodeItems),
            "workloads": .array(workloadItems.sorted { $0.key < $1.key }.map(\.value)),
        ]
    }
}
