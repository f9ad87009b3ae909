import Testing
import WeftCore
@testable import WeftHTTP

/// HTTPRoute's filters and GEP-1731 retries, without a network.
@Suite struct RouteFilterRules {
    @Test("ReplacePrefixMatch replaces whole segments; ReplaceFullPath replaces everything", arguments: [
        ("/api/x", HTTPRouteSpec.PathModifier.replacePrefixMatch("/v2"), "/api" as String?, "/v2/x"),
        ("/api", .replacePrefixMatch("/v2"), "/api", "/v2"),
        ("/api/x", .replacePrefixMatch("/"), "/api", "/x"),
        ("/api", .replacePrefixMatch("/"), "/api", "/"),
        ("/api/x/y", .replacePrefixMatch("/v2/"), "/api/", "/v2/x/y"),
        ("/apis", .replacePrefixMatch("/v2"), "/api", "/apis"),
        ("/anything", .replaceFullPath("/fixed"), nil, "/fixed"),
    ])
    func rewrite(_ path: String, _ modifier: HTTPRouteSpec.PathModifier, _ prefix: String?, _ expected: String) {
        #expect(RouteFilters.rewritePath(path, modifier, matchedPrefix: prefix) == expected)
    }

    @Test func redirectsDefaultToTheRequestAndDropDefaultPorts() {
        let r1 = HTTPRouteSpec.Redirect(scheme: .https, statusCode: 301)
        #expect(RouteFilters.redirectLocation(r1, requestHost: "catalog:8080", requestPath: "/a", query: "q=1", matchedPrefix: nil)
            == "https://catalog/a?q=1", "a new scheme without a port means its default port")
        let r2 = HTTPRouteSpec.Redirect(hostname: "new.example", path: .replacePrefixMatch("/v2"))
        #expect(RouteFilters.redirectLocation(r2, requestHost: "catalog:8080", requestPath: "/api/x", query: nil, matchedPrefix: "/api")
            == "http://new.example:8080/v2/x")
        let r3 = HTTPRouteSpec.Redirect(port: 80)
        #expect(RouteFilters.redirectLocation(r3, requestHost: "catalog", requestPath: "/", query: nil, matchedPrefix: nil) == "http://catalog/")
        #expect(RouteFilters.redirectLocation(HTTPRouteSpec.Redirect(), requestHost: "[fd00::1]:81", requestPath: "/", query: nil, matchedPrefix: nil)
            == "http://[fd00::1]:81/")
    }

    @Test func mirroredRequestsCarryAShadowHost() {
        #expect(RouteFilters.shadowHost("catalog") == "catalog-shadow")
        #expect(RouteFilters.shadowHost("catalog.shop:80") == "catalog.shop-shadow:80")
        #expect(RouteFilters.shadowHost("[fd00::1]:80") == "[fd00::1]-shadow:80")
    }

    @Test func sharesAreSampledByPercentage() {
        #expect(RouteFilters.sampled(percent: 100, roll: 99.99))
        #expect(!RouteFilters.sampled(percent: 0, roll: 0))
        #expect(RouteFilters.sampled(percent: 50, roll: 49.9) && !RouteFilters.sampled(percent: 50, roll: 50))
        #expect(RouteFilters.percent(.fraction(numerator: 1, denominator: 4)) == 25)
        #expect(RouteFilters.percent(nil) == 100)
    }

    @Test func retriesCountAfterTheFirstTryAndBackOffExponentiallyWithJitter() throws {
        #expect(RetryPolicy(nil) == .none)
        let defaults = RetryPolicy(HTTPRouteSpec.Retry())
        #expect(defaults.maxAttempts == 2 && defaults.codes == RetryPolicy.defaultCodes && defaults.backoffMilliseconds == 25)
        let p = RetryPolicy(HTTPRouteSpec.Retry(codes: [503], attempts: 3, backoff: try GatewayDuration("10ms", field: "b")))
        #expect(p.maxAttempts == 4 && p.codes == [503])
        #expect(p.backoff(retry: 1, jitter: 0) == 10 && p.backoff(retry: 1, jitter: 0.999) < 20)
        #expect(p.backoff(retry: 2, jitter: 0) == 20)
        #expect(p.backoff(retry: 3, jitter: 0.5) == 60)
        #expect(p.backoff(retry: 20, jitter: 1) == 100, "capped at ten times the base")
        for retry in 1...8 {
            let b = p.backoff(retry: retry)
            #expect(b >= 10 && b <= 100, "never below the base, never above the cap: \(b)")
        }
    }
}
