import WeftCore

/// The names a kind goes by: the lower-case plural of the API paths
/// (`/v1/workloads`), and the singular and short forms `weftctl` accepts the
/// way kubectl does (`get svc`, `get route`, `get ns`).
///
/// Short names follow the upstream CRDs where they have one (Istio's `ap` and
/// `pa`, Kubernetes' `ns` and `svc`); Weft's own kinds get the obvious ones.
extension ResourceKind {
    /// `kind.lowercased()`, as kubectl prints it (`workload/catalog-v1`).
    public var singular: String { rawValue.lowercased() }

    public var shortNames: [String] {
        switch self {
        case .namespace: return ["ns"]
        case .workload: return ["wl"]
        case .service: return ["svc"]
        case .faultInjection: return ["fault", "faults", "fi"]
        case .httpRoute: return ["route", "routes"]
        case .authorizationPolicy: return ["ap"]
        case .peerAuthentication: return ["pa"]
        case .destinationRule: return ["dr"]
        }
    }

    /// The API group (the part of `apiVersion` before the slash), used in
    /// `kind.group` names such as `httproutes.gateway.networking.k8s.io`.
    public var group: String {
        String(apiVersion.split(separator: "/").first ?? "")
    }

    /// Every name that resolves to this kind, lower-cased.
    public var names: [String] {
        [plural, singular] + shortNames + [plural + "." + group, singular + "." + group]
    }

    /// Resolves what a user typed: the kind (`Workload`), its plural, singular
    /// or short name, or `plural.group`; case-insensitive like kubectl.
    public static func named(_ text: String) -> ResourceKind? {
        let key = text.lowercased()
        return allCases.first { $0.names.contains(key) }
    }

    /// Like ``named(_:)``, but with an error that lists the kinds and
    /// suggests the closest name.
    public static func resolve(_ text: String) throws(ControlError) -> ResourceKind {
        if let kind = named(text) { return kind }
        let all = allCases.flatMap(\.names)
        let hint = closest(to: text.lowercased(), in: all).map { "; did you mean \"\($0)\"?" } ?? ""
        throw ControlError.usage("unknown resource type \"\(text)\"\(hint) (types: \(kindList))")
    }

    /// "namespaces (ns), workloads (wl), …" for help and error text.
    public static var kindList: String {
        allCases.map { "\($0.plural) (\($0.shortNames.joined(separator: ", ")))" }.joined(separator: ", ")
    }

    /// The kind of a plural path segment, exactly as the API spells it.
    private static func closest(to word: String, in candidates: [String]) -> String? {
        var best: (String, Int)?
        for c in candidates {
            let d = editDistance(word, c)
            if d <= max(1, word.count / 3), best == nil || d < best!.1 { best = (c, d) }
        }
        return best?.0
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
