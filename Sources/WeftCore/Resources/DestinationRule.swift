// Istio's DestinationRule (`networking.istio.io/v1`): the traffic policy of a
// Service, for what Gateway API leaves out: load balancing, outlier detection,
// connection-pool limits (circuit breaking).
//
// What Weft leaves out, refused with the field named rather than ignored:
// subsets, portLevelSettings, tls (mesh traffic is always Weft's mutual TLS),
// exportTo, workloadSelector, trafficPolicy.proxyProtocol and tunnel, the
// locality and warm-up settings, consistentHash.useSourceIp and
// httpQueryParameterName and ring sizes, and TCP keepalive/connect timeout.

/// `spec` of a DestinationRule.
public struct DestinationRuleSpec: Hashable, Sendable {
    public enum SimpleLB: String, CaseIterable, Hashable, Sendable {
        case roundRobin = "ROUND_ROBIN"
        /// Power of two choices: the less loaded of two random endpoints.
        case leastRequest = "LEAST_REQUEST"
        case random = "RANDOM"
        /// Istio's alias of LEAST_REQUEST's predecessor; same as round robin in Envoy today.
        case unspecified = "UNSPECIFIED"
    }

    public enum ConsistentHash: Hashable, Sendable {
        case header(String)
        /// Cookie name; Weft does not generate the cookie (no `ttl` support):
        /// requests without it are balanced by the simple policy.
        case cookie(String)
    }

    public struct LoadBalancer: Hashable, Sendable {
        public var simple: SimpleLB?
        public var consistentHash: ConsistentHash?

        public init(simple: SimpleLB? = nil, consistentHash: ConsistentHash? = nil) {
            self.simple = simple
            self.consistentHash = consistentHash
        }
    }

    /// Envoy's circuit breakers, in Istio's names.
    public struct ConnectionPool: Hashable, Sendable {
        /// Connections open at once to the Service from this node's proxy.
        public var maxConnections: Int?
        /// Requests waiting for a connection (HTTP/1.1).
        public var http1MaxPendingRequests: Int?
        /// Requests in flight at once.
        public var http2MaxRequests: Int?
        /// Requests on one upstream connection before it is closed (1: no reuse).
        public var maxRequestsPerConnection: Int?

        public init(maxConnections: Int? = nil, http1MaxPendingRequests: Int? = nil, http2MaxRequests: Int? = nil,
                    maxRequestsPerConnection: Int? = nil) {
            self.maxConnections = maxConnections
            self.http1MaxPendingRequests = http1MaxPendingRequests
            self.http2MaxRequests = http2MaxRequests
            self.maxRequestsPerConnection = maxRequestsPerConnection
        }
    }

    public struct OutlierDetection: Hashable, Sendable {
        /// 5xx answers (and connect failures, resets, timeouts) in a row that eject an endpoint.
        public var consecutive5xxErrors: Int?
        /// 502, 503, 504 (and connect failures) in a row that eject an endpoint.
        public var consecutiveGatewayErrors: Int?
        public var interval: GatewayDuration
        /// Ejection lasts this times the number of times the endpoint was ejected.
        public var baseEjectionTime: GatewayDuration
        /// At most this share of a Service's endpoints are ejected at once.
        public var maxEjectionPercent: Int

        public init(consecutive5xxErrors: Int? = nil, consecutiveGatewayErrors: Int? = nil,
                    interval: GatewayDuration, baseEjectionTime: GatewayDuration, maxEjectionPercent: Int) {
            self.consecutive5xxErrors = consecutive5xxErrors
            self.consecutiveGatewayErrors = consecutiveGatewayErrors
            self.interval = interval
            self.baseEjectionTime = baseEjectionTime
            self.maxEjectionPercent = maxEjectionPercent
        }
    }

    public struct TrafficPolicy: Hashable, Sendable {
        public var loadBalancer: LoadBalancer?
        public var connectionPool: ConnectionPool?
        public var outlierDetection: OutlierDetection?

        public init(loadBalancer: LoadBalancer? = nil, connectionPool: ConnectionPool? = nil, outlierDetection: OutlierDetection? = nil) {
            self.loadBalancer = loadBalancer
            self.connectionPool = connectionPool
            self.outlierDetection = outlierDetection
        }
    }

    /// The Service's name, in the rule's namespace (`catalog`, or
    /// `catalog.shop.svc.<domain>` written out).
    public var host: String
    public var trafficPolicy: TrafficPolicy

    public init(host: String, trafficPolicy: TrafficPolicy = TrafficPolicy()) {
        self.host = host
        self.trafficPolicy = trafficPolicy
    }

    /// The Service this rule is for: `host` without `.<namespace>.svc…`.
    public func serviceName(namespace: String) -> String? {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 1 { return parts[0] }
        if parts.count >= 3, parts[1] == namespace, parts[2] == "svc" { return parts[0] }
        return nil
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> DestinationRuleSpec {
        let unsupportedTop = [
            "subsets": "subsets are not supported: route to a Service per version with HTTPRoute backendRefs (a canary between Services)",
            "exportTo": "exportTo is not supported: a DestinationRule applies to its Service wherever it is called from",
            "workloadSelector": "workloadSelector is not supported: a DestinationRule applies on every node",
        ]
        guard let value else { throw ValidationError(field: path, "is required (host, trafficPolicy)") }
        let r = try FieldReader(value, at: path, allowed: ["host", "trafficPolicy"], unsupported: unsupportedTop)
        let host = try r.requiredString("host")
        let hostParts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard !host.contains("*"), hostParts.allSatisfy({ DNSLabel.isValid(String($0)) }) else {
            throw ValidationError(field: r.field("host"), "\"\(host)\" must name a Service of this namespace (catalog, or catalog.<namespace>.svc.<domain>); wildcards are not supported")
        }
        var spec = DestinationRuleSpec(host: host)
        if let t = try r.object("trafficPolicy", allowed: ["loadBalancer", "connectionPool", "outlierDetection"], unsupported: [
            "portLevelSettings": "portLevelSettings are not supported: the policy applies to every port of the Service",
            "tls": "tls is not supported: traffic to meshed workloads is always Weft's mutual TLS",
            "tunnel": "tunnel is not supported", "proxyProtocol": "proxyProtocol is not supported",
        ]) {
            spec.trafficPolicy.loadBalancer = try decodeLoadBalancer(t)
            spec.trafficPolicy.connectionPool = try decodeConnectionPool(t)
            spec.trafficPolicy.outlierDetection = try decodeOutlierDetection(t)
            t.finish()
        }
        r.finish()
        return spec
    }

    private static func decodeLoadBalancer(_ t: FieldReader) throws(ValidationError) -> LoadBalancer? {
        guard let lb = try t.object("loadBalancer", allowed: ["simple", "consistentHash"], unsupported: [
            "localityLbSetting": "localityLbSetting is not supported", "warmupDurationSecs": "warmupDurationSecs is not supported",
            "warmup": "warmup is not supported",
        ]) else { return nil }
        var out = LoadBalancer(simple: try lb.enumeration("simple", SimpleLB.self))
        if let ch = try lb.object("consistentHash", allowed: ["httpHeaderName", "httpCookie"], unsupported: [
            "useSourceIp": "useSourceIp is not supported: every connection reaches the proxy from the workload's own address",
            "httpQueryParameterName": "httpQueryParameterName is not supported; use httpHeaderName or httpCookie",
            "ringHash": "ringHash settings are not supported (Weft uses rendezvous hashing)",
            "maglev": "maglev settings are not supported (Weft uses rendezvous hashing)",
            "minimumRingSize": "minimumRingSize is not supported (Weft uses rendezvous hashing)",
        ]) {
            if let header = try ch.string("httpHeaderName") {
                try HTTPRouteSpec.checkHeaderName(header, at: ch.field("httpHeaderName"))
                out.consistentHash = .header(header.lowercased())
            }
            if let cookie = try ch.object("httpCookie", allowed: ["name"], unsupported: [
                "ttl": "ttl is not supported: Weft does not set the cookie; requests without it are balanced by the simple policy",
                "path": "path is not supported: Weft does not set the cookie",
                "attributes": "attributes are not supported: Weft does not set the cookie",
            ]) {
                if out.consistentHash != nil {
                    throw ValidationError(field: ch.field("httpCookie"), "set either httpHeaderName or httpCookie, not both")
                }
                let name = try cookie.requiredString("name")
                guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && !";,= \"".utf8.contains($0) }) else {
                    throw ValidationError(field: cookie.field("name"), "\"\(name)\" is not a cookie name")
                }
                out.consistentHash = .cookie(name)
                cookie.finish()
            }
            if out.consistentHash == nil {
                throw ValidationError(field: ch.path, "set httpHeaderName or httpCookie")
            }
            ch.finish()
        }
        if out.simple != nil, out.consistentHash != nil {
            throw ValidationError(field: lb.field("consistentHash"), "set either simple or consistentHash, not both")
        }
        if out.simple == nil, out.consistentHash == nil {
            throw ValidationError(field: lb.path, "set simple or consistentHash")
        }
        lb.finish()
        return out
    }

    private static func decodeConnectionPool(_ t: FieldReader) throws(ValidationError) -> ConnectionPool? {
        guard let cp = try t.object("connectionPool", allowed: ["tcp", "http"]) else { return nil }
        var out = ConnectionPool()
        if let tcp = try cp.object("tcp", allowed: ["maxConnections"], unsupported: [
            "connectTimeout": "connectTimeout is not supported: weftd's proxy.connectTimeoutMs applies",
            "tcpKeepalive": "tcpKeepalive is not supported", "maxConnectionDuration": "maxConnectionDuration is not supported",
            "idleTimeout": "idleTimeout is not supported: weftd's proxy.idleTimeoutSeconds applies",
        ]) {
            out.maxConnections = try tcp.integer("maxConnections", in: 1...1_000_000)
            tcp.finish()
        }
        if let http = try cp.object("http", allowed: ["http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection"], unsupported: [
            "maxRetries": "maxRetries is not supported: retries are per route (HTTPRoute retry)",
            "idleTimeout": "idleTimeout is not supported", "h2UpgradePolicy": "h2UpgradePolicy is not supported",
            "useClientProtocol": "useClientProtocol is not supported", "maxConcurrentStreams": "maxConcurrentStreams is not supported",
        ]) {
            out.http1MaxPendingRequests = try http.integer("http1MaxPendingRequests", in: 1...1_000_000)
            out.http2MaxRequests = try http.integer("http2MaxRequests", in: 1...1_000_000)
            out.maxRequestsPerConnection = try http.integer("maxRequestsPerConnection", in: 1...1_000_000)
            http.finish()
        }
        cp.finish()
        return out
    }

    private static func decodeOutlierDetection(_ t: FieldReader) throws(ValidationError) -> OutlierDetection? {
        guard let od = try t.object("outlierDetection", allowed: [
            "consecutive5xxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime", "maxEjectionPercent",
        ], unsupported: [
            "consecutiveErrors": "consecutiveErrors was removed by Istio; use consecutive5xxErrors",
            "splitExternalLocalOriginErrors": "splitExternalLocalOriginErrors is not supported",
            "consecutiveLocalOriginFailures": "consecutiveLocalOriginFailures is not supported",
            "minHealthPercent": "minHealthPercent is not supported: maxEjectionPercent bounds ejections",
        ]) else { return nil }
        let c5 = try od.integer("consecutive5xxErrors", in: 0...1_000_000)
        let cg = try od.integer("consecutiveGatewayErrors", in: 0...1_000_000)
        let interval = try od.duration("interval") ?? GatewayDuration(milliseconds: 10_000)!
        let base = try od.duration("baseEjectionTime") ?? GatewayDuration(milliseconds: 30_000)!
        if interval.milliseconds < 1 { throw ValidationError(field: od.field("interval"), "must be at least 1ms") }
        if base.milliseconds < 1 { throw ValidationError(field: od.field("baseEjectionTime"), "must be at least 1ms") }
        let out = OutlierDetection(consecutive5xxErrors: c5 ?? (cg == nil ? 5 : nil), consecutiveGatewayErrors: cg,
                                   interval: interval, baseEjectionTime: base,
                                   maxEjectionPercent: try od.integer("maxEjectionPercent", in: 0...100) ?? 10)
        od.finish()
        return out
    }

    func encode() -> JSONValue {
        var o: JSONObject = ["host": .string(host)]
        var t = JSONObject()
        if let lb = trafficPolicy.loadBalancer {
            var l = JSONObject()
            l.set("simple", lb.simple.map { .string($0.rawValue) })
            switch lb.consistentHash {
            case .header(let h)?: l.set("consistentHash", ["httpHeaderName": .string(h)])
            case .cookie(let c)?: l.set("consistentHash", ["httpCookie": ["name": .string(c)]])
            case nil: break
            }
            t.set("loadBalancer", .object(l))
        }
        if let cp = trafficPolicy.connectionPool {
            var c = JSONObject()
            if let m = cp.maxConnections { c.set("tcp", ["maxConnections": .integer(m)]) }
            var h = JSONObject()
            h.set("http1MaxPendingRequests", cp.http1MaxPendingRequests.map { .integer($0) })
            h.set("http2MaxRequests", cp.http2MaxRequests.map { .integer($0) })
            h.set("maxRequestsPerConnection", cp.maxRequestsPerConnection.map { .integer($0) })
            if !h.isEmpty { c.set("http", .object(h)) }
            t.set("connectionPool", .object(c))
        }
        if let od = trafficPolicy.outlierDetection {
            var d = JSONObject()
            d.set("consecutive5xxErrors", od.consecutive5xxErrors.map { .integer($0) })
            d.set("consecutiveGatewayErrors", od.consecutiveGatewayErrors.map { .integer($0) })
            d.set("interval", .string(od.interval.text))
            d.set("baseEjectionTime", .string(od.baseEjectionTime.text))
            d.set("maxEjectionPercent", .integer(od.maxEjectionPercent))
            t.set("outlierDetection", .object(d))
        }
        if !t.isEmpty { o.set("trafficPolicy", .object(t)) }
        return .object(o)
    }
}
