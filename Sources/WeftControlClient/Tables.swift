import Foundation
import WeftCore

/// Plain-text columns as kubectl prints them: upper-case headers, each
/// column as wide as its widest cell, three spaces between columns, no
/// trailing spaces.
public struct TextTable: Sendable {
    public var header: [String]
    public var rows: [[String]]

    public init(header: [String], rows: [[String]] = []) {
        self.header = header
        self.rows = rows
    }

    public func render() -> String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { i < $0.count ? $0[i].count : 0 }.max() ?? 0 }
        var out = ""
        for row in all {
            var line = ""
            for i in header.indices {
                let cell = i < row.count ? row[i] : ""
                line += i == header.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 3)
            }
            while line.hasSuffix(" ") { line.removeLast() }
            out += line + "\n"
        }
        return out
    }
}

/// The `weftctl get` table of each kind: NAMESPACE (when listing across
/// namespaces), NAME, the kind's own columns, AGE; `wide` adds detail.
/// Cells read the stored document leniently: a missing field prints as
/// `<none>` (kubectl's word) instead of failing the listing.
public enum ResourceTable {
    struct Column {
        var header: String
        var wideOnly = false
        var cell: @Sendable (JSONValue) -> String
    }

    /// - Parameter qualifyNames: print NAME as `kind/name`, as kubectl does
    ///   when one listing shows several kinds.
    public static func render(kind: ResourceKind, items: [JSONValue], showNamespace: Bool, wide: Bool = false,
                              qualifyNames: Bool = false, now: Date = Date()) -> String {
        table(kind: kind, items: items, showNamespace: showNamespace, wide: wide, qualifyNames: qualifyNames, now: now).render()
    }

    public static func table(kind: ResourceKind, items: [JSONValue], showNamespace: Bool, wide: Bool = false,
                             qualifyNames: Bool = false, now: Date = Date()) -> TextTable {
        var columns: [Column] = []
        if showNamespace, kind.isNamespaced {
            columns.append(Column(header: "NAMESPACE") { text($0["metadata"]?["namespace"]) })
        }
        let prefix = qualifyNames ? kind.singular + "/" : ""
        columns.append(Column(header: "NAME") { prefix + text($0["metadata"]?["name"]) })
        columns += kindColumns(kind)
        columns.append(Column(header: "AGE") { age(since: $0["metadata"]?["creationTimestamp"]?.stringValue, now: now) })
        columns += wideColumns(kind)
        columns = columns.filter { wide || !$0.wideOnly }
        return TextTable(header: columns.map(\.header), rows: items.map { item in columns.map { $0.cell(item) } })
    }

    private static func kindColumns(_ kind: ResourceKind) -> [Column] {
        switch kind {
        case .namespace:
            return [Column(header: "MESH") { $0["spec"]?["mesh"]?["enabled"] == .bool(true) ? "enabled" : "disabled" }]
        case .workload:
            return [
                Column(header: "NODE") { text($0["spec"]?["node"]) },
                Column(header: "UNIT/CGROUP") { item in
                    if let unit = item["spec"]?["unit"]?.stringValue { return unit }
                    if let cgroup = item["spec"]?["cgroup"]?.stringValue { return "cgroup:" + cgroup }
                    return "<none>"
                },
                Column(header: "PORTS") { workloadPorts($0["spec"]?["ports"]) },
            ]
        case .service:
            return [
                Column(header: "VIRTUAL-IP") { text($0["spec"]?["virtualIP"]) },
                Column(header: "PORT(S)") { servicePorts($0["spec"]?["ports"]) },
            ]
        case .faultInjection:
            return [
                Column(header: "DELAY") { item in
                    guard let d = item["spec"]?["delay"] else { return "<none>" }
                    return "\(text(d["fixedDelay"])) \(percent(d["percentage"]?["value"]))"
                },
                Column(header: "ABORT") { item in
                    guard let a = item["spec"]?["abort"] else { return "<none>" }
                    let status = a["httpStatus"].map { text($0) } ?? a["grpcStatus"].map { text($0) } ?? "?"
                    return "\(status) \(percent(a["percentage"]?["value"]))"
                },
            ]
        case .httpRoute:
            return [
                Column(header: "SERVICES") { item in
                    list(item["spec"]?["parentRefs"]?.arrayValue?.map { ref in
                        let name = text(ref["name"])
                        let scoped = ref["namespace"]?.stringValue.map { "\($0)/\(name)" } ?? name
                        return ref["port"].map { "\(scoped):\(text($0))" } ?? scoped
                    })
                },
                Column(header: "HOSTNAMES") { list($0["spec"]?["hostnames"]?.arrayValue?.map { text($0) }) },
            ]
        case .authorizationPolicy:
            return [Column(header: "ACTION") { $0["spec"]?["action"].map { text($0) } ?? "ALLOW" }]
        case .peerAuthentication:
            return [Column(header: "MODE") { $0["spec"]?["mtls"]?["mode"].map { text($0) } ?? "UNSET" }]
        case .destinationRule:
            return [
                Column(header: "HOST") { text($0["spec"]?["host"]) },
                Column(header: "LB") { item in
                    let lb = item["spec"]?["trafficPolicy"]?["loadBalancer"]
                    if let simple = lb?["simple"] { return text(simple) }
                    return lb?["consistentHash"] != nil ? "CONSISTENT_HASH" : "<none>"
                },
            ]
        }
    }

    private static func wideColumns(_ kind: ResourceKind) -> [Column] {
        switch kind {
        case .namespace: return []
        case .workload:
            return [
                Column(header: "SERVICE-ACCOUNT", wideOnly: true) { text($0["spec"]?["serviceAccount"]) },
                Column(header: "ADDRESSES", wideOnly: true) { list($0["spec"]?["addresses"]?.arrayValue?.map { text($0) }) },
                Column(header: "NETNS", wideOnly: true) { text($0["spec"]?["netns"]) },
                Column(header: "LABELS", wideOnly: true) { labels($0["metadata"]?["labels"]) },
            ]
        case .service:
            return [Column(header: "SELECTOR", wideOnly: true) { labels($0["spec"]?["selector"]) }]
        case .httpRoute:
            return [Column(header: "RULES", wideOnly: true) { "\($0["spec"]?["rules"]?.arrayValue?.count ?? 1)" }]
        case .authorizationPolicy:
            return [
                Column(header: "SELECTOR", wideOnly: true) { labels($0["spec"]?["selector"]?["matchLabels"]) },
                Column(header: "RULES", wideOnly: true) { "\($0["spec"]?["rules"]?.arrayValue?.count ?? 0)" },
            ]
        case .peerAuthentication:
            return [Column(header: "SELECTOR", wideOnly: true) { labels($0["spec"]?["selector"]?["matchLabels"]) }]
        case .destinationRule:
            return [
                Column(header: "OUTLIER-DETECTION", wideOnly: true) { $0["spec"]?["trafficPolicy"]?["outlierDetection"] == nil ? "no" : "yes" },
                Column(header: "CONNECTION-POOL", wideOnly: true) { $0["spec"]?["trafficPolicy"]?["connectionPool"] == nil ? "no" : "yes" },
            ]
        case .faultInjection: return []
        }
    }

    // MARK: Cells

    static func text(_ value: JSONValue?) -> String {
        switch value {
        case nil, .null?: return "<none>"
        case .string(let s)?: return s.isEmpty ? "<none>" : s
        case .int(let i)?: return String(i)
        case .double(let d)?: return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .bool(let b)?: return b ? "true" : "false"
        case let other?: return other.serialized()
        }
    }

    static func list(_ items: [String]?) -> String {
        guard let items, !items.isEmpty else { return "<none>" }
        return items.joined(separator: ",")
    }

    static func labels(_ value: JSONValue?) -> String {
        guard let object = value?.objectValue, !object.isEmpty else { return "<none>" }
        return object.map { "\($0.key)=\(text($0.value))" }.joined(separator: ",")
    }

    static func percent(_ value: JSONValue?) -> String {
        value.map { text($0) + "%" } ?? "?%"
    }

    /// `8080/http,9090/grpc`.
    static func workloadPorts(_ value: JSONValue?) -> String {
        list(value?.arrayValue?.map { p in "\(text(p["port"]))/\(p["protocol"]?.stringValue ?? "tcp")" })
    }

    /// `80/http` when the target is the same port, `80→8080/http` (or `80→http/http`
    /// for a named target) when it differs.
    static func servicePorts(_ value: JSONValue?) -> String {
        list(value?.arrayValue?.map { p in
            let port = text(p["port"])
            let proto = p["protocol"]?.stringValue ?? "tcp"
            guard let target = p["targetPort"], target != .null, text(target) != port else { return "\(port)/\(proto)" }
            return "\(port)→\(text(target))/\(proto)"
        })
    }

    // MARK: Age

    /// kubectl's short human duration (`45s`, `3m20s`, `5h12m`, `12d`, `2y30d`),
    /// from an RFC 3339 time; `<unknown>` without one.
    public static func age(since timestamp: String?, now: Date) -> String {
        guard let timestamp, let date = parseTimestamp(timestamp) else { return "<unknown>" }
        return humanDuration(now.timeIntervalSince(date))
    }

    /// kubectl's `duration.HumanDuration`.
    public static func humanDuration(_ interval: TimeInterval) -> String {
        if interval < -1 { return "<invalid>" }
        let seconds = max(0, Int(interval))
        if seconds < 120 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 10 {
            let s = seconds % 60
            return s == 0 ? "\(minutes)m" : "\(minutes)m\(s)s"
        }
        if minutes < 180 { return "\(minutes)m" }
        let hours = minutes / 60
        if hours < 8 {
            let m = minutes % 60
            return m == 0 ? "\(hours)h" : "\(hours)h\(m)m"
        }
        if hours < 48 { return "\(hours)h" }
        if hours < 24 * 8 {
            let h = hours % 24
            return h == 0 ? "\(hours / 24)d" : "\(hours / 24)d\(h)h"
        }
        if hours < 24 * 365 * 2 { return "\(hours / 24)d" }
        let years = hours / 24 / 365
        if years < 8 {
            let d = (hours / 24) % 365
            return d == 0 ? "\(years)y" : "\(years)y\(d)d"
        }
        return "\(years)y"
    }

    /// RFC 3339, with or without fractional seconds.
    public static func parseTimestamp(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        if let date = plain.date(from: text) { return date }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return fractional.date(from: text)
    }
}
