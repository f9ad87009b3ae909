import WeftCore

/// The request as route matching sees it: method, normalised path, query
/// parameters and headers (names compared without case).
public struct RequestView: Sendable {
    public var method: String
    public var path: String
    public var query: [(name: String, value: String)]
    public var headers: [(name: String, value: String)]

    public init(method: String, path: String, query: String? = nil, headers: [(name: String, value: String)] = []) {
        self.method = method
        self.path = path
        self.query = Self.parseQuery(query)
        self.headers = headers
    }

    static func parseQuery(_ q: String?) -> [(name: String, value: String)] {
        guard let q, !q.isEmpty else { return [] }
        return q.split(separator: "&").map { pair in
            if let eq = pair.firstIndex(of: "=") {
                return (String(pair[..<eq]), String(pair[pair.index(after: eq)...]))
            }
            return (String(pair), "")
        }
    }

    func header(_ name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { $0.name.lowercased() == lower }.map(\.value)
    }
}

/// An HTTPRoute with what the precedence rules need besides its spec.
public struct RouteSource: Sendable, Hashable {
    public var namespace: String
    public var name: String
    /// RFC 3339; older routes win ties.
    public var creationTimestamp: String
    public var spec: HTTPRouteSpec

    public init(namespace: String, name: String, creationTimestamp: String, spec: HTTPRouteSpec) {
        self.namespace = namespace
        self.name = name
        self.creationTimestamp = creationTimestamp
        self.spec = spec
    }
}

/// The rules of every HTTPRoute attached to one Service port, compiled and
/// ordered by Gateway API's precedence (GAMMA: parentRefs to a Service).
public struct CompiledRoutes: Sendable {
    public struct Selected: Sendable {
        public var route: RouteSource
        public var ruleIndex: Int
        public var rule: HTTPRouteSpec.Rule
    }

    struct Candidate: @unchecked Sendable {
        var route: RouteSource
        var routeOrder: Int
        var ruleIndex: Int
        var match: HTTPRouteSpec.Match
        var regex: Regex<AnyRegexOutput>?
        var headerRegexes: [Regex<AnyRegexOutput>?]
        var queryRegexes: [Regex<AnyRegexOutput>?]
    }

    let candidates: [Candidate]

    public var isEmpty: Bool { candidates.isEmpty }

    /// `routes` attached to Service `namespace/service`, port `port` (named `portName`).
    public init(routes: [RouteSource], namespace: String, service: String, port: UInt16, portName: String?) {
        let attached = routes.filter { r in
            r.spec.parentRefs.contains { p in
                p.name == service && (p.namespace?.rawValue ?? r.namespace) == namespace
                    && (p.port == nil || p.port == port) && (p.sectionName == nil || p.sectionName == portName)
            }
        }
        // Ties across routes: the oldest, then namespace/name in alphabetical order.
        let ordered = attached.sorted {
            ($0.creationTimestamp, "\($0.namespace)/\($0.name)") < ($1.creationTimestamp, "\($1.namespace)/\($1.name)")
        }
        var list: [Candidate] = []
        for (order, route) in ordered.enumerated() {
            for (i, rule) in route.spec.rules.enumerated() {
                for m in rule.matches {
                    list.append(Candidate(
                        route: route, routeOrder: order, ruleIndex: i, match: m,
                        regex: m.path.type == .regularExpression ? try? Regex(m.path.value) : nil,
                        headerRegexes: m.headers.map { $0.type == .regularExpression ? try? Regex($0.value) : nil },
                        queryRegexes: m.queryParams.map { $0.type == .regularExpression ? try? Regex($0.value) : nil }))
                }
            }
        }
        candidates = list.sorted(by: Self.precedes)
    }

    /// Gateway API: Exact path, then the longest PathPrefix, then method,
    /// then most header matches, then most query matches; regular
    /// expressions (implementation-specific) rank after Exact and before
    /// PathPrefix, as in Envoy Gateway; then route age and name, then rule order.
    static func precedes(_ a: Candidate, _ b: Candidate) -> Bool {
        func pathRank(_ c: Candidate) -> (Int, Int) {
            switch c.match.path.type {
            case .exact: return (3, c.match.path.value.count)
            case .regularExpression: return (2, c.match.path.value.count)
            case .pathPrefix: return (1, c.match.path.value.count)
            }
        }
        let (pa, pb) = (pathRank(a), pathRank(b))
        if pa != pb { return pa > pb }
        let (ma, mb) = (a.match.method != nil, b.match.method != nil)
        if ma != mb { return ma }
        if a.match.headers.count != b.match.headers.count { return a.match.headers.count > b.match.headers.count }
        if a.match.queryParams.count != b.match.queryParams.count { return a.match.queryParams.count > b.match.queryParams.count }
        if a.routeOrder != b.routeOrder { return a.routeOrder < b.routeOrder }
        return a.ruleIndex < b.ruleIndex
    }

    /// The rule the request goes by, or nil (404, response flag NR).
    public func select(_ request: RequestView) -> Selected? {
        for c in candidates where Self.matches(c, request) {
            return Selected(route: c.route, ruleIndex: c.ruleIndex, rule: c.route.spec.rules[c.ruleIndex])
        }
        return nil
    }

    static func matches(_ c: Candidate, _ r: RequestView) -> Bool {
        let m = c.match
        switch m.path.type {
        case .exact:
            guard r.path == m.path.value else { return false }
        case .pathPrefix:
            guard prefixMatches(m.path.value, r.path) else { return false }
        case .regularExpression:
            guard let regex = c.regex, (try? regex.wholeMatch(in: r.path)) != nil else { return false }
        }
        if let method = m.method, method.rawValue != r.method { return false }
        for (i, h) in m.headers.enumerated() {
            let values = r.header(h.name)
            switch h.type {
            case .exact:
                guard values.contains(h.value) else { return false }
            case .regularExpression:
                guard let regex = c.headerRegexes[i], values.contains(where: { (try? regex.wholeMatch(in: $0)) != nil }) else { return false }
            }
        }
        for (i, q) in m.queryParams.enumerated() {
            // The first occurrence of a parameter counts (Gateway API).
            guard let value = r.query.first(where: { $0.name == q.name })?.value else { return false }
            switch q.type {
            case .exact:
                guard value == q.value else { return false }
            case .regularExpression:
                guard let regex = c.queryRegexes[i], (try? regex.wholeMatch(in: value)) != nil else { return false }
            }
        }
        return true
    }

    /// PathPrefix matches whole path elements: `/foo` matches `/foo`, `/foo/`
    /// and `/foo/bar`, never `/foobar`. A trailing `/` in the prefix is ignored.
    static func prefixMatches(_ prefix: String, _ path: String) -> Bool {
        var p = Substring(prefix)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        if p == "/" { return path.hasPrefix("/") }
        guard path.hasPrefix(p) else { return false }
        let rest = path.dropFirst(p.count)
        return rest.isEmpty || rest.hasPrefix("/")
    }

    /// Picks a backend by weight; `roll` is uniform in 0..<total weight.
    /// nil when every weight is 0 or there is none (the spec's 500).
    public static func pickBackend(_ rule: HTTPRouteSpec.Rule, roll: (Int) -> Int = { Int.random(in: 0..<$0) })
        -> HTTPRouteSpec.BackendRef? {
        let total = rule.backendRefs.reduce(0) { $0 + max(0, $1.weight) }
        guard total > 0 else { return nil }
        // One backend (the common case): nothing to draw (a draw is a getrandom call).
        if rule.backendRefs.count == 1 { return rule.backendRefs[0] }
        var r = roll(total)
        for b in rule.backendRefs where b.weight > 0 {
            if r < b.weight { return b }
            r -= b.weight
        }
        return rule.backendRefs.last { $0.weight > 0 }
    }
}

extension RouteSource {
    /// The HTTPRoutes of a node snapshot. A route whose spec does not decode
    /// (written by a newer control plane, say) is left out, not guessed at.
    public static func all(in snapshot: NodeSnapshot) -> [RouteSource] {
        (snapshot.routes ?? []).compactMap { r in
            let document: JSONValue = .object([
                "apiVersion": .string(ResourceKind.gatewayAPIVersion), "kind": "HTTPRoute",
                "metadata": .object(["name": .string(r.name), "namespace": .string(r.namespace)]),
                "spec": r.spec,
            ])
            guard let resource = try? ResourceDocument.decode(document), case .httpRoute(let spec) = resource.spec else { return nil }
            return RouteSource(namespace: r.namespace, name: r.name, creationTimestamp: r.creationTimestamp ?? "", spec: spec)
        }
    }
}
