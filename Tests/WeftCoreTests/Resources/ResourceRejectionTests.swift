import Testing
@testable import WeftCore

/// One invalid manifest, the field the error must name, and words the message must contain.
struct BadManifest: Sendable, CustomTestStringConvertible {
    let what: String
    let json: String
    let field: String
    let message: String

    init(_ what: String, _ json: String, field: String, _ message: String) {
        self.what = what
        self.json = json
        self.field = field
        self.message = message
    }

    var testDescription: String { what }
}

private func document(_ apiVersion: String, _ kind: String, spec: String,
                      metadata: String = #"{"name": "x", "namespace": "shop"}"#) -> String {
    #"{"apiVersion": "\#(apiVersion)", "kind": "\#(kind)", "metadata": \#(metadata), "spec": \#(spec)}"#
}

private func weft(_ kind: String, _ spec: String) -> String { document("weft.dev/v1alpha1", kind, spec: spec) }
private func workload(_ spec: String) -> String { weft("Workload", spec) }
private func service(_ spec: String) -> String { weft("Service", spec) }
private func policy(_ spec: String) -> String { document("security.istio.io/v1", "AuthorizationPolicy", spec: spec) }
private func peer(_ spec: String) -> String { document("security.istio.io/v1", "PeerAuthentication", spec: spec) }
private func rule(dr spec: String) -> String { document("networking.istio.io/v1", "DestinationRule", spec: spec) }
private let parent = #"{"group": "", "kind": "Service", "name": "catalog"}"#
private func route(parents: String = "[\(parent)]", rules: String) -> String {
    document("gateway.networking.k8s.io/v1", "HTTPRoute", spec: #"{"parentRefs": \#(parents), "rules": \#(rules)}"#)
}
/// A route with one rule.
private func rule(_ rule: String) -> String { route(rules: "[\(rule)]") }
private func filter(_ filter: String, matches: String = #"[{"path": {"type": "PathPrefix", "value": "/a"}}]"#) -> String {
    rule(#"{"matches": \#(matches), "filters": [\#(filter)]}"#)
}
/// An AuthorizationPolicy with one rule.
private func policyRule(_ rule: String) -> String { policy(#"{"rules": [\#(rule)]}"#) }
private func source(_ source: String) -> String { policyRule(#"{"from": [{"source": \#(source)}]}"#) }
private func operation(_ operation: String) -> String { policyRule(#"{"to": [{"operation": \#(operation)}]}"#) }
private func condition(_ condition: String) -> String { policyRule(#"{"when": [\#(condition)]}"#) }

private let manyRules = "[" + Array(repeating: "{}", count: 17).joined(separator: ",") + "]"
private let manyMatches: String = {
    let matches = "[" + Array(repeating: #"{"path": {"value": "/"}}"#, count: 50).joined(separator: ",") + "]"
    return "[" + Array(repeating: #"{"matches": \#(matches)}"#, count: 3).joined(separator: ",") + "]"
}()

let badManifests: [BadManifest] = [
    // The envelope.
    .init("root that is not an object", "[]", field: "(root)", "expected an object"),
    .init("unknown apiVersion", #"{"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": {"name": "x"}}"#,
          field: "apiVersion", "is not served by Weft (served: weft.dev/v1alpha1, gateway.networking.k8s.io/v1, security.istio.io/v1, networking.istio.io/v1)"),
    .init("Istio's VirtualService", #"{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x"}}"#,
          field: "kind", "Weft routes with Gateway API's HTTPRoute"),
    .init("an older Istio version", document("security.istio.io/v1beta1", "AuthorizationPolicy", spec: "{}"),
          field: "apiVersion", "use security.istio.io/v1"),
    .init("kind of another apiVersion", document("weft.dev/v1alpha1", "HTTPRoute", spec: "{}"),
          field: "kind", "HTTPRoute is served as gateway.networking.k8s.io/v1"),
    .init("missing kind", #"{"apiVersion": "weft.dev/v1alpha1", "metadata": {"name": "x"}}"#,
          field: "kind", "is required (kinds of weft.dev/v1alpha1: Namespace, Workload, Service, FaultInjection)"),
    .init("misspelt top-level field", #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": "x"}, "sepc": {}}"#,
          field: "sepc", #"unknown field; did you mean "spec"? (allowed: apiVersion, kind, metadata, spec, status)"#),
    .init("missing metadata", #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace"}"#, field: "metadata", "is required"),
    .init("upper-case name", document("weft.dev/v1alpha1", "Workload", spec: "{}", metadata: #"{"name": "Catalog", "namespace": "shop"}"#),
          field: "metadata.name", "\"Catalog\" is not a valid name"),
    .init("Service name starting with a digit", document("weft.dev/v1alpha1", "Service", spec: "{}", metadata: #"{"name": "1catalog", "namespace": "shop"}"#),
          field: "metadata.name", "starting with a letter"),
    .init("Namespace name with a dot", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop.eu"}"#),
          field: "metadata.name", "1 to 63 characters"),
    .init("namespaced kind without namespace", document("weft.dev/v1alpha1", "Workload", spec: "{}", metadata: #"{"name": "w"}"#),
          field: "metadata.namespace", "is required"),
    .init("Namespace with a namespace", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop", "namespace": "shop"}"#),
          field: "metadata.namespace", "must not be set"),
    .init("invalid label key", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop", "labels": {"a/b/c": "x"}}"#),
          field: "metadata.labels[a/b/c]", "not a valid label key"),
    .init("label value that is a number", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop", "labels": {"version": 2}}"#),
          field: "metadata.labels[version]", #"expected a string, found the number 2 (in YAML, quote it: "2")"#),
    .init("header value that YAML read as a boolean", rule(#"{"matches": [{"headers": [{"name": "x-canary", "value": true}]}]}"#),
          field: "spec.rules[0].matches[0].headers[0].value", #"found true (in YAML, quote it: "true")"#),
    .init("label value too long", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop", "labels": {"v": "\#(String(repeating: "a", count: 64))"}}"#),
          field: "metadata.labels[v]", "not a valid label value"),
    .init("generateName", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop", "generateName": "shop-"}"#),
          field: "metadata.generateName", "not supported"),
    .init("creationTimestamp that is not RFC 3339", document("weft.dev/v1alpha1", "Namespace", spec: "{}", metadata: #"{"name": "shop", "creationTimestamp": "yesterday"}"#),
          field: "metadata.creationTimestamp", "not an RFC 3339 time"),
    .init("status that is not an object", #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": "shop"}, "status": "ok"}"#,
          field: "status", "expected an object"),

    // Namespace.
    .init("mesh.enabled as a string", document("weft.dev/v1alpha1", "Namespace", spec: #"{"mesh": {"enabled": "yes"}}"#, metadata: #"{"name": "shop"}"#),
          field: "spec.mesh.enabled", "expected true or false, found the string \"yes\""),

    // Workload.
    .init("workload without spec", #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "w", "namespace": "shop"}}"#,
          field: "spec", "is required"),
    .init("workload without node", workload(#"{"unit": "a.service"}"#), field: "spec.node", "is required"),
    .init("workload with cgroup and unit", workload(#"{"node": "n", "cgroup": "a", "unit": "a.service"}"#), field: "spec.unit", "not both"),
    .init("workload with neither cgroup nor unit", workload(#"{"node": "n"}"#), field: "spec", "exactly one of cgroup or unit is required"),
    .init("unit without a unit type", workload(#"{"node": "n", "unit": "catalog"}"#), field: "spec.unit", "not a systemd unit name"),
    .init("unit that is a template", workload(#"{"node": "n", "unit": "getty@.service"}"#), field: "spec.unit", "a template needs its instance"),
    .init("cgroup escaping the root", workload(#"{"node": "n", "cgroup": "custom/../../etc"}"#), field: "spec.cgroup", "without '.' or '..'"),
    .init("relative netns", workload(#"{"node": "n", "unit": "a.service", "netns": "run/netns/a"}"#), field: "spec.netns", "absolute path"),
    .init("port out of range", workload(#"{"node": "n", "unit": "a.service", "ports": [{"port": 80}, {"port": 70000}]}"#),
          field: "spec.ports[1].port", "must be 1 to 65535, not 70000"),
    .init("port written as a fraction", workload(#"{"node": "n", "unit": "a.service", "ports": [{"port": 8080.0}]}"#),
          field: "spec.ports[0].port", "expected an integer, found the number 8080.0"),
    .init("protocol in the wrong case", workload(#"{"node": "n", "unit": "a.service", "ports": [{"port": 80, "protocol": "HTTP"}]}"#),
          field: "spec.ports[0].protocol", "values are case-sensitive: http"),
    .init("port name that is not an IANA service name", workload(#"{"node": "n", "unit": "a.service", "ports": [{"name": "http-frontend-port", "port": 80}]}"#),
          field: "spec.ports[0].name", "IANA service name"),
    .init("duplicate port name", workload(#"{"node": "n", "unit": "a.service", "ports": [{"name": "web", "port": 80}, {"name": "web", "port": 81}]}"#),
          field: "spec.ports[1].name", "already the name of spec.ports[0]"),
    .init("address that is not an IP", workload(#"{"node": "n", "unit": "a.service", "addresses": ["10.0.0.1", "10.0.0.300"]}"#),
          field: "spec.addresses[1]", "not an IP address"),
    .init("service account with upper case", workload(#"{"node": "n", "unit": "a.service", "serviceAccount": "Web"}"#),
          field: "spec.serviceAccount", "not a valid name"),
    .init("unknown workload field", workload(#"{"node": "n", "unit": "a.service", "image": "nginx"}"#),
          field: "spec.image", "unknown field (allowed: node, cgroup, unit, netns, serviceAccount, ports, addresses)"),

    // Service.
    .init("empty selector", service(#"{"selector": {}, "ports": [{"port": 80}]}"#), field: "spec.selector", "at least one label"),
    .init("service without ports", service(#"{"selector": {"app": "a"}, "ports": []}"#), field: "spec.ports", "at least one port"),
    .init("unnamed port among several", service(#"{"selector": {"app": "a"}, "ports": [{"port": 80}, {"name": "b", "port": 81}]}"#),
          field: "spec.ports[0].name", "more than one port"),
    .init("duplicate service port", service(#"{"selector": {"app": "a"}, "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}"#),
          field: "spec.ports[1].port", "already listed as spec.ports[0]"),
    .init("targetPort of the wrong type", service(#"{"selector": {"app": "a"}, "ports": [{"port": 80, "targetPort": true}]}"#),
          field: "spec.ports[0].targetPort", "expected a port number or a port name"),
    .init("loopback virtual IP", service(#"{"selector": {"app": "a"}, "ports": [{"port": 80}], "virtualIP": "127.0.0.1"}"#),
          field: "spec.virtualIP", "loopback"),
    .init("Kubernetes clusterIP", service(#"{"selector": {"app": "a"}, "ports": [{"port": 80}], "clusterIP": "10.0.0.1"}"#),
          field: "spec.clusterIP", "virtualIP"),

    // FaultInjection.
    .init("fault with nothing to inject", weft("FaultInjection", "{}"), field: "spec", "at least one of delay or abort"),
    .init("delay without percentage", weft("FaultInjection", #"{"delay": {"fixedDelay": "1s"}}"#),
          field: "spec.delay.percentage", "is required"),
    .init("delay as a fraction of seconds", weft("FaultInjection", #"{"delay": {"fixedDelay": "1.5s", "percentage": {"value": 5}}}"#),
          field: "spec.delay.fixedDelay", "not a Gateway API duration"),
    .init("abort status out of range", weft("FaultInjection", #"{"abort": {"httpStatus": 700, "percentage": {"value": 5}}}"#),
          field: "spec.abort.httpStatus", "must be 200 to 599"),
    .init("abort with two statuses", weft("FaultInjection", #"{"abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE", "percentage": {"value": 5}}}"#),
          field: "spec.abort.grpcStatus", "not both"),
    .init("percentage above 100", weft("FaultInjection", #"{"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 150}}}"#),
          field: "spec.abort.percentage.value", "must be 0.0 to 100.0"),
    .init("deprecated integer percent", weft("FaultInjection", #"{"abort": {"httpStatus": 503, "percent": 5}}"#),
          field: "spec.abort.percent", "percentage: {value: N}"),

    // HTTPRoute: parents and hostnames.
    .init("parentRef without group", route(parents: #"[{"kind": "Service", "name": "catalog"}]"#, rules: "[{}]"),
          field: "spec.parentRefs[0].group", "is required: write group: \"\""),
    .init("parentRef to a Gateway", route(parents: #"[{"group": "", "kind": "Gateway", "name": "gw"}]"#, rules: "[{}]"),
          field: "spec.parentRefs[0].kind", "a Weft route's parent is a Service"),
    .init("route without parents", route(parents: "[]", rules: "[{}]"), field: "spec.parentRefs", "at least one parentRef"),
    .init("the same parent twice", route(parents: "[\(parent), \(parent)]", rules: "[{}]"),
          field: "spec.parentRefs[1]", "duplicates spec.parentRefs[0]"),
    .init("same parent once with a port and once without", route(parents: #"[\#(parent), {"group": "", "kind": "Service", "name": "catalog", "port": 80}]"#, rules: "[{}]"),
          field: "spec.parentRefs[1]", "sectionName or port must then be set on both"),
    .init("hostname that is an IP", document("gateway.networking.k8s.io/v1", "HTTPRoute", spec: #"{"parentRefs": [\#(parent)], "hostnames": ["10.0.0.1"]}"#),
          field: "spec.hostnames[0]", "no IP addresses"),
    .init("useDefaultGateways", document("gateway.networking.k8s.io/v1", "HTTPRoute", spec: #"{"parentRefs": [\#(parent)], "useDefaultGateways": "All"}"#),
          field: "spec.useDefaultGateways", "Weft has no Gateways"),

    // HTTPRoute: rules and matches.
    .init("more than 16 rules", route(rules: manyRules), field: "spec.rules", "at most 16 items are allowed, found 17"),
    .init("more than 128 matches in a route", route(rules: manyMatches), field: "spec.rules", "150 matches in all; a route may have at most 128"),
    .init("empty rules list", route(rules: "[]"), field: "spec.rules", "must not be empty"),
    .init("duplicate rule names", route(rules: #"[{"name": "a"}, {"name": "a"}]"#), field: "spec.rules[1].name", "rule names must be unique"),
    .init("relative Exact path", rule(#"{"matches": [{"path": {"value": "/ok"}}, {"path": {"type": "Exact", "value": "api"}}]}"#),
          field: "spec.rules[0].matches[1].path.value", "must be an absolute path starting with '/'"),
    .init("path traversal", rule(#"{"matches": [{"path": {"value": "/a/../b"}}]}"#),
          field: "spec.rules[0].matches[0].path.value", "must not contain '/../'"),
    .init("encoded slash", rule(#"{"matches": [{"path": {"value": "/a%2Fb"}}]}"#),
          field: "spec.rules[0].matches[0].path.value", "must not contain '%2F'"),
    .init("path with a space", rule(#"{"matches": [{"path": {"type": "Exact", "value": "/a b"}}]}"#),
          field: "spec.rules[0].matches[0].path.value", "holds characters a path cannot"),
    .init("regular expression that does not compile", rule(#"{"matches": [{"path": {"type": "RegularExpression", "value": "/(a"}}]}"#),
          field: "spec.rules[0].matches[0].path.value", "not a regular expression Weft can compile"),
    .init("Ingress path type", rule(#"{"matches": [{"path": {"type": "Prefix", "value": "/"}}]}"#),
          field: "spec.rules[0].matches[0].path.type", "\"Prefix\" is not one of: Exact, PathPrefix, RegularExpression"),
    .init("pseudo-header match", rule(#"{"matches": [{"headers": [{"name": ":authority", "value": "a"}]}]}"#),
          field: "spec.rules[0].matches[0].headers[0].name", "not an HTTP header name"),
    .init("same header matched twice", rule(#"{"matches": [{"headers": [{"name": "X-Env", "value": "a"}, {"name": "x-env", "value": "b"}]}]}"#),
          field: "spec.rules[0].matches[0].headers[1].name", "header names are case-insensitive"),
    .init("empty header value", rule(#"{"matches": [{"headers": [{"name": "x", "value": ""}]}]}"#),
          field: "spec.rules[0].matches[0].headers[0].value", "must be 1 to 4096 characters"),
    .init("header value with a newline", rule(#"{"matches": [{"headers": [{"name": "x", "value": "a\r\nb: c"}]}]}"#),
          field: "spec.rules[0].matches[0].headers[0].value", "control characters"),
    .init("lower-case method", rule(#"{"matches": [{"method": "get"}]}"#),
          field: "spec.rules[0].matches[0].method", "values are case-sensitive: GET"),
    .init("misspelt match field", rule(#"{"matches": [{"paths": {"value": "/"}}]}"#),
          field: "spec.rules[0].matches[0].paths", "did you mean \"path\"?"),
    .init("session persistence", rule(#"{"sessionPersistence": {"sessionName": "s"}}"#),
          field: "spec.rules[0].sessionPersistence", "not supported by Weft"),

    // HTTPRoute: filters.
    .init("ReplacePrefixMatch on an Exact match",
          filter(#"{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}"#,
                 matches: #"[{"path": {"type": "Exact", "value": "/a"}}]"#),
          field: "spec.rules[0].filters[0].urlRewrite.path", "exactly one match, of path type PathPrefix (it has 1 match of type Exact)"),
    .init("ReplacePrefixMatch with two matches",
          filter(#"{"type": "RequestRedirect", "requestRedirect": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}}"#,
                 matches: #"[{"path": {"value": "/a"}}, {"path": {"value": "/c"}}]"#),
          field: "spec.rules[0].filters[0].requestRedirect.path", "(it has 2 matches)"),
    .init("path modifier missing its value", filter(#"{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}"#),
          field: "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath", "is required when type is ReplaceFullPath"),
    .init("path modifier with the other type's value",
          filter(#"{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/x", "replacePrefixMatch": "/y"}}}"#),
          field: "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch", "type must be ReplacePrefixMatch"),
    .init("redirect and rewrite together",
          rule(#"{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}, {"type": "URLRewrite", "urlRewrite": {"hostname": "a"}}]}"#),
          field: "spec.rules[0].filters[1]", "cannot be used together"),
    .init("repeated header modifier",
          rule(#"{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["a"]}}, {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["b"]}}]}"#),
          field: "spec.rules[0].filters[1]", "repeats the RequestHeaderModifier filter"),
    .init("redirect status that is not a redirect", filter(#"{"type": "RequestRedirect", "requestRedirect": {"statusCode": 304}}"#),
          field: "spec.rules[0].filters[0].requestRedirect.statusCode", "304 is not one of: 301, 302, 303, 307, 308"),
    .init("redirect to an IP", filter(#"{"type": "RequestRedirect", "requestRedirect": {"hostname": "10.0.0.1"}}"#),
          field: "spec.rules[0].filters[0].requestRedirect.hostname", "no IP address"),
    .init("settings of another filter type", filter(#"{"type": "RequestHeaderModifier", "requestHeaderModifier": {}, "urlRewrite": {}}"#),
          field: "spec.rules[0].filters[0].urlRewrite", "must not be set when type is RequestHeaderModifier"),
    .init("filter without its settings", filter(#"{"type": "RequestMirror"}"#),
          field: "spec.rules[0].filters[0].requestMirror", "is required when type is RequestMirror"),
    .init("two actions on one header", filter(#"{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "Server", "value": "x"}], "remove": ["server"]}}"#),
          field: "spec.rules[0].filters[0].responseHeaderModifier.remove[0]", "already has an action at spec.rules[0].filters[0].responseHeaderModifier.set[0].name"),
    .init("redirect with backends",
          rule(#"{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}], "backendRefs": [{"name": "a", "port": 80}]}"#),
          field: "spec.rules[0].filters[0]", "must not be used together with backendRefs"),
    .init("mirror with percent and fraction",
          filter(#"{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "a", "port": 80}, "percent": 5, "fraction": {"numerator": 1}}}"#),
          field: "spec.rules[0].filters[0].requestMirror.fraction", "only one of percent or fraction"),
    .init("mirror fraction above one",
          filter(#"{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "a", "port": 80}, "fraction": {"numerator": 3, "denominator": 2}}}"#),
          field: "spec.rules[0].filters[0].requestMirror.fraction.numerator", "must not be greater than the denominator"),
    .init("unknown extension filter", filter(#"{"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "RateLimit", "name": "r"}}"#),
          field: "spec.rules[0].filters[0].extensionRef", "the one ExtensionRef filter is group: weft.dev, kind: FaultInjection"),
    .init("two faults in one rule",
          rule(#"{"filters": [{"type": "ExtensionRef", "extensionRef": {"group": "weft.dev", "kind": "FaultInjection", "name": "a"}}, {"type": "ExtensionRef", "extensionRef": {"group": "weft.dev", "kind": "FaultInjection", "name": "b"}}]}"#),
          field: "spec.rules[0].filters[1]", "one fault per rule or backend"),
    .init("experimental CORS filter", filter(#"{"type": "CORS", "cors": {}}"#),
          field: "spec.rules[0].filters[0].cors", "CORS filter is not supported"),

    // HTTPRoute: backends, timeouts, retries.
    .init("backend without port", rule(#"{"backendRefs": [{"name": "catalog"}]}"#),
          field: "spec.rules[0].backendRefs[0].port", "is required for a Service backend"),
    .init("backend weight too large", rule(#"{"backendRefs": [{"name": "catalog", "port": 80, "weight": 2000000}]}"#),
          field: "spec.rules[0].backendRefs[0].weight", "must be 0 to 1000000"),
    .init("backend that is not a Service", rule(#"{"backendRefs": [{"group": "multicluster.x-k8s.io", "kind": "ServiceImport", "name": "a", "port": 80}]}"#),
          field: "spec.rules[0].backendRefs[0].group", "Weft sends requests to Services"),
    .init("filter of a backend checked against the rule's matches",
          rule(#"{"matches": [{"path": {"type": "Exact", "value": "/a"}}], "backendRefs": [{"name": "a", "port": 80, "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]}]}"#),
          field: "spec.rules[0].backendRefs[0].filters[0].urlRewrite.path", "exactly one match"),
    .init("backend timeout above the request timeout", rule(#"{"timeouts": {"request": "1s", "backendRequest": "1500ms"}}"#),
          field: "spec.rules[0].timeouts.backendRequest", "1500ms cannot be longer than the request timeout (1s)"),
    .init("timeout without a unit", rule(#"{"timeouts": {"request": "10"}}"#),
          field: "spec.rules[0].timeouts.request", "\"10\" is not a Gateway API duration"),
    .init("timeout with five parts", rule(#"{"timeouts": {"request": "1h1m1s1ms1ms"}}"#),
          field: "spec.rules[0].timeouts.request", "not a Gateway API duration"),
    .init("retry on a success code", rule(#"{"retry": {"codes": [200]}}"#),
          field: "spec.rules[0].retry.codes[0]", "must be 400 to 599, not 200"),
    .init("negative retry attempts", rule(#"{"retry": {"attempts": -1}}"#),
          field: "spec.rules[0].retry.attempts", "must be 0 to"),

    // AuthorizationPolicy.
    .init("CUSTOM action", policy(#"{"action": "CUSTOM", "provider": {"name": "opa"}}"#), field: "spec.provider", "CUSTOM action"),
    .init("CUSTOM action without provider", policy(#"{"action": "CUSTOM", "rules": [{}]}"#), field: "spec.action", "CUSTOM (external authorization) is not supported"),
    .init("action in lower case", policy(#"{"action": "allow"}"#), field: "spec.action", "values are case-sensitive: ALLOW"),
    .init("DENY without rules", policy(#"{"action": "DENY"}"#), field: "spec.rules", "never matches; add an empty rule {}"),
    .init("targetRefs", policy(#"{"targetRefs": [{"kind": "Service", "name": "a"}]}"#), field: "spec.targetRefs", "Weft picks workloads with selector"),
    .init("empty matchLabels", policy(#"{"selector": {"matchLabels": {}}}"#), field: "spec.selector.matchLabels", "at least one label"),
    .init("misspelt matchLabels", policy(#"{"selector": {"matchlabels": {"app": "a"}}}"#),
          field: "spec.selector.matchlabels", "did you mean \"matchLabels\"?"),
    .init("wildcard in the middle of a principal", source(#"{"principals": ["cluster.local/ns/*/sa/web"]}"#),
          field: "spec.rules[0].from[0].source.principals[0]", "not a match Istio defines"),
    .init("wildcards at both ends", source(#"{"namespaces": ["*shop*"]}"#),
          field: "spec.rules[0].from[0].source.namespaces[0]", "write an exact value, a prefix (abc*), a suffix (*abc) or * alone"),
    .init("empty principal", source(#"{"principals": [""]}"#), field: "spec.rules[0].from[0].source.principals[0]", "must not be empty"),
    .init("bad CIDR", source(#"{"ipBlocks": ["10.0.0.0/33"]}"#), field: "spec.rules[0].from[0].source.ipBlocks[0]", "prefix length must be 0 to 32"),
    .init("JWT principals", source(#"{"requestPrincipals": ["issuer/subject"]}"#),
          field: "spec.rules[0].from[0].source.requestPrincipals", "JWT authentication"),
    .init("service accounts with namespaces", source(#"{"serviceAccounts": ["web"], "namespaces": ["shop"]}"#),
          field: "spec.rules[0].from[0].source.serviceAccounts", "cannot be combined with principals or namespaces"),
    .init("service account with a wildcard", source(#"{"serviceAccounts": ["shop/*"]}"#),
          field: "spec.rules[0].from[0].source.serviceAccounts[0]", "namespace/name"),
    .init("empty source", source("{}"), field: "spec.rules[0].from[0].source", "must not be empty"),
    .init("empty from list", policyRule(#"{"from": []}"#), field: "spec.rules[0].from", "must not be empty"),
    .init("from entry without source", policyRule(#"{"from": [{}]}"#), field: "spec.rules[0].from[0].source", "is required"),
    .init("port written as a number", operation(#"{"ports": [8080]}"#),
          field: "spec.rules[0].to[0].operation.ports[0]", "Istio writes these ports as strings (\"8080\")"),
    .init("port zero", operation(#"{"notPorts": ["0"]}"#), field: "spec.rules[0].to[0].operation.notPorts[0]", "not a port number"),
    .init("path template", operation(#"{"paths": ["/api/{*}/items"]}"#),
          field: "spec.rules[0].to[0].operation.paths[0]", "path templates"),
    .init("empty operation", operation("{}"), field: "spec.rules[0].to[0].operation", "must not be empty"),
    .init("unknown condition key", condition(#"{"key": "request.method", "values": ["GET"]}"#),
          field: "spec.rules[0].when[0].key", "unknown attribute \"request.method\""),
    .init("JWT claim condition", condition(#"{"key": "request.auth.claims[iss]", "values": ["x"]}"#),
          field: "spec.rules[0].when[0].key", "JWT authentication"),
    .init("header condition without a name", condition(#"{"key": "request.headers[]", "values": ["x"]}"#),
          field: "spec.rules[0].when[0].key", "request.headers[<name>]"),
    .init("condition without values", condition(#"{"key": "source.namespace"}"#),
          field: "spec.rules[0].when[0]", "at least one of values or notValues"),
    .init("destination.port value that is not a port", condition(#"{"key": "destination.port", "values": ["http"]}"#),
          field: "spec.rules[0].when[0].values[0]", "not a port number"),
    .init("source.ip value that is not an address", condition(#"{"key": "source.ip", "notValues": ["10.0.0.0/8", "localhost"]}"#),
          field: "spec.rules[0].when[0].notValues[1]", "not an IP address or CIDR"),

    // PeerAuthentication.
    .init("mode in lower case", peer(#"{"mtls": {"mode": "strict"}}"#), field: "spec.mtls.mode", "values are case-sensitive: STRICT"),
    .init("port-level mTLS without selector", peer(#"{"portLevelMtls": {"8080": {"mode": "DISABLE"}}}"#),
          field: "spec.portLevelMtls", "needs a selector"),
    .init("port-level key that is not a port", peer(#"{"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"http": {"mode": "DISABLE"}}}"#),
          field: "spec.portLevelMtls[http]", "not a port number"),
    .init("empty port-level map", peer(#"{"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {}}"#),
          field: "spec.portLevelMtls", "at least one port"),
    .init("unknown port-level field", peer(#"{"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"8080": {"mtls": "DISABLE"}}}"#),
          field: "spec.portLevelMtls[8080].mtls", "unknown field (allowed: mode)"),

    // DestinationRule.
    .init("host with a wildcard", rule(dr: #"{"host": "*.shop.svc.cluster.local"}"#), field: "spec.host", "wildcards are not supported"),
    .init("subsets", rule(dr: #"{"host": "catalog", "subsets": [{"name": "v1"}]}"#), field: "spec.subsets", "subsets are not supported"),
    .init("tls settings", rule(dr: #"{"host": "catalog", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}"#),
          field: "spec.trafficPolicy.tls", "always Weft's mutual TLS"),
    .init("simple and consistentHash together", rule(dr: #"{"host": "catalog", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM", "consistentHash": {"httpHeaderName": "x-user"}}}}"#),
          field: "spec.trafficPolicy.loadBalancer.consistentHash", "either simple or consistentHash"),
    .init("unknown load balancer", rule(dr: #"{"host": "catalog", "trafficPolicy": {"loadBalancer": {"simple": "FASTEST"}}}"#),
          field: "spec.trafficPolicy.loadBalancer.simple", "ROUND_ROBIN"),
    .init("consistent hash on the source address", rule(dr: #"{"host": "catalog", "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": true}}}}"#),
          field: "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp", "not supported"),
    .init("zero connections", rule(dr: #"{"host": "catalog", "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 0}}}}"#),
          field: "spec.trafficPolicy.connectionPool.tcp.maxConnections", "1"),
    .init("ejection percent above 100", rule(dr: #"{"host": "catalog", "trafficPolicy": {"outlierDetection": {"maxEjectionPercent": 150}}}"#),
          field: "spec.trafficPolicy.outlierDetection.maxEjectionPercent", "100"),
    .init("ejection time that is not a duration", rule(dr: #"{"host": "catalog", "trafficPolicy": {"outlierDetection": {"baseEjectionTime": "30"}}}"#),
          field: "spec.trafficPolicy.outlierDetection.baseEjectionTime", "duration"),
]

@Suite struct ResourceRejection {
    @Test(arguments: badManifests)
    func refusesAndNamesTheFieldAtFault(_ bad: BadManifest) throws {
        let value = try JSONValue.parse(bad.json)
        let error = #expect(throws: ValidationError.self) { try ResourceDocument.decode(value) }
        #expect(error?.field == bad.field, "message: \(error?.message ?? "")")
        #expect(error?.message.contains(bad.message) == true, "message: \(error?.message ?? "")")
    }

    @Test func theTableCoversEveryKind() {
        #expect(badManifests.count >= 40)
        for kind in ResourceKind.allCases {
            #expect(badManifests.contains { $0.json.contains(#""kind": "\#(kind.rawValue)""#) }, "\(kind)")
        }
    }

    @Test func syntaxErrorsInTheDocumentAreReportedAsJSONErrors() {
        let error = #expect(throws: ValidationError.self) { try ResourceDocument.decode(json: #"{"apiVersion": "weft.dev/v1alpha1",}"#) }
        #expect(error?.field == "(json)")
        #expect(error?.message.hasPrefix("at byte 35 ") == true)
    }
}
