import WeftCore

/// The pure parts of HTTPRoute's filters and retry policy: what a redirect
/// answers, what a rewrite forwards, the mirror's Host, when to try again.
/// No I/O; the node proxy applies them.
public enum RouteFilters {
    /// A path after `ReplaceFullPath` or `ReplacePrefixMatch`. `matchedPrefix`
    /// is the rule's PathPrefix (Gateway API allows ReplacePrefixMatch only on
    /// a rule with exactly one PathPrefix match). The prefix is replaced
    /// segment-wise, as Gateway API's conformance tests expect: prefix `/api`,
    /// replacement `/v2`: `/api/x` → `/v2/x`, `/api` → `/v2`; replacement `/`:
    /// `/api/x` → `/x`, `/api` → `/`.
    public static func rewritePath(_ path: String, _ modifier: HTTPRouteSpec.PathModifier, matchedPrefix: String?) -> String {
        switch modifier {
        case .replaceFullPath(let full):
            return full.isEmpty ? "/" : full
        case .replacePrefixMatch(let replacement):
            let prefix = Self.trimmedSlash(matchedPrefix ?? "/")
            guard path == prefix || path.hasPrefix(prefix + "/") || prefix.isEmpty else { return path }
            let rest = String(path.dropFirst(prefix.count))  // "" or "/…"
            let head = Self.trimmedSlash(replacement)
            let joined = head + rest
            return joined.isEmpty ? "/" : joined
        }
    }

    /// "/api/" → "/api"; "/" → "".
    static func trimmedSlash(_ s: String) -> String {
        var s = Substring(s)
        while s.hasSuffix("/") { s = s.dropLast() }
        return String(s)
    }

    /// The `Location` of a RequestRedirect. Scheme, host, port and path
    /// default to the request's; the port is left out when it is the
    /// scheme's default, and when the scheme changes without a port given
    /// (Gateway API: the new scheme's default port is meant).
    public static func redirectLocation(_ r: HTTPRouteSpec.Redirect, requestHost: String?, requestPath: String,
                                        query: String?, matchedPrefix: String?) -> String {
        let scheme = r.scheme?.rawValue ?? "http"
        let (requestHostname, requestPort) = HostHeader.split(requestHost ?? "")
        let host = r.hostname ?? requestHostname
        var port: UInt16? = r.port
        if port == nil, r.scheme == nil || r.scheme == .http { port = requestPort }
        let defaultPort: UInt16 = scheme == "https" ? 443 : 80
        let authority = (port == nil || port == defaultPort) ? host : "\(host):\(port!)"
        let path = r.path.map { rewritePath(requestPath, $0, matchedPrefix: matchedPrefix) } ?? requestPath
        return "\(scheme)://\(authority)\(path)\(query.map { "?\($0)" } ?? "")"
    }

    /// The Host of a mirrored request: `-shadow` after the host name, before
    /// any port, as Envoy and Istio send it, so the mirror can tell copies
    /// from real traffic.
    public static func shadowHost(_ host: String) -> String {
        let (name, port) = HostHeader.split(host)
        return name + "-shadow" + (port.map { ":\($0)" } ?? "")
    }

    /// Whether this request falls in a share given as a percentage (0 to 100).
    public static func sampled(percent: Double, roll: Double = Double.random(in: 0..<100)) -> Bool {
        percent >= 100 || (percent > 0 && roll < percent)
    }

    /// The share of a RequestMirror as a percentage.
    public static func percent(_ share: HTTPRouteSpec.MirrorShare?) -> Double {
        switch share {
        case nil: return 100
        case .percent(let p)?: return Double(p)
        case .fraction(let n, let d)?: return d > 0 ? 100 * Double(n) / Double(d) : 0
        }
    }
}

/// GEP-1731 retries as the proxy runs them.
public struct RetryPolicy: Sendable, Hashable {
    /// Statuses retried when the route names none (Envoy's `5xx` less 501).
    public static let defaultCodes: Set<Int> = [500, 502, 503, 504]
    /// Envoy's default base interval.
    public static let defaultBackoffMilliseconds: Int64 = 25

    /// Tries in all, the first included.
    public var maxAttempts: Int
    public var codes: Set<Int>
    public var backoffMilliseconds: Int64

    /// No retry policy: one try, and connect failures only move on to the
    /// next endpoint (as without retries).
    public static let none = RetryPolicy(maxAttempts: 1, codes: [], backoffMilliseconds: defaultBackoffMilliseconds)

    public init(maxAttempts: Int, codes: Set<Int>, backoffMilliseconds: Int64) {
        self.maxAttempts = maxAttempts
        self.codes = codes
        self.backoffMilliseconds = backoffMilliseconds
    }

    /// From a rule's `retry`: `attempts` counts retries after the first try
    /// (GEP-1731: "the maximum number of times an individual request … should
    /// be retried"), 1 when not given, as Envoy's default.
    public init(_ retry: HTTPRouteSpec.Retry?) {
        guard let retry else {
            self = .none
            return
        }
        self.init(maxAttempts: 1 + max(0, retry.attempts ?? 1),
                  codes: retry.codes.isEmpty ? Self.defaultCodes : Set(retry.codes),
                  backoffMilliseconds: max(1, retry.backoff?.milliseconds ?? Self.defaultBackoffMilliseconds))
    }

    /// The wait before retry number `retry` (1 for the first retry):
    /// exponential from the base, with jitter, never below the base (the
    /// least time between attempts, as GEP-1731 defines backoff) and never
    /// above ten times it (Envoy's default cap).
    public func backoff(retry: Int, jitter: Double = Double.random(in: 0..<1)) -> Int64 {
        let base = backoffMilliseconds
        let exponent = min(max(0, retry - 1), 10)
        let low = min(base << Int64(exponent), base * 10)
        let high = min(low * 2, base * 10)
        return low + Int64(Double(high - low) * min(max(jitter, 0), 1))
    }
}
