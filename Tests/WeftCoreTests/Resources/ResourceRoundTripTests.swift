import Testing
@testable import WeftCore

/// Complete manifests of every kind, using as many fields as each kind has.
enum GoodManifests {
    static let namespace = #"""
    {"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace",
     "metadata": {"name": "shop", "labels": {"team": "storefront"}},
     "spec": {"mesh": {"enabled": true}}}
    """#

    static let workload = #"""
    {"apiVersion": "weft.dev/v1alpha1", "kind": "Workload",
     "metadata": {"name": "catalog-v1", "namespace": "shop",
                  "labels": {"app": "catalog", "version": "v1", "app.kubernetes.io/part-of": "shop"},
                  "annotations": {"weft.dev/owner": "team storefront"},
                  "resourceVersion": "42", "generation": 3, "uid": "0b6f7f2e-5c1d-4f7e-9a51-3f1d2c0e9b11",
                  "creationTimestamp": "2025-01-31T12:00:00Z"},
     "spec": {"node": "node-a", "unit": "catalog-v1.service", "netns": "/run/netns/catalog",
              "serviceAccount": "catalog",
              "ports": [{"name": "http", "port": 8080, "protocol": "http"}, {"port": 9090, "protocol": "grpc"}],
              "addresses": ["198.18.0.1", "fd00:77::1"]},
     "status": {"phase": "Captured", "conditions": [{"type": "Ready", "status": "True"}]}}
    """#

    static let cgroupWorkload = #"""
    {"apiVersion": "weft.dev/v1alpha1", "kind": "Workload",
     "metadata": {"name": "legacy-db", "namespace": "shop"},
     "spec": {"node": "node-b", "cgroup": "custom/legacy-db"}}
    """#

    static let service = #"""
    {"apiVersion": "weft.dev/v1alpha1", "kind": "Service",
     "metadata": {"name": "catalog", "namespace": "shop"},
     "spec": {"selector": {"app": "catalog"},
              "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "http"},
                        {"name": "grpc", "port": 9090, "targetPort": 9090, "protocol": "grpc"}],
              "virtualIP": "198.19.0.10"}}
    """#

    static let faultInjection = #"""
    {"apiVersion": "weft.dev/v1alpha1", "kind": "FaultInjection",
     "metadata": {"name": "flaky", "namespace": "shop"},
     "spec": {"delay": {"fixedDelay": "5s", "percentage": {"value": 10}},
              "abort": {"httpStatus": 503, "percentage": {"value": 0.5}}}}
    """#

    static let httpRoute = #"""
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
     "metadata": {"name": "catalog-routes", "namespace": "shop"},
     "spec": {
       "parentRefs": [{"group": "", "kind": "Service", "name": "catalog", "port": 80},
                      {"group": "", "kind": "Service", "name": "catalog", "namespace": "shop", "sectionName": "http"}],
       "hostnames": ["catalog.shop", "*.example.com"],
       "rules": [
         {"name": "canary",
          "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                       "headers": [{"name": "x-canary", "value": "true"},
                                   {"type": "RegularExpression", "name": "user-agent", "value": "^curl/.*$"}],
                       "queryParams": [{"name": "debug", "value": "1"}],
                       "method": "GET"}],
          "filters": [
            {"type": "RequestHeaderModifier",
             "requestHeaderModifier": {"set": [{"name": "x-route", "value": "canary"}],
                                       "add": [{"name": "x-trace", "value": "a,b"}], "remove": ["x-internal"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}},
            {"type": "URLRewrite", "urlRewrite": {"hostname": "catalog-internal",
                                                  "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v2"}}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "catalog-shadow", "port": 80},
                                                        "fraction": {"numerator": 1, "denominator": 1000}}},
            {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit", "namespace": "ops", "port": 8080},
                                                        "percent": 5}},
            {"type": "ExtensionRef", "extensionRef": {"group": "weft.dev", "kind": "FaultInjection", "name": "flaky"}}],
          "backendRefs": [
            {"name": "catalog-v2", "port": 80, "weight": 90,
             "filters": [{"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"set": [{"name": "x-backend", "value": "v2"}]}}]},
            {"group": "", "kind": "Service", "name": "catalog-v1", "namespace": "shop", "port": 80, "weight": 10}],
          "timeouts": {"request": "10s", "backendRequest": "2s500ms"},
          "retry": {"codes": [502, 503], "attempts": 3, "backoff": "100ms"}},
         {"matches": [{"path": {"type": "Exact", "value": "/old"}},
                      {"path": {"type": "RegularExpression", "value": "/legacy/[0-9]+"}}],
          "filters": [{"type": "RequestRedirect",
                       "requestRedirect": {"scheme": "https", "hostname": "shop.example.com", "port": 443,
                                           "path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"},
                                           "statusCode": 301}}]},
         {"backendRefs": [{"name": "catalog-v1", "port": 80}]}
       ]}}
    """#

    static let authorizationPolicy = #"""
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "catalog-viewers", "namespace": "shop"},
     "spec": {
       "selector": {"matchLabels": {"app": "catalog"}},
       "action": "ALLOW",
       "rules": [
         {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/frontend", "cluster.local/ns/ops/*"],
                               "notNamespaces": ["sandbox"], "ipBlocks": ["10.0.0.0/8", "fd00::/8", "192.168.1.7"],
                               "notIpBlocks": ["10.9.0.0/16"]}},
                   {"source": {"serviceAccounts": ["shop/checkout", "auditor"], "notServiceAccounts": ["ops/intruder"]}}],
          "to": [{"operation": {"methods": ["GET", "HEAD"], "paths": ["/api/*", "*.png", "/healthz"],
                                "notPaths": ["/api/admin*"], "ports": ["8080"], "notPorts": ["9090"],
                                "hosts": ["catalog.shop", "*"], "notHosts": ["evil*"], "notMethods": ["DELETE"]}}],
          "when": [{"key": "request.headers[x-tenant]", "values": ["acme", "globex*"]},
                   {"key": "source.ip", "notValues": ["10.1.2.3", "10.2.0.0/16"]},
                   {"key": "destination.port", "values": ["8080"]},
                   {"key": "source.serviceAccount", "values": ["shop/checkout"]},
                   {"key": "connection.sni", "values": ["*.shop.svc"]}]},
         {}]}}
    """#

    static let denyPolicy = #"""
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "deny-sandbox", "namespace": "shop"},
     "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["sandbox"]}}]}]}}
    """#

    static let peerAuthentication = #"""
    {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
     "metadata": {"name": "catalog-mtls", "namespace": "shop"},
     "spec": {"selector": {"matchLabels": {"app": "catalog"}},
              "mtls": {"mode": "STRICT"},
              "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}, "8080": {"mode": "DISABLE"}}}}
    """#

    static let destinationRule = #"""
    {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
     "metadata": {"name": "catalog", "namespace": "shop"},
     "spec": {"host": "catalog.shop.svc.cluster.local",
              "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "session"}}},
                                "connectionPool": {"tcp": {"maxConnections": 100}, "http": {"http1MaxPendingRequests": 10, "maxRequestsPerConnection": 1}},
                                "outlierDetection": {"consecutiveGatewayErrors": 3, "interval": "5s", "baseEjectionTime": "30s", "maxEjectionPercent": 50}}}}
    """#

    static let leastRequest = #"""
    {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
     "metadata": {"name": "orders", "namespace": "shop"},
     "spec": {"host": "orders", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}, "outlierDetection": {}}}}
    """#

    static let all: [(name: String, text: String)] = [
        ("Namespace", namespace), ("Workload", workload), ("Workload with cgroup", cgroupWorkload),
        ("Service", service), ("FaultInjection", faultInjection), ("HTTPRoute", httpRoute),
        ("AuthorizationPolicy", authorizationPolicy), ("DENY AuthorizationPolicy", denyPolicy),
        ("PeerAuthentication", peerAuthentication), ("DestinationRule", destinationRule),
        ("DestinationRule with defaults", leastRequest),
    ]
}

@Suite struct ResourceRoundTrip {
    @Test(arguments: GoodManifests.all.map(\.name))
    func decodeEncodeDecodeGivesAnEqualResource(name: String) throws {
        let text = try #require(GoodManifests.all.first { $0.name == name }).text
        let resource = try ResourceDocument.decode(json: text)
        let encoded = resource.encode()
        #expect(try ResourceDocument.decode(encoded) == resource)
        // Through text too, and the encoding is stable once defaults are written.
        let again = try ResourceDocument.decode(json: encoded.serialized(pretty: true))
        #expect(again == resource)
        #expect(again.encode() == encoded)
    }

    @Test func destinationRulesNameTheirServiceAndFillIstiosOutlierDefaults() throws {
        guard case .destinationRule(let full) = try ResourceDocument.decode(json: GoodManifests.destinationRule).spec,
              case .destinationRule(let short) = try ResourceDocument.decode(json: GoodManifests.leastRequest).spec else {
            Issue.record("not destination rules")
            return
        }
        #expect(full.serviceName(namespace: "shop") == "catalog")
        #expect(full.serviceName(namespace: "other") == nil, "a host in another namespace is not this rule's")
        #expect(full.trafficPolicy.loadBalancer?.consistentHash == .cookie("session"))
        #expect(short.serviceName(namespace: "shop") == "orders")
        let od = try #require(short.trafficPolicy.outlierDetection)
        #expect(od.consecutive5xxErrors == 5 && od.interval.milliseconds == 10_000 && od.baseEjectionTime.milliseconds == 30_000
                && od.maxEjectionPercent == 10, "Istio's defaults")
    }

    @Test func namespaceMeshDefaultsToOffWhenSpecIsLeftOut() throws {
        let r = try ResourceDocument.decode(json: #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": "shop"}}"#)
        #expect(r.spec == .namespace(NamespaceSpec(meshEnabled: false)))
        #expect(r.metadata.namespace == nil)
        #expect(r.encode()["spec"] == ["mesh": ["enabled": false]])
    }

    @Test func workloadDecodesToTypedValues() throws {
        let r = try ResourceDocument.decode(json: GoodManifests.workload)
        guard case .workload(let w) = r.spec else { Issue.record("not a workload"); return }
        #expect(w.node == "node-a")
        #expect(w.placement == .unit("catalog-v1.service"))
        #expect(w.ports == [.init(name: "http", port: 8080, appProtocol: .http), .init(port: 9090, appProtocol: .grpc)])
        #expect(w.addresses == [IPAddress(ipv4: 198, 18, 0, 1), IPAddress("fd00:77::1")!])
        #expect(r.metadata.labels["app.kubernetes.io/part-of"] == "shop")
        #expect(r.metadata.generation == 3)
        #expect(r.status?["phase"] == "Captured")
    }

    @Test func workloadServiceAccountAndPortProtocolHaveDefaults() throws {
        let r = try ResourceDocument.decode(json: #"""
        {"apiVersion": "weft.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "w", "namespace": "shop"},
         "spec": {"node": "n1", "cgroup": "/custom//w/", "ports": [{"port": 7000}]}}
        """#)
        guard case .workload(let w) = r.spec else { Issue.record("not a workload"); return }
        #expect(w.serviceAccount == "default")
        #expect(w.ports[0].appProtocol == .auto)
        #expect(w.placement == .cgroup("custom/w"))
    }

    @Test func theDefaultNamespaceFillsInAMissingNamespaceOnly() throws {
        let text = #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "w"}, "spec": {"node": "n", "unit": "w.service"}}"#
        let shop = try NamespaceName("shop")
        #expect(try ResourceDocument.decode(json: text, defaultNamespace: shop).metadata.namespace == shop)
        let explicit = try ResourceDocument.decode(json: GoodManifests.cgroupWorkload, defaultNamespace: try NamespaceName("other"))
        #expect(explicit.metadata.namespace == shop)
    }

    @Test func nullIsTheSameAsAbsent() throws {
        let r = try ResourceDocument.decode(json: #"""
        {"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace",
         "metadata": {"name": "shop", "labels": null, "creationTimestamp": null}, "spec": {"mesh": null}, "status": null}
        """#)
        #expect(r.metadata.labels.isEmpty)
        #expect(r.metadata.creationTimestamp == nil)
        #expect(r.status == nil)
    }

    @Test func serviceTargetPortIsANumberOrAName() throws {
        let r = try ResourceDocument.decode(json: GoodManifests.service)
        guard case .service(let s) = r.spec else { Issue.record("not a service"); return }
        #expect(s.ports.map(\.targetPort) == [.name("http"), .number(9090)])
        #expect(s.virtualIP == IPAddress(ipv4: 198, 19, 0, 10))
    }

    @Test func routeWithoutRulesGetsOneRuleMatchingEveryPath() throws {
        let r = try ResourceDocument.decode(json: #"""
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r", "namespace": "shop"},
         "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "catalog"}]}}
        """#)
        guard case .httpRoute(let route) = r.spec else { Issue.record("not a route"); return }
        #expect(route.rules == [HTTPRouteSpec.Rule(matches: [HTTPRouteSpec.Match(path: .init(type: .pathPrefix, value: "/"))])])
        // Written out in full, as the Kubernetes API server writes defaults.
        #expect(r.encode()["spec"]?["rules"] == [["matches": [["path": ["type": "PathPrefix", "value": "/"]]]]])
    }

    @Test func routeDefaultsAreAppliedWhereGatewayAPIDefinesThem() throws {
        let r = try ResourceDocument.decode(json: GoodManifests.httpRoute)
        guard case .httpRoute(let route) = r.spec else { Issue.record("not a route"); return }
        let canary = route.rules[0]
        #expect(canary.matches[0].headers[0].type == .exact)
        #expect(canary.backendRefs[0].backend == .init(name: "catalog-v2", port: 80))
        #expect(route.rules[2].backendRefs[0].weight == 1)
        #expect(route.rules[2].matches == [HTTPRouteSpec.Match()])
        #expect(canary.filters.last == .faultInjection(name: "flaky"))
        #expect(canary.timeouts?.backendRequest?.milliseconds == 2500)
        guard case .requestRedirect(let redirect) = route.rules[1].filters[0] else { Issue.record("not a redirect"); return }
        #expect(redirect.statusCode == 301)
        #expect(redirect.path == .replaceFullPath("/new"))
    }

    @Test func policyStringMatchesAreTyped() throws {
        let r = try ResourceDocument.decode(json: GoodManifests.authorizationPolicy)
        guard case .authorizationPolicy(let p) = r.spec else { Issue.record("not a policy"); return }
        let source = p.rules[0].from[0]
        #expect(source.principals == [.exact("cluster.local/ns/shop/sa/frontend"), .prefix("cluster.local/ns/ops/")])
        #expect(source.ipBlocks.map(\.description) == ["10.0.0.0/8", "fd00::/8", "192.168.1.7/32"])
        #expect(p.rules[0].to[0].paths == [.prefix("/api/"), .suffix(".png"), .exact("/healthz")])
        #expect(p.rules[0].to[0].ports == [8080])
        #expect(p.rules[0].when[0].key == .requestHeader("x-tenant"))
        #expect(p.rules[1] == AuthorizationPolicySpec.Rule())
    }

    @Test func policyActionDefaultsToAllowAndAnEmptySpecAllowsNothing() throws {
        let r = try ResourceDocument.decode(json: #"""
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "allow-nothing", "namespace": "shop"}, "spec": {}}
        """#)
        #expect(r.spec == .authorizationPolicy(AuthorizationPolicySpec(selector: nil, action: .allow, rules: [])))
        #expect(r.encode()["spec"] == ["action": "ALLOW"])
    }

    @Test func peerAuthenticationPortsAreNumbersWrittenInOrder() throws {
        let r = try ResourceDocument.decode(json: GoodManifests.peerAuthentication)
        guard case .peerAuthentication(let p) = r.spec else { Issue.record("not a peer authentication"); return }
        #expect(p.portLevelMtls == [8080: .disable, 9090: .permissive])
        #expect(r.encode()["spec"]?["portLevelMtls"]?.objectValue?.keys == ["8080", "9090"])
    }

    @Test func peerAuthenticationWithoutModeIsUnset() throws {
        let r = try ResourceDocument.decode(json: #"""
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "p", "namespace": "shop"}, "spec": {"mtls": {}}}
        """#)
        #expect(r.spec == .peerAuthentication(PeerAuthenticationSpec(mtls: .unset)))
    }

    @Test func encodingPutsEnvelopeFieldsFirst() throws {
        let r = try ResourceDocument.decode(json: GoodManifests.workload)
        #expect(r.encode().objectValue?.keys == ["apiVersion", "kind", "metadata", "spec", "status"])
        #expect(r.apiVersion == "weft.dev/v1alpha1")
        #expect(r.kind == .workload)
    }
}
