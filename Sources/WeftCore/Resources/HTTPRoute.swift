// Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`) as the GAMMA mesh
// profile uses it: routes attach to Services, not Gateways.
//
// Validation follows the CRD's OpenAPI limits (maxItems, patterns) and its
// CEL rules, and the older webhook's checks where they add something (one
// action per header name, no duplicate header matches). Weft-specific limits:
// - parents and backends are Services only; `group: ""` and `kind: Service`
//   must be written on parentRefs because Gateway API's defaults there
//   (gateway.networking.k8s.io, Gateway) name something Weft does not have;
// - at least one parentRef (a route without one attaches to nothing);
// - RegularExpression values must compile with Swift's Regex (the dialect is
//   implementation-specific in Gateway API);
// - replaceFullPath and a non-empty replacePrefixMatch must be paths that
//   begin with '/' and use the characters of a path match;
// - header values must not hold control characters other than tab;
// - the only ExtensionRef filter is `weft.dev` `FaultInjection`, at most one
//   per rule or backend.

/// `spec` of an HTTPRoute.
public struct HTTPRouteSpec: Hashable, Sendable {
    /// The Service a route attaches to (`group: ""`, `kind: Service`).
    public struct ParentReference: Hashable, Sendable {
        public var name: String
        /// nil: the route's own namespace (a "producer" route).
        public var namespace: NamespaceName?
        /// A port name of the Service.
        public var sectionName: String?
        public var port: UInt16?

        public init(name: String, namespace: NamespaceName? = nil, sectionName: String? = nil, port: UInt16? = nil) {
            self.name = name
            self.namespace = namespace
            self.sectionName = sectionName
            self.port = port
        }
    }

    /// A Service port requests are sent (or mirrored) to.
    public struct BackendReference: Hashable, Sendable {
        public var name: String
        public var namespace: NamespaceName?
        /// The Service's port, not the target port.
        public var port: UInt16

        public init(name: String, namespace: NamespaceName? = nil, port: UInt16) {
            self.name = name
            self.namespace = namespace
            self.port = port
        }
    }

    public enum PathMatchType: String, CaseIterable, Hashable, Sendable {
        case exact = "Exact", pathPrefix = "PathPrefix", regularExpression = "RegularExpression"
    }

    public struct PathMatch: Hashable, Sendable {
        public var type: PathMatchType
        public var value: String

        public init(type: PathMatchType = .pathPrefix, value: String = "/") {
            self.type = type
            self.value = value
        }
    }

    public enum ValueMatchType: String, CaseIterable, Hashable, Sendable {
        case exact = "Exact", regularExpression = "RegularExpression"
    }

    /// A header or query parameter match.
    public struct ValueMatch: Hashable, Sendable {
        public var type: ValueMatchType
        public var name: String
        public var value: String

        public init(type: ValueMatchType = .exact, name: String, value: String) {
            self.type = type
            self.name = name
            self.value = value
        }
    }

    public enum Method: String, CaseIterable, Hashable, Sendable {
        case get = "GET", head = "HEAD", post = "POST", put = "PUT", delete = "DELETE"
        case connect = "CONNECT", options = "OPTIONS", trace = "TRACE", patch = "PATCH"
    }

    /// All conditions of one match must hold.
    public struct Match: Hashable, Sendable {
        public var path: PathMatch
        public var headers: [ValueMatch]
        public var queryParams: [ValueMatch]
        public var method: Method?

        public init(path: PathMatch = PathMatch(), headers: [ValueMatch] = [], queryParams: [ValueMatch] = [], method: Method? = nil) {
            self.path = path
            self.headers = headers
            self.queryParams = queryParams
            self.method = method
        }
    }

    public struct Header: Hashable, Sendable {
        public var name: String
        public var value: String

        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public struct HeaderModifier: Hashable, Sendable {
        public var set: [Header]
        public var add: [Header]
        public var remove: [String]

        public init(set: [Header] = [], add: [Header] = [], remove: [String] = []) {
            self.set = set
            self.add = add
            self.remove = remove
        }
    }

    public enum PathModifier: Hashable, Sendable {
        case replaceFullPath(String)
        /// Only on a rule with exactly one match, of type PathPrefix.
        case replacePrefixMatch(String)
    }

    public enum Scheme: String, CaseIterable, Hashable, Sendable {
        case http, https
    }

    public struct Redirect: Hashable, Sendable {
        public static let statusCodes = [301, 302, 303, 307, 308]

        public var scheme: Scheme?
        public var hostname: String?
        public var path: PathModifier?
        public var port: UInt16?
        public var statusCode: Int

        public init(scheme: Scheme? = nil, hostname: String? = nil, path: PathModifier? = nil, port: UInt16? = nil, statusCode: Int = 302) {
            self.scheme = scheme
            self.hostname = hostname
            self.path = path
            self.port = port
            self.statusCode = statusCode
        }
    }

    public struct URLRewrite: Hashable, Sendable {
        public var hostname: String?
        public var path: PathModifier?

        public init(hostname: String? = nil, path: PathModifier? = nil) {
            self.hostname = hostname
            self.path = path
        }
    }

    /// Which requests are mirrored; nil on `Mirror` means all of them.
    public enum MirrorShare: Hashable, Sendable {
        case percent(Int)
        case fraction(numerator: Int, denominator: Int)
    }

    public struct Mirror: Hashable, Sendable {
        public var backendRef: BackendReference
        public var share: MirrorShare?

        public init(backendRef: BackendReference, share: MirrorShare? = nil) {
            self.backendRef = backendRef
            self.share = share
        }
    }

    public enum FilterType: String, CaseIterable, Hashable, Sendable {
        case requestHeaderModifier = "RequestHeaderModifier"
        case responseHeaderModifier = "ResponseHeaderModifier"
        case requestMirror = "RequestMirror"
        case requestRedirect = "RequestRedirect"
        case urlRewrite = "URLRewrite"
        case extensionRef = "ExtensionRef"

        /// The member of a filter object that holds this type's settings.
        var field: String {
            switch self {
            case .requestHeaderModifier: return "requestHeaderModifier"
            case .responseHeaderModifier: return "responseHeaderModifier"
            case .requestMirror: return "requestMirror"
            case .requestRedirect: return "requestRedirect"
            case .urlRewrite: return "urlRewrite"
            case .extensionRef: return "extensionRef"
            }
        }
    }

    public enum Filter: Hashable, Sendable {
        case requestHeaderModifier(HeaderModifier)
        case responseHeaderModifier(HeaderModifier)
        case requestMirror(Mirror)
        case requestRedirect(Redirect)
        case urlRewrite(URLRewrite)
        /// `ExtensionRef` to the `weft.dev` `FaultInjection` of this name, in the route's namespace.
        case faultInjection(name: String)

        public var type: FilterType {
            switch self {
            case .requestHeaderModifier: return .requestHeaderModifier
            case .responseHeaderModifier: return .responseHeaderModifier
            case .requestMirror: return .requestMirror
            case .requestRedirect: return .requestRedirect
            case .urlRewrite: return .urlRewrite
            case .faultInjection: return .extensionRef
            }
        }
    }

    public struct BackendRef: Hashable, Sendable {
        public var backend: BackendReference
        /// 0 to 1,000,000, relative to the other backends of the rule.
        public var weight: Int
        public var filters: [Filter]

        public init(backend: BackendReference, weight: Int = 1, filters: [Filter] = []) {
            self.backend = backend
            self.weight = weight
            self.filters = filters
        }
    }

    public struct Timeouts: Hashable, Sendable {
        /// The whole request, retries included; 0s disables it.
        public var request: GatewayDuration?
        /// One attempt to a backend; never longer than `request`.
        public var backendRequest: GatewayDuration?

        public init(request: GatewayDuration? = nil, backendRequest: GatewayDuration? = nil) {
            self.request = request
            self.backendRequest = backendRequest
        }
    }

    /// GEP-1731 retries.
    public struct Retry: Hashable, Sendable {
        /// HTTP status codes (400 to 599) worth retrying.
        public var codes: [Int]
        public var attempts: Int?
        /// The least time between attempts.
        public var backoff: GatewayDuration?

        public init(codes: [Int] = [], attempts: Int? = nil, backoff: GatewayDuration? = nil) {
            self.codes = codes
            self.attempts = attempts
            self.backoff = backoff
        }
    }

    public struct Rule: Hashable, Sendable {
        public var name: String?
        /// Any one match selects the rule; never empty (the default matches every path).
        public var matches: [Match]
        public var filters: [Filter]
        public var backendRefs: [BackendRef]
        public var timeouts: Timeouts?
        public var retry: Retry?

        public init(name: String? = nil, matches: [Match] = [Match()], filters: [Filter] = [], backendRefs: [BackendRef] = [],
                    timeouts: Timeouts? = nil, retry: Retry? = nil) {
            self.name = name
            self.matches = matches.isEmpty ? [Match()] : matches
            self.filters = filters
            self.backendRefs = backendRefs
            self.timeouts = timeouts
            self.retry = retry
        }
    }

    public var parentRefs: [ParentReference]
    public var hostnames: [String]
    /// Never empty: without rules a route has one that matches every path.
    public var rules: [Rule]

    public init(parentRefs: [ParentReference], hostnames: [String] = [], rules: [Rule] = [Rule()]) {
        self.parentRefs = parentRefs
        self.hostnames = hostnames
        self.rules = rules.isEmpty ? [Rule()] : rules
    }

    // Limits of the Gateway API CRD.
    static let maxParentRefs = 32
    static let maxHostnames = 16
    static let maxRules = 16
    static let maxMatchesPerRule = 64
    static let maxMatchesPerRoute = 128
    static let maxListItems = 16
}

// MARK: - Decoding

extension HTTPRouteSpec {
    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> HTTPRouteSpec {
        guard let value else { throw ValidationError(field: path, "is required (at least parentRefs)") }
        let r = try FieldReader(value, at: path, allowed: ["parentRefs", "hostnames", "rules"], unsupported: [
            "useDefaultGateways": "Weft has no Gateways: a route attaches to Services through parentRefs",
        ])

        guard let parentItems = try r.list("parentRefs", maxItems: maxParentRefs), !parentItems.isEmpty else {
            throw ValidationError(field: r.field("parentRefs"), "at least one parentRef is required: the Service the route applies to")
        }
        var parents: [ParentReference] = []
        for item in parentItems {
            parents.append(try decodeParent(item, earlier: parents, listPath: r.field("parentRefs")))
        }

        var hostnames: [String] = []
        for item in try r.stringList("hostnames", maxItems: maxHostnames) ?? [] {
            guard ResourceSyntax.isHostname(item.value, allowingWildcard: true) else {
                throw ValidationError(field: item.path, "\"\(item.value)\" is not a hostname (lower-case DNS labels, optionally after a leading '*.'; no IP addresses)")
            }
            hostnames.append(item.value)
        }

        var rules: [Rule] = []
        if let ruleItems = try r.list("rules", maxItems: maxRules) {
            if ruleItems.isEmpty {
                throw ValidationError(field: r.field("rules"), "must not be empty; omit rules for one rule that matches every path")
            }
            for item in ruleItems { rules.append(try decodeRule(item)) }
            let total = rules.reduce(0) { $0 + $1.matches.count }
            if total > maxMatchesPerRoute {
                throw ValidationError(field: r.field("rules"), "\(total) matches in all; a route may have at most \(maxMatchesPerRoute) (and 64 per rule)")
            }
            for (i, rule) in rules.enumerated() {
                if let name = rule.name, let first = rules[..<i].firstIndex(where: { $0.name == name }) {
                    throw ValidationError(field: "\(r.field("rules"))[\(i)].name", "\"\(name)\" is already the name of \(r.field("rules"))[\(first)]: rule names must be unique within the route")
                }
            }
        } else {
            rules = [Rule()]
        }
        r.finish()
        return HTTPRouteSpec(parentRefs: parents, hostnames: hostnames, rules: rules)
    }

    private static func decodeParent(_ item: Located<JSONValue>, earlier: [ParentReference], listPath: String) throws(ValidationError) -> ParentReference {
        let p = try FieldReader(item.value, at: item.path, allowed: ["group", "kind", "namespace", "name", "sectionName", "port"])
        guard let group = try p.string("group") else {
            throw ValidationError(field: p.field("group"), "is required: write group: \"\" (the core group of Service); left out, Gateway API means gateway.networking.k8s.io, and Weft has no Gateways")
        }
        guard group.isEmpty else {
            throw ValidationError(field: p.field("group"), "\"\(group)\" is not supported: a Weft route's parent is a Service, whose group is \"\"")
        }
        guard let kind = try p.string("kind") else {
            throw ValidationError(field: p.field("kind"), "is required: write kind: Service; left out, Gateway API means Gateway, and Weft has no Gateways")
        }
        guard kind == "Service" else {
            throw ValidationError(field: p.field("kind"), "\"\(kind)\" is not supported: a Weft route's parent is a Service (the GAMMA mesh profile)")
        }
        let parent = ParentReference(name: try p.requiredName("name", .dns1035Label), namespace: try p.namespace("namespace"),
                                     sectionName: try p.name("sectionName", .dnsLabel), port: try p.port("port"))
        p.finish()
        // The CRD's rules for several references to one Service: they must
        // set the same optional fields, to different values.
        for (i, other) in earlier.enumerated() where other.name == parent.name && other.namespace == parent.namespace {
            if (other.sectionName == nil) != (parent.sectionName == nil) || (other.port == nil) != (parent.port == nil) {
                throw ValidationError(field: item.path, "refers to the same Service as \(listPath)[\(i)]: sectionName or port must then be set on both")
            }
            if other.sectionName == parent.sectionName, other.port == parent.port {
                throw ValidationError(field: item.path, "duplicates \(listPath)[\(i)]: references to the same Service need different sectionName or port")
            }
        }
        return parent
    }

    private static func decodeRule(_ item: Located<JSONValue>) throws(ValidationError) -> Rule {
        let r = try FieldReader(item.value, at: item.path, allowed: ["name", "matches", "filters", "backendRefs", "timeouts", "retry"], unsupported: [
            "sessionPersistence": "session persistence is not supported by Weft",
        ])
        let name = try r.name("name", .dnsSubdomain)

        var matches: [Match] = []
        for m in try r.list("matches", maxItems: maxMatchesPerRule) ?? [] {
            matches.append(try decodeMatch(m))
        }
        // Gateway API: "If no matches are specified, the default is a prefix
        // path match on '/'"; an empty list says the same as none.
        if matches.isEmpty { matches = [Match()] }

        let filterItems = try r.list("filters", maxItems: maxListItems) ?? []
        let filters = try decodeFilters(filterItems, matches: matches)

        var backends: [BackendRef] = []
        for b in try r.list("backendRefs", maxItems: maxListItems) ?? [] {
            backends.append(try decodeBackendRef(b, matches: matches))
        }
        if !backends.isEmpty, let redirect = filters.firstIndex(where: { $0.type == .requestRedirect }) {
            throw ValidationError(field: filterItems[redirect].path, "a RequestRedirect filter must not be used together with backendRefs: the redirect answers the request itself")
        }

        var timeouts: Timeouts?
        if let t = try r.object("timeouts", allowed: ["request", "backendRequest"]) {
            let request = try t.duration("request")
            let backend = try t.duration("backendRequest")
            if let request, let backend, request.milliseconds != 0, backend.milliseconds > request.milliseconds {
                throw ValidationError(field: t.field("backendRequest"), "\(backend) cannot be longer than the request timeout (\(request)), which covers every backend attempt")
            }
            timeouts = Timeouts(request: request, backendRequest: backend)
            t.finish()
        }

        var retry: Retry?
        if let t = try r.object("retry", allowed: ["codes", "attempts", "backoff"]) {
            var codes: [Int] = []
            for c in try t.list("codes") ?? [] {
                let code = try FieldReader.integer(c.value, at: c.path, in: 400...599)
                if codes.contains(code) { throw ValidationError(field: c.path, "\(code) is listed twice") }
                codes.append(code)
            }
            retry = Retry(codes: codes, attempts: try t.integer("attempts", in: 0...Int(Int32.max)), backoff: try t.duration("backoff"))
            t.finish()
        }
        r.finish()
        return Rule(name: name, matches: matches, filters: filters, backendRefs: backends, timeouts: timeouts, retry: retry)
    }

    private static func decodeMatch(_ item: Located<JSONValue>) throws(ValidationError) -> Match {
        let r = try FieldReader(item.value, at: item.path, allowed: ["path", "headers", "queryParams", "method"])
        var path = PathMatch()
        if let p = try r.object("path", allowed: ["type", "value"]) {
            path = PathMatch(type: try p.enumeration("type", PathMatchType.self) ?? .pathPrefix, value: try p.string("value") ?? "/")
            try checkPathMatch(path, at: p.field("value"))
            p.finish()
        }
        let headers = try decodeValueMatches(r, "headers", maxValueLength: 4096, caseInsensitiveNames: true)
        let query = try decodeValueMatches(r, "queryParams", maxValueLength: 1024, caseInsensitiveNames: false)
        let method = try r.enumeration("method", Method.self)
        r.finish()
        return Match(path: path, headers: headers, queryParams: query, method: method)
    }

    private static func checkPathMatch(_ match: PathMatch, at path: String) throws(ValidationError) {
        let v = match.value
        if v.utf8.count > 1024 { throw ValidationError(field: path, "at most 1024 characters are allowed") }
        switch match.type {
        case .regularExpression:
            try checkRegex(v, at: path)
        case .exact, .pathPrefix:
            guard v.hasPrefix("/") else {
                throw ValidationError(field: path, "\"\(v)\" must be an absolute path starting with '/' for type \(match.type.rawValue)")
            }
            // Traversal and encoded slashes would let one path match stand
            // for another after normalisation.
            for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] where v.contains(bad) {
                throw ValidationError(field: path, "\"\(v)\" must not contain '\(bad)'")
            }
            for bad in ["/..", "/."] where v.hasSuffix(bad) {
                throw ValidationError(field: path, "\"\(v)\" must not end with '\(bad)'")
            }
            guard ResourceSyntax.isPathCharacters(v) else {
                throw ValidationError(field: path, "\"\(v)\" holds characters a path cannot (allowed: letters, digits, -/._~!$&'()*+,;=:@ and %XX escapes)")
            }
        }
    }

    static func checkRegex(_ pattern: String, at path: String) throws(ValidationError) {
        do {
            _ = try Regex(pattern)
        } catch {
            throw ValidationError(field: path, "\"\(pattern)\" is not a regular expression Weft can compile: \(error)")
        }
    }

    private static func decodeValueMatches(_ r: FieldReader, _ key: String, maxValueLength: Int, caseInsensitiveNames: Bool) throws(ValidationError) -> [ValueMatch] {
        var out: [ValueMatch] = []
        for item in try r.list(key, maxItems: maxListItems) ?? [] {
            let m = try FieldReader(item.value, at: item.path, allowed: ["type", "name", "value"])
            let type = try m.enumeration("type", ValueMatchType.self) ?? .exact
            let name = try headerName(m, "name")
            let value = try m.requiredString("value")
            if value.isEmpty || value.utf8.count > maxValueLength {
                throw ValidationError(field: m.field("value"), "must be 1 to \(maxValueLength) characters")
            }
            if type == .regularExpression {
                try checkRegex(value, at: m.field("value"))
            } else if key == "headers" {
                try checkHeaderValue(value, at: m.field("value"))
            }
            let same = out.firstIndex { caseInsensitiveNames ? $0.name.lowercased() == name.lowercased() : $0.name == name }
            if let same {
                throw ValidationError(field: m.field("name"), "\"\(name)\" is already matched by \(r.field(key))[\(same)]\(caseInsensitiveNames ? " (header names are case-insensitive)" : "")")
            }
            m.finish()
            out.append(ValueMatch(type: type, name: name, value: value))
        }
        return out
    }

    private static func headerName(_ r: FieldReader, _ key: String) throws(ValidationError) -> String {
        let name = try r.requiredString(key)
        try checkHeaderName(name, at: r.field(key))
        return name
    }

    static func checkHeaderName(_ name: String, at path: String) throws(ValidationError) {
        guard ResourceSyntax.isHTTPToken(name) else {
            throw ValidationError(field: path, "\"\(name)\" is not an HTTP header name (1 to 256 letters, digits and !#$%&'*+-.^_`|~; HTTP/2 pseudo-headers such as :path are not headers)")
        }
    }

    /// CR, LF and NUL in a value would split or end the header on the wire.
    private static func checkHeaderValue(_ value: String, at path: String) throws(ValidationError) {
        if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
            throw ValidationError(field: path, "must not contain control characters (only tab is allowed)")
        }
    }

    // MARK: Filters

    /// Decodes a rule's or a backend's filters and checks them together.
    private static func decodeFilters(_ items: [Located<JSONValue>], matches: [Match]) throws(ValidationError) -> [Filter] {
        var filters: [Filter] = []
        for item in items {
            let filter = try decodeFilter(item, matches: matches)
            let repeatable: Set<FilterType> = [.requestMirror]
            if !repeatable.contains(filter.type), filters.contains(where: { $0.type == filter.type }) {
                let what = filter.type == .extensionRef ? "a FaultInjection filter (one fault per rule or backend)" : "the \(filter.type.rawValue) filter"
                throw ValidationError(field: item.path, "repeats \(what); it may appear once")
            }
            let pair: Set<FilterType> = [.requestRedirect, .urlRewrite]
            if pair.contains(filter.type), filters.contains(where: { pair.contains($0.type) }) {
                throw ValidationError(field: item.path, "a RequestRedirect and a URLRewrite filter cannot be used together")
            }
            filters.append(filter)
        }
        return filters
    }

    private static func decodeFilter(_ item: Located<JSONValue>, matches: [Match]) throws(ValidationError) -> Filter {
        let fields = FilterType.allCases.map(\.field)
        let r = try FieldReader(item.value, at: item.path, allowed: ["type"] + fields, unsupported: [
            "cors": "the CORS filter is not supported by Weft",
            "externalAuth": "the ExternalAuth filter is not supported by Weft",
        ])
        guard let type = try r.enumeration("type", FilterType.self) else {
            throw ValidationError(field: r.field("type"), "is required (one of: \(FilterType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        for other in FilterType.allCases where other != type && r.has(other.field) {
            throw ValidationError(field: r.field(other.field), "must not be set when type is \(type.rawValue)")
        }
        guard r.has(type.field) else {
            throw ValidationError(field: r.field(type.field), "is required when type is \(type.rawValue)")
        }
        let filter: Filter
        switch type {
        case .requestHeaderModifier:
            filter = .requestHeaderModifier(try decodeHeaderModifier(r, type.field))
        case .responseHeaderModifier:
            filter = .responseHeaderModifier(try decodeHeaderModifier(r, type.field))
        case .requestRedirect:
            let f = try r.object(type.field, allowed: ["scheme", "hostname", "path", "port", "statusCode"])!
            let code = try f.integer("statusCode", in: 100...599) ?? 302
            guard Redirect.statusCodes.contains(code) else {
                throw ValidationError(field: f.field("statusCode"), "\(code) is not one of: \(Redirect.statusCodes.map(String.init).joined(separator: ", "))")
            }
            filter = .requestRedirect(Redirect(scheme: try f.enumeration("scheme", Scheme.self), hostname: try preciseHostname(f),
                                               path: try decodePathModifier(f, matches: matches), port: try f.port("port"), statusCode: code))
            f.finish()
        case .urlRewrite:
            let f = try r.object(type.field, allowed: ["hostname", "path"])!
            filter = .urlRewrite(URLRewrite(hostname: try preciseHostname(f), path: try decodePathModifier(f, matches: matches)))
            f.finish()
        case .requestMirror:
            let f = try r.object(type.field, allowed: ["backendRef", "percent", "fraction"])!
            let backend = try decodeBackendReference(f.required("backendRef"), at: f.field("backendRef"), extra: [])
            backend.reader.finish()
            var share: MirrorShare?
            if let percent = try f.integer("percent", in: 0...100) { share = .percent(percent) }
            if let fraction = try f.object("fraction", allowed: ["numerator", "denominator"]) {
                if share != nil {
                    throw ValidationError(field: fraction.path, "only one of percent or fraction may be specified")
                }
                guard let numerator = try fraction.integer("numerator", in: 0...Int(Int32.max)) else {
                    throw ValidationError(field: fraction.field("numerator"), "is required")
                }
                let denominator = try fraction.integer("denominator", in: 1...Int(Int32.max)) ?? 100
                if numerator > denominator {
                    throw ValidationError(field: fraction.field("numerator"), "\(numerator) must not be greater than the denominator, \(denominator)")
                }
                share = .fraction(numerator: numerator, denominator: denominator)
                fraction.finish()
            }
            filter = .requestMirror(Mirror(backendRef: backend.reference, share: share))
            f.finish()
        case .extensionRef:
            let f = try r.object(type.field, allowed: ["group", "kind", "name"])!
            let group = try f.string("group") ?? ""
            let kind = try f.requiredString("kind")
            guard group == "weft.dev", kind == ResourceKind.faultInjection.rawValue else {
                throw ValidationError(field: f.path, "\(group.isEmpty ? "core" : group)/\(kind) is not an extension Weft knows; the one ExtensionRef filter is group: weft.dev, kind: FaultInjection")
            }
            filter = .faultInjection(name: try f.requiredName("name", .dnsSubdomain))
            f.finish()
        }
        r.finish()
        return filter
    }

    private static func preciseHostname(_ r: FieldReader) throws(ValidationError) -> String? {
        guard let host = try r.string("hostname") else { return nil }
        guard ResourceSyntax.isHostname(host, allowingWildcard: false) else {
            throw ValidationError(field: r.field("hostname"), "\"\(host)\" is not a hostname (lower-case DNS labels; no wildcard, no IP address)")
        }
        return host
    }

    private static func decodeHeaderModifier(_ r: FieldReader, _ key: String) throws(ValidationError) -> HeaderModifier {
        let f = try r.object(key, allowed: ["set", "add", "remove"])!
        // Gateway API: "Only one action for a given header name is permitted."
        var seen: [String: String] = [:]  // lower-cased name → where
        func claim(_ name: String, at path: String) throws(ValidationError) {
            if let first = seen[name.lowercased()] {
                throw ValidationError(field: path, "header \"\(name)\" already has an action at \(first); each header name may appear once across set, add and remove")
            }
            seen[name.lowercased()] = path
        }
        var lists: [String: [Header]] = [:]
        for action in ["set", "add"] {
            var headers: [Header] = []
            for item in try f.list(action, maxItems: maxListItems) ?? [] {
                let h = try FieldReader(item.value, at: item.path, allowed: ["name", "value"])
                let name = try headerName(h, "name")
                let value = try h.requiredString("value")
                if value.isEmpty || value.utf8.count > 4096 {
                    throw ValidationError(field: h.field("value"), "must be 1 to 4096 characters")
                }
                try checkHeaderValue(value, at: h.field("value"))
                try claim(name, at: h.field("name"))
                h.finish()
                headers.append(Header(name: name, value: value))
            }
            lists[action] = headers
        }
        var remove: [String] = []
        for item in try f.stringList("remove", maxItems: maxListItems) ?? [] {
            try checkHeaderName(item.value, at: item.path)
            try claim(item.value, at: item.path)
            remove.append(item.value)
        }
        f.finish()
        return HeaderModifier(set: lists["set"] ?? [], add: lists["add"] ?? [], remove: remove)
    }

    private enum PathModifierType: String, CaseIterable {
        case replaceFullPath = "ReplaceFullPath", replacePrefixMatch = "ReplacePrefixMatch"
    }

    private static func decodePathModifier(_ r: FieldReader, matches: [Match]) throws(ValidationError) -> PathModifier? {
        guard let p = try r.object("path", allowed: ["type", "replaceFullPath", "replacePrefixMatch"]) else { return nil }
        guard let type = try p.enumeration("type", PathModifierType.self) else {
            throw ValidationError(field: p.field("type"), "is required (ReplaceFullPath or ReplacePrefixMatch)")
        }
        let full = try p.string("replaceFullPath")
        let prefix = try p.string("replacePrefixMatch")
        let modifier: PathModifier
        switch type {
        case .replaceFullPath:
            if prefix != nil { throw ValidationError(field: p.field("replacePrefixMatch"), "type must be ReplacePrefixMatch when replacePrefixMatch is set") }
            guard let full else { throw ValidationError(field: p.field("replaceFullPath"), "is required when type is ReplaceFullPath") }
            try checkReplacementPath(full, at: p.field("replaceFullPath"), mayBeEmpty: false)
            modifier = .replaceFullPath(full)
        case .replacePrefixMatch:
            if full != nil { throw ValidationError(field: p.field("replaceFullPath"), "type must be ReplaceFullPath when replaceFullPath is set") }
            guard let prefix else { throw ValidationError(field: p.field("replacePrefixMatch"), "is required when type is ReplacePrefixMatch") }
            try checkReplacementPath(prefix, at: p.field("replacePrefixMatch"), mayBeEmpty: true)
            // Replacing "the matched prefix" needs exactly one prefix to replace.
            guard matches.count == 1, matches[0].path.type == .pathPrefix else {
                throw ValidationError(field: p.path, "ReplacePrefixMatch needs the rule to have exactly one match, of path type PathPrefix (it has \(matches.count) match\(matches.count == 1 ? " of type \(matches[0].path.type.rawValue)" : "es"))")
            }
            modifier = .replacePrefixMatch(prefix)
        }
        p.finish()
        return modifier
    }

    private static func checkReplacementPath(_ value: String, at path: String, mayBeEmpty: Bool) throws(ValidationError) {
        if value.isEmpty, mayBeEmpty { return }
        guard value.utf8.count <= 1024, value.hasPrefix("/"), ResourceSyntax.isPathCharacters(value) else {
            throw ValidationError(field: path, "\"\(value)\" must be a path of at most 1024 characters starting with '/' (letters, digits, -/._~!$&'()*+,;=:@ and %XX escapes)")
        }
    }

    // MARK: Backends

    /// A `BackendObjectReference` to a Service; `extra` lists the fields of
    /// the enclosing object (weight, filters) for the caller to read.
    private static func decodeBackendReference(_ value: JSONValue, at path: String, extra: [String]) throws(ValidationError) -> (reference: BackendReference, reader: FieldReader) {
        let r = try FieldReader(value, at: path, allowed: ["group", "kind", "name", "namespace", "port"] + extra)
        let group = try r.string("group") ?? ""
        guard group.isEmpty else {
            throw ValidationError(field: r.field("group"), "\"\(group)\" is not supported: Weft sends requests to Services, whose group is \"\"")
        }
        let kind = try r.string("kind") ?? "Service"
        guard kind == "Service" else {
            throw ValidationError(field: r.field("kind"), "\"\(kind)\" is not supported: Weft sends requests to Services")
        }
        let name = try r.requiredName("name", .dns1035Label)
        let namespace = try r.namespace("namespace")
        guard let port = try r.port("port") else {
            throw ValidationError(field: r.field("port"), "is required for a Service backend (the Service's port, not the target port)")
        }
        return (BackendReference(name: name, namespace: namespace, port: port), r)
    }

    private static func decodeBackendRef(_ item: Located<JSONValue>, matches: [Match]) throws(ValidationError) -> BackendRef {
        let (reference, r) = try decodeBackendReference(item.value, at: item.path, extra: ["weight", "filters"])
        let weight = try r.integer("weight", in: 0...1_000_000) ?? 1
        let filters = try decodeFilters(try r.list("filters", maxItems: maxListItems) ?? [], matches: matches)
        r.finish()
        return BackendRef(backend: reference, weight: weight, filters: filters)
    }
}

// MARK: - Encoding

extension HTTPRouteSpec {
    func encode() -> JSONValue {
        var o = JSONObject()
        o.set("parentRefs", list: parentRefs.map { p in
            var po: JSONObject = ["group": "", "kind": "Service"]
            po.set("namespace", p.namespace.map { .string($0.rawValue) })
            po.set("name", .string(p.name))
            po.set("sectionName", p.sectionName.map { .string($0) })
            po.set("port", p.port.map { .port($0) })
            return .object(po)
        })
        o.set("hostnames", list: JSONValue.strings(hostnames))
        o.set("rules", list: rules.map(Self.encode(rule:)))
        return .object(o)
    }

    private static func encode(rule: Rule) -> JSONValue {
        var o = JSONObject()
        o.set("name", rule.name.map { .string($0) })
        o.set("matches", list: rule.matches.map { m in
            var mo: JSONObject = ["path": ["type": .string(m.path.type.rawValue), "value": .string(m.path.value)]]
            mo.set("headers", list: m.headers.map(encode(valueMatch:)))
            mo.set("queryParams", list: m.queryParams.map(encode(valueMatch:)))
            mo.set("method", m.method.map { .string($0.rawValue) })
            return .object(mo)
        })
        o.set("filters", list: rule.filters.map(encode(filter:)))
        o.set("backendRefs", list: rule.backendRefs.map { b in
            var bo = encode(backend: b.backend)
            bo.set("weight", .integer(b.weight))
            bo.set("filters", list: b.filters.map(encode(filter:)))
            return .object(bo)
        })
        if let t = rule.timeouts {
            var to = JSONObject()
            to.set("request", t.request.map { .string($0.text) })
            to.set("backendRequest", t.backendRequest.map { .string($0.text) })
            o.set("timeouts", .object(to))
        }
        if let r = rule.retry {
            var ro = JSONObject()
            ro.set("codes", list: r.codes.map { .integer($0) })
            ro.set("attempts", r.attempts.map { .integer($0) })
            ro.set("backoff", r.backoff.map { .string($0.text) })
            o.set("retry", .object(ro))
        }
        return .object(o)
    }

    private static func encode(valueMatch m: ValueMatch) -> JSONValue {
        ["type": .string(m.type.rawValue), "name": .string(m.name), "value": .string(m.value)]
    }

    private static func encode(backend: BackendReference) -> JSONObject {
        var o: JSONObject = ["group": "", "kind": "Service", "name": .string(backend.name)]
        o.set("namespace", backend.namespace.map { .string($0.rawValue) })
        o.set("port", .port(backend.port))
        return o
    }

    private static func encode(filter: Filter) -> JSONValue {
        var o: JSONObject = ["type": .string(filter.type.rawValue)]
        let settings: JSONValue
        switch filter {
        case .requestHeaderModifier(let m), .responseHeaderModifier(let m):
            var mo = JSONObject()
            mo.set("set", list: m.set.map { ["name": .string($0.name), "value": .string($0.value)] })
            mo.set("add", list: m.add.map { ["name": .string($0.name), "value": .string($0.value)] })
            mo.set("remove", list: JSONValue.strings(m.remove))
            settings = .object(mo)
        case .requestRedirect(let r):
            var ro = JSONObject()
            ro.set("scheme", r.scheme.map { .string($0.rawValue) })
            ro.set("hostname", r.hostname.map { .string($0) })
            ro.set("path", r.path.map(encode(pathModifier:)))
            ro.set("port", r.port.map { .port($0) })
            ro.set("statusCode", .integer(r.statusCode))
            settings = .object(ro)
        case .urlRewrite(let u):
            var uo = JSONObject()
            uo.set("hostname", u.hostname.map { .string($0) })
            uo.set("path", u.path.map(encode(pathModifier:)))
            settings = .object(uo)
        case .requestMirror(let m):
            var mo: JSONObject = ["backendRef": .object(encode(backend: m.backendRef))]
            switch m.share {
            case .percent(let p)?: mo.set("percent", .integer(p))
            case .fraction(let n, let d)?: mo.set("fraction", ["numerator": .integer(n), "denominator": .integer(d)])
            case nil: break
            }
            settings = .object(mo)
        case .faultInjection(let name):
            settings = ["group": "weft.dev", "kind": .string(ResourceKind.faultInjection.rawValue), "name": .string(name)]
        }
        o.set(filter.type.field, settings)
        return .object(o)
    }

    private static func encode(pathModifier: PathModifier) -> JSONValue {
        switch pathModifier {
        case .replaceFullPath(let p): return ["type": "ReplaceFullPath", "replaceFullPath": .string(p)]
        case .replacePrefixMatch(let p): return ["type": "ReplacePrefixMatch", "replacePrefixMatch": .string(p)]
        }
    }
}
