// Istio security policies (`security.istio.io/v1`): AuthorizationPolicy and
// PeerAuthentication, with Istio's field names and validation rules.
//
// What Weft leaves out, with an error that says so rather than a field
// silently ignored: JWT-based fields (requestPrincipals, request.auth.*; Weft
// has no RequestAuthentication), remote IPs (they come from X-Forwarded-For,
// which Weft does not trust), the CUSTOM action and its provider, targetRef(s)
// (Weft selects workloads by labels), path templates ({*}, {**}).
// Stricter than Istio: a '*' anywhere but at one end of a value is an error
// (Istio would match it literally, which is never what was meant); ports are
// 1 to 65535 (Istio accepts 0, which no connection has); an empty
// `matchLabels` is an error rather than a warning.

/// One of Istio's string match forms: exact `abc`, prefix `abc*`, suffix
/// `*abc`, or presence `*` (any non-empty value).
public enum IstioStringMatch: Hashable, Sendable, CustomStringConvertible {
    case exact(String)
    case prefix(String)
    case suffix(String)
    case presence

    public init(_ text: String, field: String) throws(ValidationError) {
        guard !text.isEmpty else {
            throw ValidationError(field: field, "must not be empty (write * to match any value)")
        }
        let stars = text.filter { $0 == "*" }.count
        if text == "*" {
            self = .presence
        } else if stars == 1, text.hasSuffix("*") {
            self = .prefix(String(text.dropLast()))
        } else if stars == 1, text.hasPrefix("*") {
            self = .suffix(String(text.dropFirst()))
        } else if stars == 0 {
            self = .exact(text)
        } else {
            throw ValidationError(field: field, "\"\(text)\" is not a match Istio defines: write an exact value, a prefix (abc*), a suffix (*abc) or * alone")
        }
    }

    public func matches(_ value: String) -> Bool {
        switch self {
        case .exact(let s): return value == s
        case .prefix(let s): return value.hasPrefix(s)
        case .suffix(let s): return value.hasSuffix(s)
        case .presence: return !value.isEmpty
        }
    }

    public var description: String {
        switch self {
        case .exact(let s): return s
        case .prefix(let s): return s + "*"
        case .suffix(let s): return "*" + s
        case .presence: return "*"
        }
    }
}

/// Istio's `selector: {matchLabels: …}`, shared by both policies.
private func decodeWorkloadSelector(_ r: FieldReader) throws(ValidationError) -> [String: String]? {
    guard let s = try r.object("selector", allowed: ["matchLabels"]) else { return nil }
    let labels = try s.labels("matchLabels") ?? [:]
    if labels.isEmpty {
        throw ValidationError(field: s.field("matchLabels"), "must name at least one label; leave out selector to apply to the whole namespace")
    }
    s.finish()
    return labels
}

private func encodeWorkloadSelector(_ labels: [String: String]?) -> JSONValue? {
    labels.map { ["matchLabels": .sortedMap($0)] }
}

/// A port given as a string of digits, as Istio writes ports in policies.
private func decodePort(_ item: Located<JSONValue>) throws(ValidationError) -> UInt16 {
    if case .int(let n) = item.value {
        throw ValidationError(field: item.path, "expected a string, found the number \(n): Istio writes these ports as strings (\"\(n)\")")
    }
    let text = try FieldReader.string(item.value, at: item.path)
    guard let port = parsePort(text) else {
        throw ValidationError(field: item.path, "\"\(text)\" is not a port number (1 to 65535)")
    }
    return port
}

private func parsePort(_ text: String) -> UInt16? {
    guard !text.isEmpty, text.utf8.count <= 5, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), !text.hasPrefix("0"),
          let n = Int(text), (1...65535).contains(n) else { return nil }
    return UInt16(n)
}

/// Istio's service account form: `name` or `namespace/name`, no wildcards,
/// at most 16 in one list.
private func checkServiceAccounts(_ items: [Located<String>], listPath: String) throws(ValidationError) {
    if items.count > 16 { throw ValidationError(field: listPath, "at most 16 service accounts are allowed, found \(items.count)") }
    for item in items {
        let parts = item.value.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.allSatisfy({ DNSLabel.isValid(String($0)) }) else {
            throw ValidationError(field: item.path, "\"\(item.value)\" must be a service account name or namespace/name (DNS labels, no wildcards)")
        }
    }
}

// MARK: - AuthorizationPolicy

/// `spec` of an AuthorizationPolicy. DENY policies are evaluated before
/// ALLOW; with no ALLOW policy on a workload everything not denied is allowed,
/// with one only what some ALLOW rule matches. AUDIT only records.
public struct AuthorizationPolicySpec: Hashable, Sendable {
    public enum Action: String, CaseIterable, Hashable, Sendable {
        case allow = "ALLOW", deny = "DENY", audit = "AUDIT"
    }

    /// Who sends. Each list must match when set; `not…` lists must not.
    public struct Source: Hashable, Sendable {
        /// Peer identities without `spiffe://`: `cluster.local/ns/shop/sa/web`.
        public var principals: [IstioStringMatch] = []
        public var notPrincipals: [IstioStringMatch] = []
        public var namespaces: [IstioStringMatch] = []
        public var notNamespaces: [IstioStringMatch] = []
        /// `name` or `namespace/name`; not together with principals or namespaces.
        public var serviceAccounts: [String] = []
        public var notServiceAccounts: [String] = []
        public var ipBlocks: [CIDR] = []
        public var notIpBlocks: [CIDR] = []

        public init() {}

        var isEmpty: Bool {
            principals.isEmpty && notPrincipals.isEmpty && namespaces.isEmpty && notNamespaces.isEmpty
                && serviceAccounts.isEmpty && notServiceAccounts.isEmpty && ipBlocks.isEmpty && notIpBlocks.isEmpty
        }
    }

    /// What is asked for.
    public struct Operation: Hashable, Sendable {
        public var hosts: [IstioStringMatch] = []
        public var notHosts: [IstioStringMatch] = []
        public var ports: [UInt16] = []
        public var notPorts: [UInt16] = []
        public var methods: [IstioStringMatch] = []
        public var notMethods: [IstioStringMatch] = []
        public var paths: [IstioStringMatch] = []
        public var notPaths: [IstioStringMatch] = []

        public init() {}

        var isEmpty: Bool {
            hosts.isEmpty && notHosts.isEmpty && ports.isEmpty && notPorts.isEmpty && methods.isEmpty
                && notMethods.isEmpty && paths.isEmpty && notPaths.isEmpty
        }
    }

    /// The `when` attributes Weft can evaluate (Istio's, less JWT, remote
    /// address and Envoy-specific ones).
    public enum ConditionKey: Hashable, Sendable, CustomStringConvertible {
        case requestHeader(String)
        case sourceIP, sourceNamespace, sourcePrincipal, sourceServiceAccount
        case destinationIP, destinationPort
        case connectionSNI

        static let supported = "request.headers[<name>], source.ip, source.namespace, source.principal, source.serviceAccount, destination.ip, destination.port, connection.sni"

        public var description: String {
            switch self {
            case .requestHeader(let name): return "request.headers[\(name)]"
            case .sourceIP: return "source.ip"
            case .sourceNamespace: return "source.namespace"
            case .sourcePrincipal: return "source.principal"
            case .sourceServiceAccount: return "source.serviceAccount"
            case .destinationIP: return "destination.ip"
            case .destinationPort: return "destination.port"
            case .connectionSNI: return "connection.sni"
            }
        }

        init(_ key: String, field: String) throws(ValidationError) {
            switch key {
            case "source.ip": self = .sourceIP
            case "source.namespace": self = .sourceNamespace
            case "source.principal": self = .sourcePrincipal
            case "source.serviceAccount": self = .sourceServiceAccount
            case "destination.ip": self = .destinationIP
            case "destination.port": self = .destinationPort
            case "connection.sni": self = .connectionSNI
            case "remote.ip":
                throw ValidationError(field: field, "remote.ip comes from X-Forwarded-For or the PROXY protocol, which Weft does not trust; use source.ip")
            case "destination.namespace":
                throw ValidationError(field: field, "destination.namespace is replaced by the policy's own namespace (metadata.namespace)")
            case "destination.name", "destination.user":
                throw ValidationError(field: field, "\(key) was only supported by Istio's v1alpha1 policies")
            default:
                if key.hasPrefix("request.headers[") {
                    guard key.hasSuffix("]"), key.count > "request.headers[]".count else {
                        throw ValidationError(field: field, "\"\(key)\" must have the form request.headers[<name>]")
                    }
                    let name = String(key.dropFirst("request.headers[".count).dropLast())
                    try HTTPRouteSpec.checkHeaderName(name, at: field)
                    self = .requestHeader(name)
                } else if key.hasPrefix("request.auth.") {
                    throw ValidationError(field: field, "\(key) needs JWT authentication (RequestAuthentication), which Weft does not implement")
                } else if key.hasPrefix("destination.labels[") {
                    throw ValidationError(field: field, "\(key) is replaced by the policy's selector")
                } else if key.hasPrefix("experimental.") || key.hasPrefix("request.experimental.") {
                    throw ValidationError(field: field, "\(key) is specific to Envoy and has no meaning in Weft")
                } else {
                    throw ValidationError(field: field, "unknown attribute \"\(key)\" (supported: \(ConditionKey.supported))")
                }
            }
        }
    }

    /// An extra condition; values are checked for their key (IPs or CIDRs
    /// for the ip keys, ports for destination.port, service accounts for
    /// source.serviceAccount, string matches otherwise).
    public struct Condition: Hashable, Sendable {
        public var key: ConditionKey
        public var values: [String]
        public var notValues: [String]

        public init(key: ConditionKey, values: [String] = [], notValues: [String] = []) {
            self.key = key
            self.values = values
            self.notValues = notValues
        }
    }

    /// Matches when every part that is set matches: one of `from`, one of
    /// `to`, and all of `when`. An empty rule matches every request.
    public struct Rule: Hashable, Sendable {
        public var from: [Source]
        public var to: [Operation]
        public var when: [Condition]

        public init(from: [Source] = [], to: [Operation] = [], when: [Condition] = []) {
            self.from = from
            self.to = to
            self.when = when
        }
    }

    /// nil: every workload of the namespace.
    public var selector: [String: String]?
    public var action: Action
    /// For ALLOW, no rules allow nothing; DENY needs at least one rule.
    public var rules: [Rule]

    public init(selector: [String: String]? = nil, action: Action = .allow, rules: [Rule] = []) {
        self.selector = selector
        self.action = action
        self.rules = rules
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> AuthorizationPolicySpec {
        // `spec: {}` is Istio's allow-nothing policy; no spec means the same.
        let r = try FieldReader(value ?? .object(JSONObject()), at: path, allowed: ["selector", "action", "rules"], unsupported: [
            "targetRef": "targetRef is not supported: Weft picks workloads with selector",
            "targetRefs": "targetRefs is not supported: Weft picks workloads with selector",
            "provider": "provider belongs to the CUSTOM action, which Weft does not support",
        ])
        let selector = try decodeWorkloadSelector(r)
        if try r.string("action") == "CUSTOM" {
            throw ValidationError(field: r.field("action"), "CUSTOM (external authorization) is not supported by Weft; use ALLOW, DENY or AUDIT")
        }
        let action = try r.enumeration("action", Action.self) ?? .allow
        var rules: [Rule] = []
        for item in try r.list("rules") ?? [] { rules.append(try decodeRule(item)) }
        if action == .deny, rules.isEmpty {
            throw ValidationError(field: r.field("rules"), "a DENY policy without rules never matches; add an empty rule {} to deny every request")
        }
        r.finish()
        return AuthorizationPolicySpec(selector: selector, action: action, rules: rules)
    }

    private static func decodeRule(_ item: Located<JSONValue>) throws(ValidationError) -> Rule {
        let r = try FieldReader(item.value, at: item.path, allowed: ["from", "to", "when"])
        var rule = Rule()
        if let items = try r.list("from") {
            if items.isEmpty { throw ValidationError(field: r.field("from"), "must not be empty; leave out from to match any source") }
            for f in items {
                let fr = try FieldReader(f.value, at: f.path, allowed: ["source"])
                rule.from.append(try decodeSource(fr.required("source"), at: fr.field("source")))
                fr.finish()
            }
        }
        if let items = try r.list("to") {
            if items.isEmpty { throw ValidationError(field: r.field("to"), "must not be empty; leave out to to match any operation") }
            for t in items {
                let tr = try FieldReader(t.value, at: t.path, allowed: ["operation"])
                rule.to.append(try decodeOperation(tr.required("operation"), at: tr.field("operation")))
                tr.finish()
            }
        }
        for w in try r.list("when") ?? [] {
            rule.when.append(try decodeCondition(w))
        }
        r.finish()
        return rule
    }

    private static func matches(_ r: FieldReader, _ key: String, paths: Bool = false) throws(ValidationError) -> [IstioStringMatch] {
        var out: [IstioStringMatch] = []
        for item in try r.stringList(key) ?? [] {
            if paths, item.value.contains("{*}") || item.value.contains("{**}") {
                throw ValidationError(field: item.path, "path templates ({*}, {**}) are not supported by Weft; use a prefix (/api/*) or suffix (*.png) match")
            }
            out.append(try IstioStringMatch(item.value, field: item.path))
        }
        return out
    }

    private static func cidrs(_ r: FieldReader, _ key: String) throws(ValidationError) -> [CIDR] {
        var out: [CIDR] = []
        for item in try r.stringList(key) ?? [] { out.append(try CIDR(item.value, field: item.path)) }
        return out
    }

    private static func decodeSource(_ value: JSONValue, at path: String) throws(ValidationError) -> Source {
        let jwt = "request principals come from JWT authentication (RequestAuthentication), which Weft does not implement"
        let remote = "remote IPs come from X-Forwarded-For or the PROXY protocol, which Weft does not trust; use ipBlocks (the peer's address)"
        let r = try FieldReader(value, at: path, allowed: [
            "principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks",
        ], unsupported: [
            "requestPrincipals": jwt, "notRequestPrincipals": jwt, "remoteIpBlocks": remote, "notRemoteIpBlocks": remote,
        ])
        var s = Source()
        s.principals = try matches(r, "principals")
        s.notPrincipals = try matches(r, "notPrincipals")
        s.namespaces = try matches(r, "namespaces")
        s.notNamespaces = try matches(r, "notNamespaces")
        for key in ["serviceAccounts", "notServiceAccounts"] {
            let items = try r.stringList(key) ?? []
            try checkServiceAccounts(items, listPath: r.field(key))
            if key == "serviceAccounts" { s.serviceAccounts = items.map(\.value) } else { s.notServiceAccounts = items.map(\.value) }
        }
        s.ipBlocks = try cidrs(r, "ipBlocks")
        s.notIpBlocks = try cidrs(r, "notIpBlocks")
        if !(s.serviceAccounts.isEmpty && s.notServiceAccounts.isEmpty),
           !(s.principals.isEmpty && s.notPrincipals.isEmpty && s.namespaces.isEmpty && s.notNamespaces.isEmpty) {
            throw ValidationError(field: r.field(s.serviceAccounts.isEmpty ? "notServiceAccounts" : "serviceAccounts"),
                                  "cannot be combined with principals or namespaces in one source")
        }
        if s.isEmpty { throw ValidationError(field: path, "must not be empty: set at least one field, or leave out from") }
        r.finish()
        return s
    }

    private static func decodeOperation(_ value: JSONValue, at path: String) throws(ValidationError) -> Operation {
        let r = try FieldReader(value, at: path, allowed: ["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"])
        var o = Operation()
        o.hosts = try matches(r, "hosts")
        o.notHosts = try matches(r, "notHosts")
        for item in try r.list("ports") ?? [] { o.ports.append(try decodePort(item)) }
        for item in try r.list("notPorts") ?? [] { o.notPorts.append(try decodePort(item)) }
        o.methods = try matches(r, "methods")
        o.notMethods = try matches(r, "notMethods")
        o.paths = try matches(r, "paths", paths: true)
        o.notPaths = try matches(r, "notPaths", paths: true)
        if o.isEmpty { throw ValidationError(field: path, "must not be empty: set at least one field, or leave out to") }
        r.finish()
        return o
    }

    private static func decodeCondition(_ item: Located<JSONValue>) throws(ValidationError) -> Condition {
        let r = try FieldReader(item.value, at: item.path, allowed: ["key", "values", "notValues"])
        let key = try ConditionKey(r.requiredString("key"), field: r.field("key"))
        var condition = Condition(key: key)
        for list in ["values", "notValues"] {
            let items = try r.stringList(list) ?? []
            switch key {
            case .sourceIP, .destinationIP:
                for v in items { _ = try CIDR(v.value, field: v.path) }
            case .destinationPort:
                for v in items where parsePort(v.value) == nil {
                    throw ValidationError(field: v.path, "\"\(v.value)\" is not a port number (1 to 65535)")
                }
            case .sourceServiceAccount:
                try checkServiceAccounts(items, listPath: r.field(list))
            case .requestHeader, .sourceNamespace, .sourcePrincipal, .connectionSNI:
                for v in items { _ = try IstioStringMatch(v.value, field: v.path) }
            }
            if list == "values" { condition.values = items.map(\.value) } else { condition.notValues = items.map(\.value) }
        }
        if condition.values.isEmpty, condition.notValues.isEmpty {
            throw ValidationError(field: item.path, "at least one of values or notValues must be set for \(key)")
        }
        r.finish()
        return condition
    }

    func encode() -> JSONValue {
        var o = JSONObject()
        o.set("selector", encodeWorkloadSelector(selector))
        o.set("action", .string(action.rawValue))
        o.set("rules", list: rules.map { rule in
            var ro = JSONObject()
            ro.set("from", list: rule.from.map { s in
                var so = JSONObject()
                so.set("principals", list: s.principals.map { .string($0.description) })
                so.set("notPrincipals", list: s.notPrincipals.map { .string($0.description) })
                so.set("namespaces", list: s.namespaces.map { .string($0.description) })
                so.set("notNamespaces", list: s.notNamespaces.map { .string($0.description) })
                so.set("serviceAccounts", list: JSONValue.strings(s.serviceAccounts))
                so.set("notServiceAccounts", list: JSONValue.strings(s.notServiceAccounts))
                so.set("ipBlocks", list: s.ipBlocks.map { .string($0.description) })
                so.set("notIpBlocks", list: s.notIpBlocks.map { .string($0.description) })
                return ["source": .object(so)]
            })
            ro.set("to", list: rule.to.map { op in
                var oo = JSONObject()
                oo.set("hosts", list: op.hosts.map { .string($0.description) })
                oo.set("notHosts", list: op.notHosts.map { .string($0.description) })
                oo.set("ports", list: op.ports.map { .string(String($0)) })
                oo.set("notPorts", list: op.notPorts.map { .string(String($0)) })
                oo.set("methods", list: op.methods.map { .string($0.description) })
                oo.set("notMethods", list: op.notMethods.map { .string($0.description) })
                oo.set("paths", list: op.paths.map { .string($0.description) })
                oo.set("notPaths", list: op.notPaths.map { .string($0.description) })
                return ["operation": .object(oo)]
            })
            ro.set("when", list: rule.when.map { c in
                var co: JSONObject = ["key": .string(c.key.description)]
                co.set("values", list: JSONValue.strings(c.values))
                co.set("notValues", list: JSONValue.strings(c.notValues))
                return .object(co)
            })
            return .object(ro)
        })
        return .object(o)
    }
}

// MARK: - PeerAuthentication

/// `spec` of a PeerAuthentication: whether workloads accept plain text,
/// mutual TLS, or both, namespace-wide or for the selected workloads.
public struct PeerAuthenticationSpec: Hashable, Sendable {
    public enum Mode: String, CaseIterable, Hashable, Sendable {
        /// Inherit from the enclosing scope (namespace, then mesh).
        case unset = "UNSET"
        case disable = "DISABLE"
        case permissive = "PERMISSIVE"
        case strict = "STRICT"
    }

    /// nil: every workload of the namespace.
    public var selector: [String: String]?
    /// nil: no `mtls` block, which inherits like UNSET.
    public var mtls: Mode?
    /// Per workload port; only with a selector.
    public var portLevelMtls: [UInt16: Mode]

    public init(selector: [String: String]? = nil, mtls: Mode? = nil, portLevelMtls: [UInt16: Mode] = [:]) {
        self.selector = selector
        self.mtls = mtls
        self.portLevelMtls = portLevelMtls
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> PeerAuthenticationSpec {
        let r = try FieldReader(value ?? .object(JSONObject()), at: path, allowed: ["selector", "mtls", "portLevelMtls"])
        var spec = PeerAuthenticationSpec(selector: try decodeWorkloadSelector(r))
        if let m = try r.object("mtls", allowed: ["mode"]) {
            spec.mtls = try m.enumeration("mode", Mode.self) ?? .unset
            m.finish()
        }
        if let ports = r.value("portLevelMtls") {
            let at = r.field("portLevelMtls")
            guard case .object(let map) = ports else {
                throw ValidationError(field: at, "expected an object of port → {mode}, found \(ports.foundDescription)")
            }
            if map.isEmpty { throw ValidationError(field: at, "must name at least one port when set") }
            if spec.selector == nil {
                throw ValidationError(field: at, "needs a selector: a namespace-wide PeerAuthentication cannot set port-level mTLS")
            }
            for member in map {
                let entry = "\(at)[\(member.key)]"
                guard let port = parsePort(member.key) else {
                    throw ValidationError(field: entry, "\"\(member.key)\" is not a port number (1 to 65535)")
                }
                let m = try FieldReader(member.value, at: entry, allowed: ["mode"])
                spec.portLevelMtls[port] = try m.enumeration("mode", Mode.self) ?? .unset
                m.finish()
            }
        }
        r.finish()
        return spec
    }

    func encode() -> JSONValue {
        var o = JSONObject()
        o.set("selector", encodeWorkloadSelector(selector))
        o.set("mtls", mtls.map { ["mode": .string($0.rawValue)] })
        if !portLevelMtls.isEmpty {
            o.set("portLevelMtls", .object(JSONObject(portLevelMtls.sorted { $0.key < $1.key }.map {
                (String($0.key), ["mode": .string($0.value.rawValue)] as JSONValue)
            })))
        }
        return .object(o)
    }
}
