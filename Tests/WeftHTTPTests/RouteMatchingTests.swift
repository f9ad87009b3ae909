import Testing
import WeftCore
@testable import WeftHTTP

@Suite struct RouteMatchingPrecedence {
    typealias Spec = HTTPRouteSpec

    static func route(_ name: String, created: String = "2026-01-01T00:00:00Z", namespace: String = "shop",
                      parent: String = "catalog", _ rules: [Spec.Rule]) -> RouteSource {
        RouteSource(namespace: namespace, name: name, creationTimestamp: created,
                    spec: Spec(parentRefs: [.init(name: parent)], rules: rules))
    }

    static func rule(_ backend: String, _ matches: [Spec.Match]) -> Spec.Rule {
        Spec.Rule(matches: matches, backendRefs: [.init(backend: .init(name: backend, port: 80))])
    }

    static func compile(_ routes: [RouteSource]) -> CompiledRoutes {
        CompiledRoutes(routes: routes, namespace: "shop", service: "catalog", port: 80, portName: "http")
    }

    func backend(_ c: CompiledRoutes, _ path: String, query: String? = nil,
                 headers: [(name: String, value: String)] = []) -> String? {
        backend(c, method: "GET", path, query: query, headers: headers)
    }

    func backend(_ c: CompiledRoutes, method: String, _ path: String, query: String? = nil,
                 headers: [(name: String, value: String)] = []) -> String? {
        c.select(RequestView(method: method, path: path, query: query, headers: headers))?.rule.backendRefs.first?.backend.name
    }

    @Test func exactBeatsPrefixAndTheLongerPrefixBeatsTheShorter() {
        let c = Self.compile([Self.route("r", [
            Self.rule("root", [.init(path: .init(type: .pathPrefix, value: "/"))]),
            Self.rule("api", [.init(path: .init(type: .pathPrefix, value: "/api"))]),
            Self.rule("api-v2", [.init(path: .init(type: .pathPrefix, value: "/api/v2/"))]),
            Self.rule("exact", [.init(path: .init(type: .exact, value: "/api/v2/health"))]),
        ])])
        #expect(backend(c, "/api/v2/health") == "exact")
        #expect(backend(c, "/api/v2/items") == "api-v2")
        #expect(backend(c, "/api/v2") == "api-v2")
        #expect(backend(c, "/api/v1") == "api")
        #expect(backend(c, "/apis") == "root", "a prefix matches whole path elements only")
    }

    @Test func methodThenHeaderCountThenQueryCountBreakTies() {
        let p = Spec.PathMatch(type: .pathPrefix, value: "/")
        let c = Self.compile([Self.route("r", [
            Self.rule("plain", [.init(path: p)]),
            Self.rule("one-header", [.init(path: p, headers: [.init(name: "x-canary", value: "1")])]),
            Self.rule("two-headers", [.init(path: p, headers: [.init(name: "x-canary", value: "1"), .init(name: "x-user", value: "a")])]),
            Self.rule("query", [.init(path: p, queryParams: [.init(name: "v", value: "2")])]),
            Self.rule("post", [.init(path: p, method: .post)]),
        ])])
        #expect(backend(c, "/x") == "plain")
        #expect(backend(c, "/x", headers: [("X-Canary", "1")]) == "one-header", "header names compare without case")
        #expect(backend(c, "/x", headers: [("x-canary", "1"), ("x-user", "a")]) == "two-headers")
        #expect(backend(c, "/x", query: "v=2&v=3") == "query")
        #expect(backend(c, "/x", query: "v=3&v=2") == "plain", "the first occurrence of a parameter counts")
        #expect(backend(c, method: "POST", "/x", headers: [("x-canary", "1"), ("x-user", "a")]) == "post", "method outranks headers")
    }

    @Test func acrossRoutesTheOldestWinsThenTheNameThenRuleOrder() {
        let p = [Spec.Match(path: .init(type: .pathPrefix, value: "/"))]
        let c = Self.compile([
            Self.route("b-new", created: "2026-03-01T00:00:00Z", [Self.rule("newest", p)]),
            Self.route("z-old", created: "2026-01-01T00:00:00Z", [Self.rule("oldest-first-rule", p), Self.rule("oldest-second-rule", p)]),
            Self.route("a-old", created: "2026-01-01T00:00:00Z", namespace: "shop", [Self.rule("same-age-first-by-name", p)]),
        ])
        #expect(backend(c, "/") == "same-age-first-by-name")
        let d = Self.compile([Self.route("z", [Self.rule("first", p), Self.rule("second", p)])])
        #expect(backend(d, "/") == "first")
    }

    @Test func regularExpressionsRankAfterExactAndBeforePrefix() {
        let c = Self.compile([Self.route("r", [
            Self.rule("prefix", [.init(path: .init(type: .pathPrefix, value: "/items"))]),
            Self.rule("regex", [.init(path: .init(type: .regularExpression, value: "/items/[0-9]+"))]),
        ])])
        #expect(backend(c, "/items/42") == "regex")
        #expect(backend(c, "/items/abc") == "prefix")
        #expect(backend(c, "/items/42/x") == "prefix", "a path regex matches the whole path")
    }

    @Test func noMatchingRuleSelectsNothingAndOtherServicesRoutesDoNotAttach() {
        let c = Self.compile([
            Self.route("r", [Self.rule("api", [.init(path: .init(type: .pathPrefix, value: "/api"))])]),
            Self.route("other", parent: "reviews", [Self.rule("reviews", [.init(path: .init(type: .pathPrefix, value: "/"))])]),
        ])
        #expect(backend(c, "/web") == nil)
        #expect(backend(c, "/api") == "api")
        let byPort = CompiledRoutes(routes: [RouteSource(namespace: "shop", name: "p", creationTimestamp: "",
                                                         spec: Spec(parentRefs: [.init(name: "catalog", port: 9090)]))],
                                    namespace: "shop", service: "catalog", port: 80, portName: "http")
        #expect(byPort.isEmpty, "a parentRef to another port does not attach")
    }

    @Test func weightsSplitTrafficAndZeroWeightsNeverReceiveAny() {
        let rule = Spec.Rule(backendRefs: [
            .init(backend: .init(name: "v1", port: 80), weight: 90),
            .init(backend: .init(name: "off", port: 80), weight: 0),
            .init(backend: .init(name: "v2", port: 80), weight: 10),
        ])
        var counts: [String: Int] = [:]
        for roll in 0..<100 {
            counts[CompiledRoutes.pickBackend(rule, roll: { _ in roll })!.backend.name, default: 0] += 1
        }
        #expect(counts == ["v1": 90, "v2": 10])
        #expect(CompiledRoutes.pickBackend(Spec.Rule(backendRefs: [.init(backend: .init(name: "x", port: 1), weight: 0)])) == nil)
    }
}
