// Evaluation of Istio's AuthorizationPolicy and PeerAuthentication for one
// workload: what the destination's node proxy (AuthorizationPolicy) and the
// kernel (PeerAuthentication STRICT) enforce. Pure: no I/O, table-tested.

/// What the destination proxy knows of one connection or request.
///
/// The source identity comes from the dialling socket's cgroup (same node) or
/// from the verified peer certificate (another node), never from an address:
/// `sourcePrincipal` is nil for plaintext, and then every principal, namespace
/// and service account rule fails to match.
public struct AuthorizationRequest: Sendable, Hashable {
    public struct HTTP: Sendable, Hashable {
        public var method: String
        /// Normalised (dot segments removed, unreserved characters decoded,
        /// slashes merged), without the query: what routing also matched.
        public var path: String
        /// The Host header (or :authority), port included when sent.
        public var host: String?
        /// Names as received, in order: a condition compares them without regard to case
        /// (`Condition.sameHeaderName`). Nothing is lowered up front, since most requests meet
        /// no policy that reads a header.
        public var headers: [(name: String, value: String)]

        public init(method: String, path: String, host: String?, headers: [(name: String, value: String)]) {
            self.method = method
            self.path = path
            self.host = host
            self.headers = headers
        }

        public static func == (a: HTTP, b: HTTP) -> Bool {
            a.method == b.method && a.path == b.path && a.host == b.host
                && a.headers.elementsEqual(b.headers) { $0.name == $1.name && $0.value == $1.value }
        }

        public func hash(into h: inout Hasher) {
            h.combine(method)
            h.combine(path)
            h.combine(host)
            for x in headers { h.combine(x.name); h.combine(x.value) }
        }
    }

    /// `<trust-domain>/ns/<ns>/sa/<sa>` (the SPIFFE ID without `spiffe://`).
    public var sourcePrincipal: String?
    public var sourceIP: IPAddress?
    public var destinationIP: IPAddress?
    public var destinationPort: UInt16
    public var sni: String?
    /// nil: the connection is not parsed as HTTP (TCP rules apply).
    public var http: HTTP?

    public init(sourcePrincipal: String?, sourceIP: IPAddress? = nil, destinationIP: IPAddress? = nil,
                destinationPort: UInt16, sni: String? = nil, http: HTTP? = nil) {
        self.sourcePrincipal = sourcePrincipal.map { $0.hasPrefix("spiffe://") ? String($0.dropFirst(9)) : $0 }
        self.sourceIP = sourceIP
        self.destinationIP = destinationIP
        self.destinationPort = destinationPort
        self.sni = sni
        self.http = http
    }

    /// Namespace and service account read from the principal (`…/ns/<ns>/sa/<sa>`).
    var sourceNamespace: String? { principalPart("ns") }
    var sourceServiceAccount: String? { principalPart("sa") }

    private func principalPart(_ key: String) -> String? {
        guard let p = sourcePrincipal else { return nil }
        let parts = p.split(separator: "/", omittingEmptySubsequences: false)
        // <td>/ns/<ns>/sa/<sa>: exactly five segments, or it is not a mesh identity.
        guard parts.count == 5, parts[1] == "ns", parts[3] == "sa" else { return nil }
        return String(key == "ns" ? parts[2] : parts[4])
    }
}

/// The outcome for one connection or request.
public struct AuthorizationDecision: Sendable, Hashable {
    public var allowed: Bool
    /// The policy that decided a denial (`namespace/name`), or nil when the
    /// denial is "an ALLOW policy exists and none matched".
    public var deniedBy: String?
    /// AUDIT policies whose rules matched.
    public var audited: [String]

    public static let allowAll = AuthorizationDecision(allowed: true, deniedBy: nil, audited: [])
}

/// One policy as the node holds it.
public struct NamedAuthorizationPolicy: Sendable, Hashable {
    public var namespace: String
    public var name: String
    public var spec: AuthorizationPolicySpec

    public init(namespace: String, name: String, spec: AuthorizationPolicySpec) {
        self.namespace = namespace
        self.name = name
        self.spec = spec
    }

    public var id: String { "\(namespace)/\(name)" }

    /// The policy applies to a workload of its namespace its selector matches.
    public func applies(namespace: String, labels: [String: String]) -> Bool {
        guard namespace == self.namespace else { return false }
        guard let selector = spec.selector else { return true }
        return selector.allSatisfy { labels[$0.key] == $0.value }
    }

    /// A rule of this policy names an HTTP-only attribute: traffic to the
    /// workload must be parsed as HTTP for the rule to mean what it says.
    public var usesHTTPFields: Bool { spec.rules.contains { $0.usesHTTPFields } }
}

/// The AuthorizationPolicies that apply to one workload, evaluated with
/// Istio's order: DENY, then ALLOW (AUDIT only records).
public struct WorkloadAuthorization: Sendable, Hashable {
    public var deny: [NamedAuthorizationPolicy] = []
    public var allow: [NamedAuthorizationPolicy] = []
    public var audit: [NamedAuthorizationPolicy] = []

    public init(policies: [NamedAuthorizationPolicy], namespace: String, labels: [String: String]) {
        for p in policies where p.applies(namespace: namespace, labels: labels) {
            switch p.spec.action {
            case .deny: deny.append(p)
            case .allow: allow.append(p)
            case .audit: audit.append(p)
            }
        }
    }

    public var isEmpty: Bool { deny.isEmpty && allow.isEmpty && audit.isEmpty }

    /// Some applicable rule needs HTTP attributes.
    public var usesHTTPFields: Bool { (deny + allow + audit).contains { $0.usesHTTPFields } }

    public func evaluate(_ request: AuthorizationRequest) -> AuthorizationDecision {
        // TCP traffic and HTTP-only fields (Istio's rule): a DENY or AUDIT
        // rule ignores them, so it matches more; an ALLOW rule with them
        // matches nothing. Either way, the result is the stricter one.
        for p in deny where p.spec.rules.contains(where: { $0.matches(request, httpFieldsOnTCP: .ignore, policyNamespace: p.namespace) }) {
            return AuthorizationDecision(allowed: false, deniedBy: p.id, audited: audited(request))
        }
        if allow.isEmpty { return AuthorizationDecision(allowed: true, deniedBy: nil, audited: audited(request)) }
        let allowed = allow.contains { p in p.spec.rules.contains { $0.matches(request, httpFieldsOnTCP: .neverMatch, policyNamespace: p.namespace) } }
        return AuthorizationDecision(allowed: allowed, deniedBy: nil, audited: audited(request))
    }

    private func audited(_ request: AuthorizationRequest) -> [String] {
        audit.filter { p in p.spec.rules.contains { $0.matches(request, httpFieldsOnTCP: .ignore, policyNamespace: p.namespace) } }.map(\.id)
    }
}

enum HTTPFieldsOnTCP { case ignore, neverMatch }

extension AuthorizationPolicySpec.Rule {
    var usesHTTPFields: Bool {
        to.contains { $0.usesHTTPFields } || when.contains { if case .requestHeader = $0.key { return true } else { return false } }
    }

    func matches(_ r: AuthorizationRequest, httpFieldsOnTCP: HTTPFieldsOnTCP, policyNamespace: String) -> Bool {
        if r.http == nil, httpFieldsOnTCP == .neverMatch, usesHTTPFields { return false }
        if !from.isEmpty, !from.contains(where: { $0.matches(r, policyNamespace: policyNamespace) }) { return false }
        if !to.isEmpty, !to.contains(where: { $0.matches(r) }) { return false }
        return when.allSatisfy { $0.matches(r, policyNamespace: policyNamespace) }
    }
}

extension AuthorizationPolicySpec.Source {
    func matches(_ r: AuthorizationRequest, policyNamespace: String) -> Bool {
        let principal = r.sourcePrincipal ?? ""
        let namespace = r.sourceNamespace ?? ""
        if !principals.isEmpty, !principals.contains(where: { $0.matches(principal) }) { return false }
        if notPrincipals.contains(where: { $0.matches(principal) }) { return false }
        if !namespaces.isEmpty, !namespaces.contains(where: { $0.matches(namespace) }) { return false }
        if notNamespaces.contains(where: { $0.matches(namespace) }) { return false }
        if !serviceAccounts.isEmpty, !serviceAccounts.contains(where: { Self.serviceAccount($0, matches: r, policyNamespace: policyNamespace) }) { return false }
        if notServiceAccounts.contains(where: { Self.serviceAccount($0, matches: r, policyNamespace: policyNamespace) }) { return false }
        if !ipBlocks.isEmpty, !(r.sourceIP.map { ip in ipBlocks.contains { $0.contains(ip) } } ?? false) { return false }
        if let ip = r.sourceIP, notIpBlocks.contains(where: { $0.contains(ip) }) { return false }
        return true
    }

    /// `namespace/name`, or `name` in the policy's own namespace.
    static func serviceAccount(_ value: String, matches r: AuthorizationRequest, policyNamespace: String) -> Bool {
        guard let sa = r.sourceServiceAccount, let ns = r.sourceNamespace else { return false }
        if let slash = value.firstIndex(of: "/") {
            return value[..<slash] == ns && value[value.index(after: slash)...] == sa
        }
        return ns == policyNamespace && value == sa
    }
}

extension AuthorizationPolicySpec.Operation {
    var usesHTTPFields: Bool {
        !(hosts.isEmpty && notHosts.isEmpty && methods.isEmpty && notMethods.isEmpty && paths.isEmpty && notPaths.isEmpty)
    }

    func matches(_ r: AuthorizationRequest) -> Bool {
        if !ports.isEmpty, !ports.contains(r.destinationPort) { return false }
        if notPorts.contains(r.destinationPort) { return false }
        // TCP: HTTP-only fields are not checked here; the rule decided above
        // whether that makes it match more (DENY) or never (ALLOW).
        guard let http = r.http else { return true }
        // Hosts compare without case, as DNS names do; the port is ignored
        // when the value has none.
        let host = (http.host ?? "").lowercased()
        let hostNoPort = HostHeader.split(host).host
        func hostMatches(_ m: IstioStringMatch) -> Bool {
            let lowered = m.lowercased
            return lowered.matches(host) || lowered.matches(hostNoPort)
        }
        if !hosts.isEmpty, !hosts.contains(where: hostMatches) { return false }
        if notHosts.contains(where: hostMatches) { return false }
        if !methods.isEmpty, !methods.contains(where: { $0.matches(http.method) }) { return false }
        if notMethods.contains(where: { $0.matches(http.method) }) { return false }
        if !paths.isEmpty, !paths.contains(where: { $0.matches(http.path) }) { return false }
        if notPaths.contains(where: { $0.matches(http.path) }) { return false }
        return true
    }
}

extension IstioStringMatch {
    var lowercased: IstioStringMatch {
        switch self {
        case .exact(let s): return .exact(s.lowercased())
        case .prefix(let s): return .prefix(s.lowercased())
        case .suffix(let s): return .suffix(s.lowercased())
        case .presence: return .presence
        }
    }
}

extension AuthorizationPolicySpec.Condition {
    /// Whether header `name`, lowered, is `lower`: ASCII byte by byte (header names are tokens),
    /// anything else through `lowercased()`, as Istio lowers both.
    static func sameHeaderName(_ name: String, _ lower: String) -> Bool {
        if name.equalsIgnoringASCIICase(lower) { return true }
        // Unicode lowering can change a name's length, so a miss is final only for ASCII names.
        let ascii = name.utf8.allSatisfy { (b: UInt8) -> Bool in b < 0x80 }
        return !ascii && name.lowercased() == lower
    }

    func matches(_ r: AuthorizationRequest, policyNamespace: String) -> Bool {
        // A value list that is set must match one; a notValues list must match none.
        let got: [String]
        switch key {
        case .requestHeader(let name):
            // TCP: an HTTP-only condition; see Rule.matches.
            guard let http = r.http else { return true }
            let lower = name.lowercased()
            got = http.headers.filter { Self.sameHeaderName($0.name, lower) }.map(\.value)
        case .sourceIP, .destinationIP:
            guard let ip = key == .sourceIP ? r.sourceIP : r.destinationIP else {
                return values.isEmpty
            }
            let cidrs = { (list: [String]) in list.compactMap { try? CIDR($0) } }
            if !values.isEmpty, !cidrs(values).contains(where: { $0.contains(ip) }) { return false }
            return !cidrs(notValues).contains(where: { $0.contains(ip) })
        case .destinationPort:
            let p = String(r.destinationPort)
            if !values.isEmpty, !values.contains(p) { return false }
            return !notValues.contains(p)
        case .sourceServiceAccount:
            if !values.isEmpty, !values.contains(where: { AuthorizationPolicySpec.Source.serviceAccount($0, matches: r, policyNamespace: policyNamespace) }) { return false }
            return !notValues.contains(where: { AuthorizationPolicySpec.Source.serviceAccount($0, matches: r, policyNamespace: policyNamespace) })
        case .sourceNamespace: got = r.sourceNamespace.map { [$0] } ?? []
        case .sourcePrincipal: got = r.sourcePrincipal.map { [$0] } ?? []
        case .connectionSNI: got = r.sni.map { [$0] } ?? []
        }
        let matchers = { (list: [String]) in list.compactMap { try? IstioStringMatch($0, field: "") } }
        if !values.isEmpty, !matchers(values).contains(where: { m in got.contains { m.matches($0) } }) { return false }
        return !matchers(notValues).contains(where: { m in got.contains { m.matches($0) } })
    }
}

// MARK: - PeerAuthentication

/// The mTLS mode one workload ends up with, per Istio's precedence: a policy
/// selecting the workload wins over the namespace's, which wins over the
/// mesh default; `portLevelMtls` of the winning policy overrides per port;
/// UNSET inherits from the next scope.
public struct EffectivePeerAuthentication: Sendable, Hashable {
    public enum Mode: UInt8, Sendable, Hashable, CustomStringConvertible {
        // Values are the kernel's (bpf/weft_abi.h, WEFT_MTLS_*).
        case permissive = 1, strict = 2, disable = 3

        public var description: String {
            switch self {
            case .permissive: return "PERMISSIVE"
            case .strict: return "STRICT"
            case .disable: return "DISABLE"
            }
        }
    }

    public var mode: Mode
    public var ports: [UInt16: Mode]

    /// The mesh default: PERMISSIVE, as in Istio, so that enabling the mesh
    /// on a namespace never cuts off clients that are not meshed yet.
    public static let meshDefault = Mode.permissive

    public init(mode: Mode, ports: [UInt16: Mode] = [:]) {
        self.mode = mode
        self.ports = ports
    }

    /// The namespace-wide mode (what a workload the node has not identified
    /// yet gets).
    public static func namespaceMode(_ policies: [(name: String, namespace: String, spec: PeerAuthenticationSpec)],
                                     namespace: String) -> Mode {
        let wide = policies.filter { $0.namespace == namespace && $0.spec.selector == nil }
            .min { $0.name < $1.name }
        return convert(wide?.spec.mtls) ?? meshDefault
    }

    /// For a workload with `labels` in `namespace`. Several selecting
    /// policies: the one first by name wins (Istio: the oldest).
    public init(policies: [(name: String, namespace: String, spec: PeerAuthenticationSpec)],
                namespace: String, labels: [String: String]) {
        let namespaceMode = Self.namespaceMode(policies, namespace: namespace)
        let selecting = policies.filter { p in
            guard p.namespace == namespace, let s = p.spec.selector else { return false }
            return s.allSatisfy { labels[$0.key] == $0.value }
        }.min { $0.name < $1.name }
        let mode = Self.convert(selecting?.spec.mtls) ?? namespaceMode
        var ports: [UInt16: Mode] = [:]
        for (port, m) in selecting?.spec.portLevelMtls ?? [:] {
            ports[port] = Self.convert(m) ?? mode
        }
        self.init(mode: mode, ports: ports)
    }

    public func mode(port: UInt16) -> Mode { ports[port] ?? mode }

    static func convert(_ m: PeerAuthenticationSpec.Mode?) -> Mode? {
        switch m {
        case nil, .unset?: return nil
        case .strict?: return .strict
        case .permissive?: return .permissive
        case .disable?: return .disable
        }
    }
}

// MARK: - From a snapshot

extension NodeSnapshot.Policy {
    /// The spec as the node applies it, validated again as weft-control did;
    /// nil when it does not decode (written by a newer control plane, say).
    public var decodedSpec: ResourceSpec? {
        guard let kind = ResourceKind(rawValue: kind) else { return nil }
        let document: JSONValue = .object([
            "apiVersion": .string(kind.apiVersion), "kind": .string(kind.rawValue),
            "metadata": .object(["name": .string(name), "namespace": .string(namespace)]), "spec": spec,
        ])
        return (try? ResourceDocument.decode(document))?.spec
    }
}

/// The security policies of a node snapshot, decoded.
public struct SnapshotPolicies: Sendable, Hashable {
    public var authorization: [NamedAuthorizationPolicy] = []
    public var peerAuthentication: [(name: String, namespace: String, spec: PeerAuthenticationSpec)] = []
    /// Policies that did not decode (the control API validated them; a
    /// newer field this weftd does not know, say). Each fails closed: an
    /// AuthorizationPolicy becomes deny-all for its namespace, a
    /// PeerAuthentication STRICT for its namespace.
    public var undecodable: [String] = []

    public init() {}

    public init(snapshot: NodeSnapshot) {
        for p in snapshot.policies ?? [] {
            switch (p.kind, p.decodedSpec) {
            case (_, .authorizationPolicy(let spec)?):
                authorization.append(NamedAuthorizationPolicy(namespace: p.namespace, name: p.name, spec: spec))
            case (_, .peerAuthentication(let spec)?):
                peerAuthentication.append((p.name, p.namespace, spec))
            case (ResourceKind.authorizationPolicy.rawValue, _):
                undecodable.append("\(p.kind) \(p.namespace)/\(p.name)")
                authorization.append(NamedAuthorizationPolicy(
                    namespace: p.namespace, name: p.name,
                    spec: AuthorizationPolicySpec(selector: nil, action: .deny, rules: [.init()])))
            case (ResourceKind.peerAuthentication.rawValue, _):
                undecodable.append("\(p.kind) \(p.namespace)/\(p.name)")
                peerAuthentication.append((p.name, p.namespace, PeerAuthenticationSpec(selector: nil, mtls: .strict)))
            default:
                undecodable.append("\(p.kind) \(p.namespace)/\(p.name)")
            }
        }
    }

    public static func == (a: SnapshotPolicies, b: SnapshotPolicies) -> Bool {
        a.authorization == b.authorization && a.undecodable == b.undecodable
            && a.peerAuthentication.elementsEqual(b.peerAuthentication) { $0.name == $1.name && $0.namespace == $1.namespace && $0.spec == $1.spec }
    }

    public func hash(into h: inout Hasher) {
        h.combine(authorization)
        for p in peerAuthentication { h.combine(p.name); h.combine(p.namespace); h.combine(p.spec) }
    }

    public func authorization(namespace: String, labels: [String: String]) -> WorkloadAuthorization {
        WorkloadAuthorization(policies: authorization, namespace: namespace, labels: labels)
    }

    public func peerAuthentication(namespace: String, labels: [String: String]) -> EffectivePeerAuthentication {
        EffectivePeerAuthentication(policies: peerAuthentication, namespace: namespace, labels: labels)
    }
}
