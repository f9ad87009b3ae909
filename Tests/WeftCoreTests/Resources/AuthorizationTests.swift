import Testing
@testable import WeftCore

/// Istio's AuthorizationPolicy and PeerAuthentication semantics, evaluated
/// without a network: the rules the node proxy and the kernel enforce.
@Suite struct AuthorizationEvaluation {
    static let td = "cluster.local"
    static func principal(_ ns: String, _ sa: String) -> String { "spiffe://\(td)/ns/\(ns)/sa/\(sa)" }

    static func policy(_ name: String, _ json: String, namespace: String = "shop") throws -> NamedAuthorizationPolicy {
        let doc = #"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "\#(name)", "namespace": "\#(namespace)"}, "spec": \#(json)}"#
        guard case .authorizationPolicy(let spec) = try ResourceDocument.decode(json: doc).spec else {
            throw ValidationError(field: "kind", "not an AuthorizationPolicy")
        }
        return NamedAuthorizationPolicy(namespace: namespace, name: name, spec: spec)
    }

    static func http(_ from: String?, _ method: String = "GET", _ path: String = "/", port: UInt16 = 8080,
                     headers: [(String, String)] = [], host: String? = "catalog:8080") -> AuthorizationRequest {
        AuthorizationRequest(sourcePrincipal: from, destinationPort: port,
                             http: .init(method: method, path: path, host: host, headers: headers.map { (name: $0.0, value: $0.1) }))
    }

    static func tcp(_ from: String?, port: UInt16 = 9090, ip: String? = nil) -> AuthorizationRequest {
        AuthorizationRequest(sourcePrincipal: from, sourceIP: ip.flatMap(IPAddress.init), destinationPort: port)
    }

    struct Case: CustomStringConvertible {
        var name: String
        var policies: [String]  // JSON specs, in namespace shop, named p0, p1, …
        var request: AuthorizationRequest
        var allowed: Bool
        var labels: [String: String] = ["app": "catalog"]
        var description: String { name }
    }

    static let frontend = principal("shop", "frontend")
    static let admin = principal("shop", "admin")
    static let other = principal("other", "client")

    static let cases: [Case] = [
        // Defaults.
        Case(name: "no policy allows everything", policies: [], request: http(frontend), allowed: true),
        Case(name: "no policy allows plaintext too", policies: [], request: tcp(nil), allowed: true),
        Case(name: "spec {} allows nothing", policies: ["{}"], request: http(frontend), allowed: false),
        Case(name: "an ALLOW policy allows only what it matches", policies: [#"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/admin"]}}]}]}"#],
             request: http(frontend), allowed: false),
        Case(name: "an ALLOW policy allows its principal", policies: [#"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/admin"]}}]}]}"#],
             request: http(admin), allowed: true),
        Case(name: "a selector that does not select the workload has no effect", policies: [#"{"selector": {"matchLabels": {"app": "web"}}}"#],
             request: http(frontend), allowed: true),
        Case(name: "a selector that selects the workload applies", policies: [#"{"selector": {"matchLabels": {"app": "catalog"}}}"#],
             request: http(frontend), allowed: false),
        Case(name: "a policy of another namespace has no effect", policies: [], request: http(frontend), allowed: true),
        // Principals and namespaces.
        Case(name: "principal prefix", policies: [#"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/*"]}}]}]}"#],
             request: http(frontend), allowed: true),
        Case(name: "principal prefix rejects another namespace", policies: [#"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/*"]}}]}]}"#],
             request: http(other), allowed: false),
        Case(name: "principal suffix", policies: [#"{"rules": [{"from": [{"source": {"principals": ["*/sa/client"]}}]}]}"#],
             request: http(other), allowed: true),
        Case(name: "principals * needs an identity: plaintext is not allowed", policies: [#"{"rules": [{"from": [{"source": {"principals": ["*"]}}]}]}"#],
             request: tcp(nil), allowed: false),
        Case(name: "DENY notPrincipals * denies plaintext", policies: [#"{"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}"#],
             request: tcp(nil), allowed: false),
        Case(name: "DENY notPrincipals * lets mTLS through", policies: [#"{"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}"#],
             request: tcp(frontend), allowed: true),
        Case(name: "namespaces", policies: [#"{"rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]}"#],
             request: http(other), allowed: true),
        Case(name: "namespaces rejects others", policies: [#"{"rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]}"#],
             request: http(frontend), allowed: false),
        Case(name: "notNamespaces", policies: [#"{"rules": [{"from": [{"source": {"notNamespaces": ["other"]}}]}]}"#],
             request: http(other), allowed: false),
        Case(name: "serviceAccounts name means the policy's namespace", policies: [#"{"rules": [{"from": [{"source": {"serviceAccounts": ["client"]}}]}]}"#],
             request: http(other), allowed: false),
        Case(name: "serviceAccounts namespace/name", policies: [#"{"rules": [{"from": [{"source": {"serviceAccounts": ["other/client"]}}]}]}"#],
             request: http(other), allowed: true),
        Case(name: "names compare literally: no regex", policies: [#"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/fr.ntend"]}}]}]}"#],
             request: http(frontend), allowed: false),
        // Operations.
        Case(name: "methods", policies: [#"{"rules": [{"to": [{"operation": {"methods": ["GET", "HEAD"]}}]}]}"#],
             request: http(frontend, "POST"), allowed: false),
        Case(name: "exact path", policies: [#"{"rules": [{"to": [{"operation": {"paths": ["/items"]}}]}]}"#],
             request: http(frontend, "GET", "/items/1"), allowed: false),
        Case(name: "prefix path", policies: [#"{"rules": [{"to": [{"operation": {"paths": ["/items/*"]}}]}]}"#],
             request: http(frontend, "GET", "/items/1"), allowed: true),
        Case(name: "suffix path", policies: [#"{"rules": [{"to": [{"operation": {"paths": ["*.png"]}}]}]}"#],
             request: http(frontend, "GET", "/img/a.png"), allowed: true),
        Case(name: "notPaths", policies: [#"{"rules": [{"to": [{"operation": {"notPaths": ["/admin*"]}}]}]}"#],
             request: http(frontend, "GET", "/admin/x"), allowed: false),
        Case(name: "paths are case-sensitive, as in Istio", policies: [#"{"rules": [{"to": [{"operation": {"paths": ["/items"]}}]}]}"#],
             request: http(frontend, "GET", "/Items"), allowed: false),
        Case(name: "ports", policies: [#"{"rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}"#],
             request: http(frontend, port: 8081), allowed: false),
        Case(name: "hosts ignore case and the port", policies: [#"{"rules": [{"to": [{"operation": {"hosts": ["CATALOG"]}}]}]}"#],
             request: http(frontend), allowed: true),
        // Conditions.
        Case(name: "when request header", policies: [#"{"rules": [{"when": [{"key": "request.headers[x-user]", "values": ["alice"]}]}]}"#],
             request: http(frontend, headers: [("X-User", "alice")]), allowed: true),
        Case(name: "when request header missing", policies: [#"{"rules": [{"when": [{"key": "request.headers[x-user]", "values": ["alice"]}]}]}"#],
             request: http(frontend), allowed: false),
        Case(name: "when notValues", policies: [#"{"rules": [{"when": [{"key": "request.headers[x-user]", "notValues": ["mallory"]}]}]}"#],
             request: http(frontend, headers: [("x-user", "mallory")]), allowed: false),
        Case(name: "when source.namespace", policies: [#"{"rules": [{"when": [{"key": "source.namespace", "values": ["other"]}]}]}"#],
             request: http(other), allowed: true),
        Case(name: "when destination.port", policies: [#"{"rules": [{"when": [{"key": "destination.port", "values": ["9090"]}]}]}"#],
             request: tcp(frontend, port: 9090), allowed: true),
        Case(name: "ipBlocks", policies: [#"{"rules": [{"from": [{"source": {"ipBlocks": ["198.18.1.0/24"]}}]}]}"#],
             request: tcp(frontend, ip: "198.18.1.2"), allowed: true),
        Case(name: "ipBlocks without a known source address do not match", policies: [#"{"rules": [{"from": [{"source": {"ipBlocks": ["198.18.1.0/24"]}}]}]}"#],
             request: tcp(frontend), allowed: false),
        // DENY over ALLOW, AUDIT.
        Case(name: "DENY wins over a matching ALLOW", policies: [
            #"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend"]}}]}]}"#,
            #"{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}"#],
             request: http(frontend, "GET", "/admin/users"), allowed: false),
        Case(name: "DENY that does not match leaves the ALLOW", policies: [
            #"{"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend"]}}]}]}"#,
            #"{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}"#],
             request: http(frontend, "GET", "/items"), allowed: true),
        Case(name: "AUDIT never changes the decision", policies: [#"{"action": "AUDIT", "rules": [{}]}"#],
             request: http(frontend), allowed: true),
        // TCP traffic and HTTP-only fields: fail closed.
        Case(name: "DENY with methods on TCP denies the whole port", policies: [#"{"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"], "ports": ["9090"]}}]}]}"#],
             request: tcp(frontend, port: 9090), allowed: false),
        Case(name: "DENY with methods on TCP keeps its other fields", policies: [#"{"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"], "ports": ["9090"]}}]}]}"#],
             request: tcp(frontend, port: 9091), allowed: true),
        Case(name: "ALLOW with paths never matches TCP", policies: [#"{"rules": [{"to": [{"operation": {"paths": ["/"]}}]}]}"#],
             request: tcp(frontend), allowed: false),
        Case(name: "ALLOW with a header condition never matches TCP", policies: [#"{"rules": [{"when": [{"key": "request.headers[x-user]", "values": ["alice"]}]}]}"#],
             request: tcp(frontend), allowed: false),
        Case(name: "ALLOW on L4 fields matches TCP", policies: [#"{"rules": [{"from": [{"source": {"namespaces": ["shop"]}}], "to": [{"operation": {"ports": ["9090"]}}]}]}"#],
             request: tcp(frontend, port: 9090), allowed: true),
    ]

    @Test func headerConditionsMatchHeaderNamesWhateverCaseEitherIsWrittenIn() throws {
        let ascii = try Self.policy("ascii", #"{"rules": [{"when": [{"key": "request.headers[X-User]", "values": ["alice"]}]}]}"#)
        func allowed(_ policy: NamedAuthorizationPolicy, _ headers: [(String, String)]) -> Bool {
            WorkloadAuthorization(policies: [policy], namespace: "shop", labels: [:])
                .evaluate(Self.http(Self.frontend, headers: [("Host", "a")] + headers)).allowed
        }
        for name in ["x-user", "X-User", "X-USER", "x-uSER"] {
            #expect(allowed(ascii, [(name, "alice")]), "\(name)")
        }
        for name in ["x-users", "x-use", "y-user", "x_user", "x-üser", ""] {
            #expect(!allowed(ascii, [(name, "alice")]), "\(name)")
        }
        #expect(!allowed(ascii, [("X-User", "bob")]))
    }

    /// Policies name headers by token (validated), but a name off the wire is compared the same
    /// way whatever bytes it has.
    @Test func headerNamesAreComparedAsIstioLowersThem() {
        let names = ["x-user", "X-User", "x-users", "X", "", "ünïcode", "ÜNÏCODE", "x-ü", "X-Ü", "ß", "İ"]
        for name in names {
            for other in names {
                let lower = other.lowercased()
                #expect(AuthorizationPolicySpec.Condition.sameHeaderName(name, lower) == (name.lowercased() == lower),
                        "\(name) vs \(lower)")
            }
        }
    }

    @Test(arguments: cases) func matrix(_ c: Case) throws {
        let policies = try c.policies.enumerated().map { try Self.policy("p\($0.offset)", $0.element) }
        let decision = WorkloadAuthorization(policies: policies, namespace: "shop", labels: c.labels).evaluate(c.request)
        #expect(decision.allowed == c.allowed, "\(c.name): \(decision)")
    }

    @Test func theMatrixIsAtLeastThirtyCases() {
        #expect(Self.cases.count >= 30)
    }

    @Test func aDenialNamesThePolicyThatDecidedIt() throws {
        let deny = try Self.policy("no-admin", #"{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}"#)
        let audit = try Self.policy("watch", #"{"action": "AUDIT", "rules": [{}]}"#)
        let d = WorkloadAuthorization(policies: [deny, audit], namespace: "shop", labels: [:]).evaluate(Self.http(Self.frontend, "GET", "/admin"))
        #expect(d == AuthorizationDecision(allowed: false, deniedBy: "shop/no-admin", audited: ["shop/watch"]))
        let other = WorkloadAuthorization(policies: [deny], namespace: "other", labels: [:])
        #expect(other.isEmpty, "a policy applies to its own namespace only")
    }

    @Test func onlyRulesWithHTTPAttributesNeedHTTPParsed() throws {
        let l4 = try Self.policy("l4", #"{"rules": [{"from": [{"source": {"namespaces": ["shop"]}}]}]}"#)
        let l7 = try Self.policy("l7", #"{"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}"#)
        #expect(!WorkloadAuthorization(policies: [l4], namespace: "shop", labels: [:]).usesHTTPFields)
        #expect(WorkloadAuthorization(policies: [l4, l7], namespace: "shop", labels: [:]).usesHTTPFields)
    }
}

@Suite struct PeerAuthenticationResolution {
    static func pa(_ name: String, _ json: String, namespace: String = "shop") throws -> (name: String, namespace: String, spec: PeerAuthenticationSpec) {
        let doc = #"{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "\#(name)", "namespace": "\#(namespace)"}, "spec": \#(json)}"#
        guard case .peerAuthentication(let spec) = try ResourceDocument.decode(json: doc).spec else {
            throw ValidationError(field: "kind", "not a PeerAuthentication")
        }
        return (name, namespace, spec)
    }

    @Test func withoutAPolicyTheModeIsPermissiveAsInIstio() {
        #expect(EffectivePeerAuthentication(policies: [], namespace: "shop", labels: [:]) == .init(mode: .permissive))
    }

    @Test func aWorkloadPolicyWinsOverTheNamespaceAndPortsOverrideIt() throws {
        let policies = [
            try Self.pa("default", #"{"mtls": {"mode": "STRICT"}}"#),
            try Self.pa("legacy", #"{"selector": {"matchLabels": {"app": "legacy"}}, "mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {"9090": {"mode": "STRICT"}, "9091": {"mode": "UNSET"}}}"#),
            try Self.pa("elsewhere", #"{"mtls": {"mode": "DISABLE"}}"#, namespace: "other"),
        ]
        let catalog = EffectivePeerAuthentication(policies: policies, namespace: "shop", labels: ["app": "catalog"])
        #expect(catalog == .init(mode: .strict))
        let legacy = EffectivePeerAuthentication(policies: policies, namespace: "shop", labels: ["app": "legacy"])
        #expect(legacy.mode(port: 8080) == .permissive)
        #expect(legacy.mode(port: 9090) == .strict)
        #expect(legacy.mode(port: 9091) == .permissive, "UNSET inherits the workload's mode")
        #expect(EffectivePeerAuthentication.namespaceMode(policies, namespace: "other") == .disable)
    }

    @Test func unsetInheritsTheNamespaceMode() throws {
        let policies = [try Self.pa("default", #"{"mtls": {"mode": "STRICT"}}"#),
                        try Self.pa("w", #"{"selector": {"matchLabels": {"app": "catalog"}}, "mtls": {"mode": "UNSET"}}"#)]
        #expect(EffectivePeerAuthentication(policies: policies, namespace: "shop", labels: ["app": "catalog"]).mode == .strict)
    }

    @Test func aPolicyThisVersionCannotReadFailsClosed() {
        let snapshot = NodeSnapshot(version: 1, node: "n", trustDomain: "cluster.local", namespaces: [], workloads: [], services: [],
                                    policies: [.init(kind: "PeerAuthentication", namespace: "shop", name: "future", spec: ["mtls": ["mode": "SUPER"]]),
                                               .init(kind: "AuthorizationPolicy", namespace: "shop", name: "future", spec: ["newField": true])])
        let p = SnapshotPolicies(snapshot: snapshot)
        #expect(p.undecodable.count == 2)
        #expect(p.peerAuthentication(namespace: "shop", labels: [:]).mode == .strict)
        #expect(!p.authorization(namespace: "shop", labels: [:]).evaluate(AuthorizationRequest(sourcePrincipal: nil, destinationPort: 1)).allowed)
    }
}
