import Foundation
import Testing

/// HTTPRoute in the node proxy, on real nodes: a canary between two versions
/// of a Service on two other nodes, reached over HBONE, routed per request.
@Suite(
    "HTTP routing (HTTPRoute)",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct HTTPRoutingTests {
    static let vip = "10.96.0.30"

    static func manifest(_ mesh: Mesh) -> String {
        let n = mesh.nodes
        func workload(_ name: String, version: String, node: Int) -> String {
            """
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata: {name: \(name), namespace: shop, labels: {app: catalog, version: \(version)}}
            spec: {node: \(n[node].name), unit: \(name).service, serviceAccount: catalog,
                   addresses: ["\(MeshFabric.address(ofNode: node))"], ports: [{name: http, port: 8080, protocol: http}]}

            """
        }
        func service(_ name: String, vip: String, selector: String) -> String {
            """
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: \(name), namespace: shop}
            spec: {selector: \(selector), virtualIP: \(vip), ports: [{name: http, port: 80, targetPort: 8080, protocol: http}]}

            """
        }
        return """
            apiVersion: weft.dev/v1alpha1
            kind: Namespace
            metadata: {name: shop}
            spec: {mesh: {enabled: true}}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata: {name: frontend, namespace: shop}
            spec: {node: \(n[0].name), unit: frontend.service, serviceAccount: frontend, addresses: ["\(MeshFabric.address(ofNode: 0))"]}

            """
            + workload("catalog-v1", version: "v1", node: 1) + workload("catalog-v2", version: "v2", node: 2)
            + service("catalog", vip: vip, selector: "{app: catalog}")
            + service("catalog-v1", vip: "10.96.0.31", selector: "{app: catalog, version: v1}")
            + service("catalog-v2", vip: "10.96.0.32", selector: "{app: catalog, version: v2}")
            + """
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: catalog-canary, namespace: shop}
            spec:
              parentRefs: [{group: "", kind: Service, name: catalog, port: 80}]
              rules:
              - matches: [{headers: [{name: x-canary, value: "true"}]}]
                backendRefs: [{name: catalog-v2, port: 80}]
              - matches: [{path: {type: PathPrefix, value: /api}}]
                filters:
                - type: RequestHeaderModifier
                  requestHeaderModifier: {set: [{name: x-route, value: canary}]}
                - type: ResponseHeaderModifier
                  responseHeaderModifier: {add: [{name: x-served-by-route, value: catalog-canary}]}
                backendRefs: [{name: catalog-v1, port: 80, weight: 80}, {name: catalog-v2, port: 80, weight: 20}]
            """
    }

    struct Tally: Decodable {
        var statuses: [String: Int]
        var names: [String: Int]
        var samples: [String: Sample]
        var errors: [String: Int]
        /// With a body sent: how many came back echoed whole, how many changed.
        var bodies: [String: Int]?
        struct Sample: Decodable {
            var body: String
            var headers: [String: String]
        }
    }

    /// Requests `/api/warm` until one is answered 200 (or 30 tries); the last tally.
    static func warmUp(_ node: TestNode, from cgroup: String) async throws -> Tally {
        var warm = try await requests(node, from: cgroup, path: "/api/warm", count: 1)
        for _ in 0..<30 where warm.statuses["200"] != 1 {
            try await Task.sleep(for: .milliseconds(300))
            warm = try await requests(node, from: cgroup, path: "/api/warm", count: 1)
        }
        return warm
    }

    static func requests(_ node: TestNode, from cgroup: String, path: String, count: Int, headers: [String] = [],
                         options: [String] = []) async throws -> Tally {
        let r = try await node.run([TestEnvironment.python, TestEnvironment.netprobe, "requests", "--url", "http://\(vip)\(path)",
                                    "--count", String(count)] + headers.flatMap { ["--header", $0] } + options, in: cgroup, timeout: 90)
        guard let line = r.stdout.split(separator: "\n").last else { throw HarnessError("no result: \(r)") }
        return try JSONDecoder().decode(Tally.self, from: Data(line.utf8))
    }

    @Test func aCanaryRouteSplitsByWeightRoutesByHeaderAnswers404WhenNoRuleMatchesAndForwardsBodiesAndHeadAnswersWhole() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            try await mesh.control.apply(Self.manifest(mesh))
            for (i, name) in [(1, "v1"), (2, "v2")] {
                let cgroup = try n[i].unit("shop", "catalog-\(name).service")
                _ = try n[i].spawnTool("httpecho-\(name)", ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, cgroup,
                                                              TestEnvironment.python, TestEnvironment.httpEcho, "--port", "8080", "--name", name])
            }
            let frontend = try n[0].unit("shop", "frontend.service")
            try await n[0].waitForCapture("shop captured", timeout: 15) { $0.namespace("shop")?.attached == true }
            try await mesh.waitForCertificates([(n[0], mesh.identity("shop", "frontend")), (n[1], mesh.identity("shop", "catalog")),
                                                (n[2], mesh.identity("shop", "catalog"))])

            // Warm up until the route and both backends answer.
            let warm = try await Self.warmUp(n[0], from: frontend)
            #expect(warm.statuses["200"] == 1, "\(warm)")

            // Enough requests, each on its own HBONE stream of one tunnel, that
            // streams not ended cleanly would exhaust HTTP/2 flow control.
            let split = try await Self.requests(n[0], from: frontend, path: "/api/items", count: 500)
            #expect(split.statuses["200"] == 500 && split.errors.isEmpty, "\(split.statuses) \(split.errors)")
            let v2 = split.names["v2"] ?? 0
            print("HTTPRoute canary 80/20 over 500 requests: v1 \(split.names["v1"] ?? 0), v2 \(v2)")
            #expect((60...140).contains(v2), "a 20% canary got \(v2) of 500")
            let sample = try #require(split.samples["200"])
            #expect(sample.headers["x-served-by-route"] == "catalog-canary", "\(sample.headers)")
            #expect(sample.body.contains(#""x-route": "canary""#), "\(sample.body)")
            #expect(sample.body.contains(#""x-request-id": ""#) && sample.body.contains(#""x-forwarded-proto": "http""#), "\(sample.body)")

            let canary = try await Self.requests(n[0], from: frontend, path: "/anything", count: 20, headers: ["x-canary: true"])
            #expect(canary.names == ["v2": 20], "\(canary.names)")

            let none = try await Self.requests(n[0], from: frontend, path: "/web/index.html", count: 3)
            #expect(none.statuses == ["404": 3], "\(none.statuses)")
            #expect(none.samples["404"]?.headers["x-weft-response-flags"] == "NR")

            // Paths reach one form before routing; an encoded slash is refused.
            let dotted = try await Self.requests(n[0], from: frontend, path: "/web/../api/%69tems", count: 1)
            #expect(dotted.statuses == ["200": 1], "\(dotted)")
            #expect(dotted.samples["200"]?.body.contains(#""path": "/api/items""#) == true, "\(dotted.samples)")
            let encoded = try await Self.requests(n[0], from: frontend, path: "/api%2Fitems", count: 1)
            #expect(encoded.statuses == ["400": 1], "\(encoded.statuses)")

            // Hop-by-hop headers, and those Connection names, stop at the proxy.
            let curl = try await n[0].run(["curl", "-s", "-H", "Connection: keep-alive, x-secret", "-H", "x-secret: s",
                                           "-H", "Keep-Alive: timeout=5", "http://\(Self.vip)/api/hop"], in: frontend)
            #expect(curl.stdout.contains(#""name": "v"#) && !curl.stdout.contains("x-secret") && !curl.stdout.contains("keep-alive"),
                    "\(curl)")
            // Two hop-by-hop headers and nothing named in Connection (the proxy's common case) stop there too.
            let two = try await n[0].run(["curl", "-s", "-H", "Keep-Alive: timeout=5", "-H", "TE: trailers", "-H", "x-kept: 1",
                                          "http://\(Self.vip)/api/hop"], in: frontend)
            #expect(two.stdout.contains(#""x-kept": "1""#) && !two.stdout.contains("keep-alive") && !two.stdout.contains(#""te":"#),
                    "\(two)")

            // Request bodies arrive whole, framed by a length or chunked, one request after the
            // other on the client's connection and on the upstream connections both proxies keep:
            // a request framed wrong would leave bytes that garble the next one.
            let body = "order=42&note=" + String(repeating: "abcdefgh", count: 300)
            for framing in [[], ["--chunked"]] {
                let posted = try await Self.requests(n[0], from: frontend, path: "/api/orders", count: 30,
                                                     options: ["--method", "POST", "--body", body, "--keep-alive"] + framing)
                #expect(posted.statuses == ["200": 30] && posted.errors.isEmpty && posted.bodies == ["whole": 30],
                        "\(framing): \(posted.statuses) \(posted.errors) \(posted.bodies ?? [:])")
            }

            // The answer to a HEAD without a Content-Length (as many servers send it) is its head
            // and nothing more, from both proxies: the next request on the connection gets its own
            // answer first. Read as raw bytes: a client library may drop what follows a HEAD's head.
            for _ in 0..<3 {
                let r = try await n[0].run([TestEnvironment.python, TestEnvironment.netprobe, "raw", "--host", Self.vip, "--port", "80",
                                            "--send", #"HEAD /api/head HTTP/1.1\r\nhost: catalog\r\n\r\n"#,
                                            "--send", #"GET /api/after-head HTTP/1.1\r\nhost: catalog\r\n\r\n"#],
                                           in: frontend, timeout: 30)
                let line = r.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }).map { String($0) } ?? "{}"
                let received = (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["received"] as? [String] ?? []
                #expect(received.count == 2 && received[0].hasPrefix("HTTP/1.1 200") && received[0].hasSuffix("\r\n\r\n")
                        && received[0].components(separatedBy: "\r\n\r\n").count == 2
                        && received[1].hasPrefix("HTTP/1.1 200") && received[1].contains(#""path": "/api/after-head""#),
                        "HEAD then GET on one connection, as written: \(received)")
            }

            // The requests crossed nodes in HBONE tunnels with the workloads' identities.
            let pairs = try await n[0].identityPairs()
            #expect(pairs.contains { $0.path == "hbone" && $0.source == mesh.identity("shop", "frontend")
                    && $0.destination == mesh.identity("shop", "catalog") && $0.connections >= 500 }, "\(pairs)")
        }
    }
}

extension TestEnvironment {
    static let httpEcho: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/httpecho.py").path
}
