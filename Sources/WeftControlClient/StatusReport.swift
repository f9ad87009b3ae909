import Foundation
import WeftCore

/// `weftctl status`: the answer of `GET /v1/status` as two tables, nodes
/// then workloads, read leniently (a field the server does not send prints
/// as `<none>`), so an older or newer server still gives a readable report.
public enum StatusReport {
    public static func render(_ report: JSONValue, now: Date = Date()) -> String {
        var out = ""
        let current = report["version"]
        if let current {
            out += "Snapshot version \(ResourceTable.text(current))"
            if let revision = report["revision"] { out += " (store revision \(ResourceTable.text(revision)))" }
            out += "\n\n"
        }
        let nodes = report["nodes"]?.arrayValue ?? []
        if nodes.isEmpty {
            out += "No nodes have joined (weftctl node token create, then put the token in control.tokenFile of the node's weftd.yaml and start weftd).\n"
        } else {
            out += "NODES\n" + nodeTable(nodes, current: current, now: now).render()
        }
        out += "\n"
        let workloads = report["workloads"]?.arrayValue ?? []
        if workloads.isEmpty {
            out += "No workloads.\n"
        } else {
            out += "WORKLOADS\n" + workloadTable(workloads).render()
        }
        return out
    }

    /// One row per node: the snapshot version it applied against the
    /// current one, when it last reported, its weftd, and when its node
    /// credential and its soonest workload certificate expire.
    static func nodeTable(_ nodes: [JSONValue], current: JSONValue?, now: Date) -> TextTable {
        var table = TextTable(header: ["NODE", "APPLIED", "LAST SEEN", "WEFTD", "NODE CERT", "WORKLOAD CERTS"])
        for node in nodes {
            var applied = node["appliedVersion"].map { ResourceTable.text($0) } ?? "<none>"
            if node["upToDate"] == .bool(true) {
                applied += " (current)"
            } else if case .int(let a)? = node["appliedVersion"], case .int(let c)? = current, a < c {
                applied += " (behind \(c))"
            }
            let lastSeen = node["lastSeen"]?.stringValue.map { ResourceTable.age(since: $0, now: now) + " ago" } ?? "never"
            table.rows.append([
                ResourceTable.text(node["name"] ?? node["node"]),
                applied,
                lastSeen,
                ResourceTable.text(node["weftdVersion"]),
                expiry([node["credentialNotAfter"]?.stringValue].compactMap { $0 }, now: now),
                expiry((node["certificates"]?.arrayValue ?? []).compactMap { $0["notAfter"]?.stringValue }, now: now),
            ])
        }
        return table
    }

    /// The soonest of `times`: `in 23h`, `in 5d (soonest of 3)`, or `EXPIRED 2h ago`.
    static func expiry(_ times: [String], now: Date) -> String {
        let dates = times.compactMap { ResourceTable.parseTimestamp($0) }
        guard let soonest = dates.min() else { return "<none>" }
        let left = soonest.timeIntervalSince(now)
        if left < 0 { return "EXPIRED \(ResourceTable.humanDuration(-left)) ago" }
        return "in \(ResourceTable.humanDuration(left))" + (dates.count > 1 ? " (soonest of \(dates.count))" : "")
    }

    static func workloadTable(_ workloads: [JSONValue]) -> TextTable {
        var table = TextTable(header: ["NAMESPACE", "WORKLOAD", "NODE", "CAPTURED", "HOOKS", "LAST REPAIR", "WHY NOT"])
        for w in workloads {
            let captured: String
            switch w["captured"] {
            case .bool(true)?: captured = "yes"
            case .bool(false)?: captured = "NO"
            default: captured = "-"
            }
            table.rows.append([
                ResourceTable.text(w["namespace"]),
                ResourceTable.text(w["name"] ?? w["workload"]),
                ResourceTable.text(w["node"]),
                captured,
                w["hooks"]?.stringValue ?? "-",
                w["lastRepair"]?.stringValue ?? "-",
                w["captured"] == .bool(true) ? "" : ResourceTable.text(w["reason"]),
            ])
        }
        return table
    }
}
