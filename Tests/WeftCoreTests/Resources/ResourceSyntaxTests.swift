import Testing
@testable import WeftCore

@Suite struct GatewayDurations {
    @Test(arguments: [
        ("0s", 0), ("10s", 10_000), ("500ms", 500), ("1h", 3_600_000), ("1h30m", 5_400_000),
        ("1h30m30s500ms", 5_430_500), ("00060m", 3_600_000), ("99999h", 359_996_400_000), ("1s1s", 2000),
    ] as [(String, Int64)])
    func parsesGEP2257Durations(text: String, milliseconds: Int64) throws {
        let d = try GatewayDuration(text, field: "t")
        #expect(d.milliseconds == milliseconds)
        #expect(d.text == text)
    }

    @Test(arguments: ["", "10", "1.5s", "-1s", "1d", "1us", "100000s", "1h1m1s1ms1h", "s", "1 s", "1S", "ms"])
    func refusesOtherDurations(text: String) {
        #expect(throws: ValidationError.self) { try GatewayDuration(text, field: "t") }
    }

    @Test func canonicalTextPutsTheLargestUnitFirstAndSkipsZeros() {
        #expect(GatewayDuration(milliseconds: 0)?.text == "0s")
        #expect(GatewayDuration(milliseconds: 3_723_004)?.text == "1h2m3s4ms")
        #expect(GatewayDuration(milliseconds: 60_000)?.text == "1m")
        #expect(GatewayDuration(milliseconds: 100_000 * 3_600_000) == nil)
    }
}

@Suite struct KubernetesNameSyntax {
    @Test(arguments: ["app", "app.kubernetes.io/name", "example.com/Version_2", "a", "A-b.c_d"])
    func acceptsLabelKeys(key: String) {
        #expect(ResourceSyntax.isLabelKey(key))
    }

    @Test(arguments: ["", "/name", "example.com/", "-app", "app-", "a/b/c", "Example.com/x", "x y", String(repeating: "a", count: 64)])
    func refusesOtherLabelKeys(key: String) {
        #expect(!ResourceSyntax.isLabelKey(key))
    }

    @Test func labelValuesMayBeEmpty() {
        #expect(ResourceSyntax.isLabelValue(""))
        #expect(ResourceSyntax.isLabelValue("v1.2_3-Beta"))
        #expect(!ResourceSyntax.isLabelValue("-v1"))
        #expect(!ResourceSyntax.isLabelValue("a b"))
    }

    @Test func subdomainsAndLabelsFollowKubernetes() {
        #expect(ResourceSyntax.isDNSSubdomain("catalog-v1.shop"))
        #expect(!ResourceSyntax.isDNSSubdomain("catalog..v1"))
        #expect(!ResourceSyntax.isDNSSubdomain(String(repeating: "a", count: 254)))
        #expect(ResourceSyntax.isDNS1035Label("catalog"))
        #expect(!ResourceSyntax.isDNS1035Label("1catalog"))
        #expect(ResourceSyntax.isIANAServiceName("http-alt"))
        #expect(!ResourceSyntax.isIANAServiceName("8080"))
        #expect(!ResourceSyntax.isIANAServiceName("a--b"))
        #expect(!ResourceSyntax.isIANAServiceName("sixteen-chars-xx"))
    }

    @Test func hostnamesAllowOneLeadingWildcardAndNoAddresses() {
        #expect(ResourceSyntax.isHostname("*.example.com", allowingWildcard: true))
        #expect(!ResourceSyntax.isHostname("*.example.com", allowingWildcard: false))
        #expect(!ResourceSyntax.isHostname("a.*.example.com", allowingWildcard: true))
        #expect(!ResourceSyntax.isHostname("Example.com", allowingWildcard: true))
        #expect(!ResourceSyntax.isHostname("10.0.0.1", allowingWildcard: true))
        #expect(ResourceSyntax.isHostname("10.0.0.1.example", allowingWildcard: true))
    }

    @Test func httpTokensAreHeaderNames() {
        #expect(ResourceSyntax.isHTTPToken("X-Request-Id"))
        #expect(ResourceSyntax.isHTTPToken("a!#$%&'*+-.^_`|~z"))
        #expect(!ResourceSyntax.isHTTPToken(":path"))
        #expect(!ResourceSyntax.isHTTPToken("a b"))
        #expect(!ResourceSyntax.isHTTPToken(""))
    }

    @Test func timestampsAreRFC3339() {
        #expect(ResourceSyntax.isTimestamp("2025-01-31T12:00:00Z"))
        #expect(ResourceSyntax.isTimestamp("2025-01-31T12:00:00.123456+02:00"))
        #expect(!ResourceSyntax.isTimestamp("2025-01-31 12:00:00Z"))
        #expect(!ResourceSyntax.isTimestamp("2025-01-31T12:00:00"))
        #expect(!ResourceSyntax.isTimestamp("2025-01-31T12:00:00.Z"))
    }

    @Test func unknownFieldsSuggestTheClosestAllowedName() {
        #expect(ResourceSyntax.closest(to: "matchlabels", in: ["matchLabels"]) == "matchLabels")
        #expect(ResourceSyntax.closest(to: "backendRef", in: ["filters", "backendRefs"]) == "backendRefs")
        #expect(ResourceSyntax.closest(to: "image", in: ["node", "unit"]) == nil)
    }
}

@Suite struct IstioStringMatches {
    @Test func readsTheFourFormsIstioDefines() throws {
        #expect(try IstioStringMatch("abc", field: "f") == .exact("abc"))
        #expect(try IstioStringMatch("abc*", field: "f") == .prefix("abc"))
        #expect(try IstioStringMatch("*abc", field: "f") == .suffix("abc"))
        #expect(try IstioStringMatch("*", field: "f") == .presence)
    }

    @Test(arguments: ["a*b", "*a*", "**", "a**", ""])
    func refusesEverythingElse(text: String) {
        #expect(throws: ValidationError.self) { try IstioStringMatch(text, field: "f") }
    }

    @Test func matchesLikeIstio() throws {
        #expect(try IstioStringMatch("/api/*", field: "f").matches("/api/items"))
        #expect(try !IstioStringMatch("/api/*", field: "f").matches("/apix"))
        #expect(try IstioStringMatch("*.png", field: "f").matches("/a.png"))
        #expect(IstioStringMatch.presence.matches("x"))
        #expect(!IstioStringMatch.presence.matches(""))
    }
}
