import Foundation
import Testing

/// HTTPRoute's traffic management in the source node's proxy, on real nodes,
/// over HBONE to backends on other nodes: weighted splits, retries,
/// timeouts, fault injection (the `weft.dev` FaultInjection, through an
/// ExtensionRef filter), request mirroring, redirects, URL rewrites and the
/// `x-forwarded-*` headers, each measured from the client's side and counted
/// at the backends (httpecho's `/__stats`, read directly from the backend's
/// node outside the mesh).
@Suite(
    "HTTP traffic management (weights, retries, timeouts, faults, mirrors, redirects, rewrites)",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct HTTPTrafficTests {
    /// The response header that carries the proxy's response flags.
    static let flagsHeader = "x-weft-response-flags"
    /// The frontend's declared address: what the backends must see in x-forwarded-for.
    static let frontendAddress = MeshFabric.address(ofNode: 0)

    // MARK: Manifests

    /// The namespace and the frontend (node 0), which sends every request.
    static func frontend(_ mesh: Mesh) -> String {
        """
        apiVersion: weft.dev/v1alpha1
        kind: Namespace
        metadata: {name: shop}
        spec: {mesh: {enabled: true}}
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Workload
        metadata: {name: frontend, namespace: shop, labels: {app: frontend}}
        spec: {node: \(mesh.nodes[0].name), unit: frontend.service, serviceAccount: frontend, addresses: ["\(frontendAddress)"]}

        """
    }

    /// A backend workload serving HTTP on `port`, in the unit `<name>.service`.
    static func workload(_ mesh: Mesh, _ name: String, labels: String, serviceAccount: String, node: Int, port: Int = 8080) -> String {
        """
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Workload
        metadata: {name: \(name), namespace: shop, labels: \(labels)}
        spec: {node: \(mesh.nodes[node].name), unit: \(name).service, serviceAccount: \(serviceAccount),
               addresses: ["\(MeshFabric.address(ofNode: node))"], ports: [{name: http, port: \(port), protocol: http}]}

        """
    }

    /// A Service with one HTTP port 80.
    static func service(_ name: String, vip: String, selector: String, targetPort: Int = 8080) -> String {
        """
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Service
        metadata: {name: \(name), namespace: shop}
        spec: {selector: \(selector), virtualIP: \(vip), ports: [{name: http, port: 80, targetPort: \(targetPort), protocol: http}]}

        """
    }

    /// An HTTPRoute on port 80 of the Service `parent`; `rules` is the YAML list under `rules:`.
    static func route(_ name: String, parent: String, rules: String) -> String {
        let indented = rules.split(separator: "\n").map { "    " + String($0) }.joined(separator: "\n")
        return """
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: \(name), namespace: shop}
            spec:
              parentRefs: [{group: "", kind: Service, name: \(parent), port: 80}]
              rules:
            \(indented)

            """
    }

    static func faultInjection(_ name: String, spec: String) -> String {
        """
        ---
        apiVersion: weft.dev/v1alpha1
        kind: FaultInjection
        metadata: {name: \(name), namespace: shop}
        spec: \(spec)

        """
    }

    /// The filter that applies the FaultInjection `name` on a rule.
    static func faultFilter(_ name: String) -> String {
        "{type: ExtensionRef, extensionRef: {group: weft.dev, kind: FaultInjection, name: \(name)}}"
    }

    // MARK: Backends and clients

    /// httpecho.py inside the workload's unit cgroup on `node`, once it listens.
    @discardableResult
    static func startEcho(_ node: TestNode, unit: String, name: String, port: Int = 8080, _ options: [String] = []) async throws -> Spawned {
        let cgroup = try node.unit("shop", "\(unit).service")
        let child = try node.spawnTool("httpecho-\(name)", ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, cgroup,
                                                            TestEnvironment.python, TestEnvironment.httpEcho,
                                                            "--port", String(port), "--name", name] + options)
        let deadline = Date().addingTimeInterval(10)
        while !child.jsonLines.contains(where: { $0.contains("\"listening\"") }) {
            guard child.isRunning, Date() < deadline else {
                throw HarnessError("httpecho \(name) on port \(port) did not start:\n\(child.tail())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return child
    }

    /// Waits until shop is captured on every node and each (node, service account) has its certificate.
    static func waitForMesh(_ mesh: Mesh, _ identities: [(node: Int, serviceAccount: String)]) async throws {
        for node in mesh.nodes {
            try await node.waitForCapture("shop captured", timeout: 15) { $0.namespace("shop")?.attached == true }
        }
        try await mesh.waitForCertificates(identities.map { (node: mesh.nodes[$0.node], identity: mesh.identity("shop", $0.serviceAccount)) })
    }

    /// What httpecho echoes: the request as the backend received it.
    struct Echo: Decodable {
        var name: String?
        var method: String?
        var path: String
        var headers: [String: String]
    }

    /// netprobe's `requests` result (HTTPRoutingTests.Tally, with the optional tallies).
    struct Tally: Decodable, CustomStringConvertible {
        var statuses: [String: Int]
        var names: [String: Int]
        var samples: [String: Sample]
        var errors: [String: Int]
        /// Response header → value → responses (`-`: absent).
        var headerValues: [String: [String: Int]]?
        /// Request header as the backend echoed it → value → responses (`-`: absent).
        var echoed: [String: [String: Int]]?
        var elapsed: Elapsed?
        var raw = ""

        struct Sample: Decodable {
            var body: String
            var headers: [String: String]
        }

        /// Seconds, per request; `total` for the whole run.
        struct Elapsed: Decodable {
            var min: Double?
            var max: Double?
            var median: Double?
            var total: Double
        }

        enum CodingKeys: String, CodingKey {
            case statuses, names, samples, errors, echoed, elapsed
            case headerValues = "header_values"
        }

        func count(_ status: Int) -> Int { statuses[String(status)] ?? 0 }

        var responses: Int { statuses.values.reduce(0, +) }

        /// Responses whose response flags (tallied with --tally-header) include `flag`.
        func flagged(_ flag: String) -> Int {
            (headerValues?[HTTPTrafficTests.flagsHeader] ?? [:])
                .filter { HTTPTrafficTests.flags($0.key).contains(flag) }.values.reduce(0, +)
        }

        /// The first response of `status`, decoded as httpecho's echo.
        func echo(_ status: Int = 200) -> Echo? {
            samples[String(status)].flatMap { try? JSONDecoder().decode(Echo.self, from: Data($0.body.utf8)) }
        }

        /// The first response of `status`'s response flags.
        func responseFlags(_ status: Int) -> [String] {
            HTTPTrafficTests.flags(samples[String(status)]?.headers[HTTPTrafficTests.flagsHeader] ?? "")
        }

        var description: String { raw }
    }

    static func flags(_ value: String) -> [String] {
        value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// `count` requests to `url` from `cgroup` on `node` (netprobe `requests` with `options`).
    static func requests(_ node: TestNode, from cgroup: String, _ url: String, count: Int = 1, _ options: [String] = [],
                         timeout: Double = 60) async throws -> Tally {
        let r = try await node.run([TestEnvironment.python, TestEnvironment.netprobe, "requests", "--url", url,
                                    "--count", String(count)] + options, in: cgroup, timeout: timeout)
        guard let line = r.stdout.split(separator: "\n").last(where: { $0.hasPrefix("{") }) else {
            throw HarnessError("netprobe requests printed no result: \(r)")
        }
        do {
            var tally = try JSONDecoder().decode(Tally.self, from: Data(line.utf8))
            tally.raw = String(line)
            return tally
        } catch {
            throw HarnessError("netprobe requests printed an unexpected result (\(error)): \(line)")
        }
    }

    /// httpecho's `/__stats`: requests received (itself not counted) and the last of them.
    /// httpecho's `/__stats`: what it received, and the concurrency it saw.
    struct Stats: Decodable {
        var count: Int
        var last: Echo?
        var active: Int?
        /// The most requests it was ever answering at once.
        var maxActive: Int?

        enum CodingKeys: String, CodingKey {
            case count, last, active
            case maxActive = "max_active"
        }
    }

    /// Reads a backend's `/__stats` from its node's netns, outside every workload
    /// cgroup and so outside the mesh (without a PeerAuthentication, PERMISSIVE).
    static func stats(_ node: TestNode, port: Int = 8080) async throws -> Stats {
        let r = await Command.runAsync(["nsenter", "--net=/run/netns/\(node.netns)", "curl", "-sS", "--noproxy", "*",
                                        "--max-time", "5", "http://127.0.0.1:\(port)/__stats"], timeout: 10)
        guard r.succeeded, let stats = try? JSONDecoder().decode(Stats.self, from: Data(r.stdout.utf8)) else {
            throw HarnessError("cannot read /__stats of the backend on port \(port) of node \(node.name): \(r)")
        }
        return stats
    }

    /// Polls a backend's request count until it has not moved for `quiet`
    /// seconds (mirrored copies are sent off the client's path), at most `timeout`.
    static func settledCount(_ node: TestNode, port: Int, quiet: Double = 1, timeout: Double = 10) async throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        var last = try await stats(node, port: port).count
        var unchangedSince = Date()
        while Date() < deadline, Date().timeIntervalSince(unchangedSince) < quiet {
            try await Task.sleep(for: .milliseconds(200))
            let now = try await stats(node, port: port).count
            if now != last {
                last = now
                unchangedSince = Date()
            }
        }
        return last
    }

    static func percent(_ part: Int, of whole: Int) -> String {
        String(format: "%.1f%%", whole == 0 ? 0 : Double(part) * 100 / Double(whole))
    }

    static func seconds(_ value: Double?) -> String {
        value.map { String(format: "%.3f s", $0) } ?? "-"
    }

    // MARK: Weights, redirects, rewrites, x-forwarded-*

    static let catalogVIP = "10.96.1.10"

    /// frontend on node 0; catalog-v1 on node 1 and catalog-v2 on node 2 (both `app: catalog`).
    static func routingManifest(_ mesh: Mesh) -> String {
        frontend(mesh)
            + workload(mesh, "catalog-v1", labels: "{app: catalog, version: v1}", serviceAccount: "catalog", node: 1)
            + workload(mesh, "catalog-v2", labels: "{app: catalog, version: v2}", serviceAccount: "catalog", node: 2)
            + service("catalog", vip: catalogVIP, selector: "{app: catalog}")
            + service("catalog-v1", vip: "10.96.1.11", selector: "{app: catalog, version: v1}")
            + service("catalog-v2", vip: "10.96.1.12", selector: "{app: catalog, version: v2}")
            + route("catalog", parent: "catalog", rules: """
                - matches: [{path: {type: PathPrefix, value: /split}}]
                  backendRefs: [{name: catalog-v1, port: 80, weight: 90}, {name: catalog-v2, port: 80, weight: 10}]
                - matches: [{path: {type: PathPrefix, value: /rewrite-full}}]
                  filters:
                  - type: URLRewrite
                    urlRewrite: {hostname: catalog.internal, path: {type: ReplaceFullPath, replaceFullPath: /replaced}}
                  backendRefs: [{name: catalog-v1, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /old}}]
                  filters:
                  - type: URLRewrite
                    urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
                  backendRefs: [{name: catalog-v1, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /moved}}]
                  filters:
                  - type: RequestRedirect
                    requestRedirect: {scheme: https, statusCode: 301}
                - matches: [{path: {type: PathPrefix, value: /legacy}}]
                  filters:
                  - type: RequestRedirect
                    requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
                - backendRefs: [{name: catalog-v1, port: 80}]
                """)
    }

    @Test func aNinetyTenSplitHoldsWithinThreePointsAndRedirectsRewritesAndForwardedHeadersApplyAtTheSource() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            let vip = Self.catalogVIP
            let base = "http://\(vip)"
            try await mesh.control.apply(Self.routingManifest(mesh))
            try await Self.startEcho(n[1], unit: "catalog-v1", name: "v1")
            try await Self.startEcho(n[2], unit: "catalog-v2", name: "v2")
            let frontend = try n[0].unit("shop", "frontend.service")
            try await Self.waitForMesh(mesh, [(0, "frontend"), (1, "catalog"), (2, "catalog")])

            // Only the route can answer a redirect: once one comes, the route is in force.
            let routed = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                try await Self.requests(n[0], from: frontend, base + "/moved/x?y=1", ["--no-redirects", "--timeout", "4"])
            }, until: { $0.count(301) == 1 })
            try #require(routed.count(301) == 1, "the HTTPRoute never took effect at the source proxy: \(routed)")
            let warm = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                try await Self.requests(n[0], from: frontend, base + "/headers", ["--timeout", "4"])
            }, until: { $0.count(200) == 1 })
            try #require(warm.count(200) == 1, "catalog-v1 never answered through the mesh: \(warm)")

            // x-forwarded-for names the source workload; x-forwarded-proto the scheme.
            let seen = try #require(warm.echo(), "not httpecho's echo: \(warm)")
            #expect(seen.headers["x-forwarded-for"] == Self.frontendAddress,
                    "x-forwarded-for must be the frontend's address \(Self.frontendAddress): \(seen.headers)")
            #expect(seen.headers["x-forwarded-proto"] == "http", "\(seen.headers)")

            // Redirects are answered by the proxy; no backend sees them.
            let v1Before = try await Self.stats(n[1]).count
            let v2Before = try await Self.stats(n[2]).count
            let moved = try await Self.requests(n[0], from: frontend, base + "/moved/x?y=1", ["--no-redirects"])
            let movedTo = moved.samples["301"]?.headers["location"] ?? "none"
            #expect(moved.statuses == ["301": 1], "scheme https, statusCode 301: \(moved)")
            #expect(["https://\(vip)/moved/x?y=1", "https://\(vip):443/moved/x?y=1"].contains(movedTo),
                    "Location keeps host, path and query and takes the scheme: \(movedTo)")
            let legacy = try await Self.requests(n[0], from: frontend, base + "/legacy/items?q=1", ["--no-redirects"])
            let legacyTo = legacy.samples["302"]?.headers["location"] ?? "none"
            #expect(legacy.statuses == ["302": 1], "statusCode defaults to 302: \(legacy)")
            #expect(["http://\(vip)/v2/items?q=1", "http://\(vip):80/v2/items?q=1"].contains(legacyTo),
                    "ReplacePrefixMatch /legacy → /v2, query kept: \(legacyTo)")
            let v1AfterRedirects = try await Self.stats(n[1]).count
            let v2AfterRedirects = try await Self.stats(n[2]).count
            #expect(v1AfterRedirects == v1Before && v2AfterRedirects == v2Before,
                    "a redirect must not reach a backend: v1 \(v1Before) → \(v1AfterRedirects), v2 \(v2Before) → \(v2AfterRedirects)")
            #expect(moved.names.isEmpty && legacy.names.isEmpty, "a backend answered a redirect: \(moved) \(legacy)")

            // URLRewrite: the backend sees the rewritten path and host.
            let full = try await Self.requests(n[0], from: frontend, base + "/rewrite-full/a/b")
            let fullSeen = full.echo()
            #expect(full.statuses == ["200": 1] && fullSeen?.path == "/replaced", "ReplaceFullPath /replaced: \(full)")
            #expect(fullSeen?.headers["host"] == "catalog.internal", "hostname rewrite: \(fullSeen?.headers ?? [:])")
            let prefix = try await Self.requests(n[0], from: frontend, base + "/old/items/1")
            let prefixSeen = prefix.echo()
            #expect(prefix.statuses == ["200": 1] && prefixSeen?.path == "/new/items/1", "ReplacePrefixMatch /old → /new: \(prefix)")
            #expect(prefixSeen?.headers["host"] == vip, "no hostname rewrite: Host as sent: \(prefixSeen?.headers ?? [:])")
            let whole = try await Self.requests(n[0], from: frontend, base + "/old")
            #expect(whole.echo()?.path == "/new", "ReplacePrefixMatch of the whole path /old → /new: \(whole)")

            // Expect: 100-continue: the backend's 100 Continue comes back through both proxies, and
            // only then does curl send the body (it would wait 15 s for a 100 that never came).
            let upload = String(repeating: "u", count: 2048)
            let expect100 = try await n[0].run(["curl", "-sv", "--expect100-timeout", "15", "-H", "Expect: 100-continue",
                                                "--data-binary", upload, "-w", "\n%{http_code} %{time_total}", base + "/upload"],
                                               in: frontend, timeout: 40)
            let outcome = expect100.stdout.split(separator: "\n").last?.split(separator: " ").map(String.init) ?? []
            #expect(expect100.stderr.contains("HTTP/1.1 100 Continue"), "no 100 Continue reached the client: \(expect100)")
            #expect(outcome.first == "200" && (outcome.last.flatMap(Double.init) ?? 99) < 10 && expect100.stdout.contains(upload),
                    "the body must follow the 100 and reach the backend whole: \(expect100)")

            // WebSocket: the upgrade is routed like any request, then both proxies relay the frames.
            // The first message rides in the same write as the upgrade request, before any 101.
            let upgradesBefore = try await n[0].proxyCounter("httpUpgrades")
            let ws = try await n[0].run([TestEnvironment.python, TestEnvironment.netprobe, "websocket", "--url", base + "/ws",
                                         "--messages", "5"], in: frontend, timeout: 40)
            let wsLine = ws.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let wsResult = try JSONSerialization.jsonObject(with: Data(wsLine.utf8)) as? [String: Any] ?? [:]
            #expect(wsResult["status"] as? Int == 101 && wsResult["accept_ok"] as? Bool == true, "the upgrade: \(ws)")
            #expect(wsResult["echoed"] as? [String] == (0..<5).map { "v1:m\($0)" }, "every message echoed in order: \(ws)")
            #expect(wsResult["closed_cleanly"] as? Bool == true, "the close handshake: \(ws)")
            let upgradesAfter = try await n[0].proxyCounter("httpUpgrades")
            #expect(upgradesAfter == upgradesBefore + 1, "the source proxy switched one routed request: \(upgradesBefore) → \(upgradesAfter)")

            // 90/10 over 10,000 requests, four keep-alive connections, routed per request.
            let split = try await Self.requests(n[0], from: frontend, base + "/split/items", count: 10_000,
                                                ["--keep-alive", "--workers", "4", "--timing",
                                                 "--tally-echoed", "x-forwarded-for", "--tally-echoed", "x-forwarded-proto"],
                                                timeout: 150)
            let v1 = split.names["v1"] ?? 0, v2 = split.names["v2"] ?? 0
            print("HTTPRoute 90/10 over 10,000 requests (4 keep-alive connections, \(Self.seconds(split.elapsed?.total))): "
                  + "v1 \(v1) (\(Self.percent(v1, of: v1 + v2))), v2 \(v2) (\(Self.percent(v2, of: v1 + v2))); "
                  + "statuses \(split.statuses), errors \(split.errors)")
            #expect(split.count(200) == 10_000 && split.errors.isEmpty, "\(split.statuses) \(split.errors)")
            #expect(v1 + v2 == 10_000, "every answer from v1 or v2: \(split.names)")
            #expect((700...1300).contains(v2), "a 10% share must land within 3 points over 10,000 requests: v2 got \(v2)")
            #expect(split.echoed?["x-forwarded-for"] == [Self.frontendAddress: 10_000], "\(split.echoed ?? [:])")
            #expect(split.echoed?["x-forwarded-proto"] == ["http": 10_000], "\(split.echoed ?? [:])")
        }
    }

    // MARK: Retries and timeouts

    static let flakyVIP = "10.96.2.10"

    /// frontend on node 0; flaky on node 1: every third request it receives
    /// answered 503, /retry/always always 503, /retry/reset reset, /slow* after 3 s.
    static func resilienceManifest(_ mesh: Mesh) -> String {
        frontend(mesh)
            + workload(mesh, "flaky", labels: "{app: flaky}", serviceAccount: "flaky", node: 1)
            + service("flaky", vip: flakyVIP, selector: "{app: flaky}")
            + route("flaky", parent: "flaky", rules: """
                - matches: [{path: {type: PathPrefix, value: /retry}}]
                  retry: {codes: [503], attempts: 2, backoff: 10ms}
                  backendRefs: [{name: flaky, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /once}}]
                  backendRefs: [{name: flaky, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /slow-request}}]
                  timeouts: {request: 500ms}
                  backendRefs: [{name: flaky, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /slow-attempt}}]
                  timeouts: {request: 2500ms, backendRequest: 300ms}
                  retry: {codes: [503, 504], attempts: 2, backoff: 10ms}
                  backendRefs: [{name: flaky, port: 80}]
                """)
    }

    @Test func retriesHideUpstream503sAndResetsUntilTheyRunOutAndTimeoutsAnswer504() async throws {
        try await withMesh(nodes: 2) { mesh in
            let n = mesh.nodes
            let base = "http://\(Self.flakyVIP)"
            try await mesh.control.apply(Self.resilienceManifest(mesh))
            try await Self.startEcho(n[1], unit: "flaky", name: "flaky",
                                     ["--fail-every", "3", "--fail-path", "/retry/always", "--reset-path", "/retry/reset",
                                      "--delay-path", "/slow", "--delay-ms", "3000"])
            let frontend = try n[0].unit("shop", "frontend.service")
            try await Self.waitForMesh(mesh, [(0, "frontend"), (1, "flaky")])

            // Retried 503s: a 200 through the route (x-forwarded-proto is the route's).
            let warm = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                try await Self.requests(n[0], from: frontend, base + "/retry/warm", ["--timeout", "4"])
            }, until: { $0.count(200) == 1 && $0.echo()?.headers["x-forwarded-proto"] == "http" })
            try #require(warm.count(200) == 1 && warm.echo()?.headers["x-forwarded-proto"] == "http",
                         "the route to flaky never answered: \(warm)")

            // With retry {codes: [503], attempts: 2}: every request succeeds, and
            // each retry is one more request at the backend, numbered in x-weft-attempt-count.
            let before = try await Self.stats(n[1]).count
            let retried = try await Self.requests(n[0], from: frontend, base + "/retry/items", count: 300,
                                                  ["--keep-alive", "--tally-echoed", "x-weft-attempt-count"])
            let afterRetried = try await Self.stats(n[1]).count
            let attempts = retried.echoed?["x-weft-attempt-count"] ?? [:]
            let tries = attempts.reduce(0) { $0 + (Int($1.key) ?? 0) * $1.value }
            let attemptList = attempts.keys.sorted().map { "\($0): \(attempts[$0] ?? 0)" }.joined(separator: ", ")
            print("retry {codes: [503], attempts: 2} on a backend failing every third request: 300 requests → "
                  + "\(retried.statuses), x-weft-attempt-count \(attemptList), backend received \(afterRetried - before)")
            #expect(retried.statuses == ["200": 300] && retried.errors.isEmpty, "retries must hide every 503: \(retried.statuses) \(retried.errors)")
            #expect((attempts["2"] ?? 0) >= 30, "about half the requests need a second attempt: \(attempts)")
            #expect((attempts["1"] ?? 0) >= 30 && attempts["-"] == nil, "every forwarded request carries its attempt number: \(attempts)")
            #expect(afterRetried - before == tries, "each retry is one more request at the backend: \(afterRetried - before) received, \(tries) attempts")

            // The same backend without a retry rule: its 503s reach the client.
            let once = try await Self.requests(n[0], from: frontend, base + "/once/items", count: 300, ["--keep-alive"])
            let afterOnce = try await Self.stats(n[1]).count
            let failed = once.count(503)
            print("no retry rule, same backend: 300 requests → \(once.statuses) (\(Self.percent(failed, of: 300)) 503)")
            #expect(once.errors.isEmpty && once.count(200) + failed == 300, "\(once.statuses) \(once.errors)")
            #expect((60...135).contains(failed), "without retries about a third fail (20% to 45%): \(failed) of 300")
            #expect(afterOnce - afterRetried == 300, "nothing is retried without a retry rule: the backend received \(afterOnce - afterRetried)")

            // Retries run out: the backend's last 503 is returned, flagged URX.
            let exhausted = try await Self.requests(n[0], from: frontend, base + "/retry/always",
                                                    ["--tally-echoed", "x-weft-attempt-count"])
            let afterExhausted = try await Self.stats(n[1]).count
            #expect(exhausted.statuses == ["503": 1], "\(exhausted)")
            #expect(exhausted.responseFlags(503).contains("URX"), "retries ran out: \(exhausted.samples["503"]?.headers ?? [:])")
            #expect(exhausted.names == ["flaky": 1] && exhausted.echoed?["x-weft-attempt-count"] == ["3": 1],
                    "the last attempt's own response (attempt 3) is returned: \(exhausted)")
            #expect(afterExhausted - afterOnce == 3, "one try and 2 retries: the backend received \(afterExhausted - afterOnce)")

            // A reset before the response head is retried like a listed code.
            let reset = try await Self.requests(n[0], from: frontend, base + "/retry/reset", ["--timeout", "10"])
            let afterReset = try await Self.stats(n[1]).count
            print("reset before the response head, retried: \(reset.statuses) \(reset.errors), "
                  + "flags \(reset.samples.values.first?.headers[Self.flagsHeader] ?? "none"), backend received \(afterReset - afterExhausted)")
            #expect(reset.errors.isEmpty && reset.responses == 1 && reset.statuses.keys.allSatisfy { (500...599).contains(Int($0) ?? 0) },
                    "a reset upstream is answered with a 5xx: \(reset)")
            #expect(afterReset - afterExhausted == 3, "a reset is retried: the backend received \(afterReset - afterExhausted) (want 3)")

            // timeouts.request: 504 UT after about 500 ms, not the backend's 3 s.
            let slow = try await Self.requests(n[0], from: frontend, base + "/slow-request/x", count: 3,
                                               ["--timing", "--timeout", "10", "--tally-header", Self.flagsHeader])
            print("timeouts {request: 500ms}, backend takes 3 s: \(slow.statuses), \(Self.seconds(slow.elapsed?.min)) to \(Self.seconds(slow.elapsed?.max))")
            #expect(slow.statuses == ["504": 3] && slow.errors.isEmpty, "\(slow)")
            #expect(slow.headerValues?[Self.flagsHeader] == ["UT": 3], "\(slow.headerValues ?? [:])")
            #expect(slow.samples["504"]?.body.lowercased().contains("timeout") == true, "\(slow.samples["504"]?.body ?? "none")")
            #expect((slow.elapsed?.min ?? 0) >= 0.45 && (slow.elapsed?.max ?? 99) < 2.0,
                    "answered after about the timeout: \(Self.seconds(slow.elapsed?.min)) to \(Self.seconds(slow.elapsed?.max))")

            // timeouts.backendRequest bounds each attempt: 3 attempts of 300 ms, well inside request: 2500ms.
            let beforeAttempts = try await Self.stats(n[1]).count
            let perTry = try await Self.requests(n[0], from: frontend, base + "/slow-attempt/x",
                                                 ["--timing", "--timeout", "10", "--tally-header", Self.flagsHeader])
            let attempted = try await AuthorizationPolicyTests.settle(timeout: 5, {
                try await Self.stats(n[1]).count - beforeAttempts
            }, until: { $0 >= 3 })
            let perTryFlags = perTry.responseFlags(504)
            print("timeouts {backendRequest: 300ms} with retry {codes: [503, 504], attempts: 2}: \(perTry.statuses) "
                  + "flags \(perTryFlags) after \(Self.seconds(perTry.elapsed?.max)); backend received \(attempted)")
            #expect(perTry.statuses == ["504": 1], "\(perTry)")
            #expect(perTryFlags.contains("UT") || perTryFlags.contains("URX"), "\(perTry.samples["504"]?.headers ?? [:])")
            #expect((perTry.elapsed?.max ?? 99) < 2.0 && (perTry.elapsed?.min ?? 0) >= 0.28,
                    "each attempt ends after backendRequest, long before the request timeout: \(Self.seconds(perTry.elapsed?.max))")
            #expect(attempted == 3, "each of the 3 attempts gets its own backendRequest timeout: the backend received \(attempted)")
        }
    }

    // MARK: Faults and mirrors

    static let ordersVIP = "10.96.3.10"
    /// The mirror's port on node 1 (orders has 8080 there).
    static let shadowPort = 9080

    /// frontend on node 0; orders (8080) and shadow (9080) on node 1.
    static func faultManifest(_ mesh: Mesh) -> String {
        frontend(mesh)
            + workload(mesh, "orders", labels: "{app: orders}", serviceAccount: "orders", node: 1)
            + workload(mesh, "shadow", labels: "{app: shadow}", serviceAccount: "shadow", node: 1, port: shadowPort)
            + service("orders", vip: ordersVIP, selector: "{app: orders}")
            + service("orders-shadow", vip: "10.96.3.11", selector: "{app: shadow}", targetPort: shadowPort)
            + faultInjection("half-abort", spec: "{abort: {httpStatus: 503, percentage: {value: 50}}}")
            + faultInjection("slow-down", spec: "{delay: {fixedDelay: 200ms, percentage: {value: 100}}}")
            + route("orders", parent: "orders", rules: """
                - matches: [{path: {type: PathPrefix, value: /abort}}]
                  filters: [\(faultFilter("half-abort"))]
                  backendRefs: [{name: orders, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /delay}}]
                  filters: [\(faultFilter("slow-down"))]
                  backendRefs: [{name: orders, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /mirror}}]
                  filters: [{type: RequestMirror, requestMirror: {backendRef: {name: orders-shadow, port: 80}}}]
                  backendRefs: [{name: orders, port: 80}]
                - matches: [{path: {type: PathPrefix, value: /half-mirror}}]
                  filters: [{type: RequestMirror, requestMirror: {backendRef: {name: orders-shadow, port: 80}, percent: 50}}]
                  backendRefs: [{name: orders, port: 80}]
                - backendRefs: [{name: orders, port: 80}]
                """)
    }

    @Test func faultsAbortAndDelayTheirShareAndMirrorsGetACopyOfEveryRequest() async throws {
        try await withMesh(nodes: 2) { mesh in
            let n = mesh.nodes
            let base = "http://\(Self.ordersVIP)"
            try await mesh.control.apply(Self.faultManifest(mesh))
            try await Self.startEcho(n[1], unit: "orders", name: "orders")
            try await Self.startEcho(n[1], unit: "shadow", name: "shadow", port: Self.shadowPort)
            let frontend = try n[0].unit("shop", "frontend.service")
            try await Self.waitForMesh(mesh, [(0, "frontend"), (1, "orders"), (1, "shadow")])

            let warm = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                try await Self.requests(n[0], from: frontend, base + "/ready", ["--timeout", "4"])
            }, until: { $0.count(200) == 1 && $0.echo()?.headers["x-forwarded-proto"] == "http" })
            try #require(warm.count(200) == 1 && warm.echo()?.headers["x-forwarded-proto"] == "http",
                         "the route to orders never answered: \(warm)")
            // The FaultInjections are in force once each shows.
            let aborting = try await AuthorizationPolicyTests.settle(timeout: 10, {
                try await Self.requests(n[0], from: frontend, base + "/abort/probe", count: 4, ["--keep-alive", "--tally-header", Self.flagsHeader])
            }, until: { $0.flagged("FI") > 0 })
            try #require(aborting.flagged("FI") > 0, "the abort fault never showed: \(aborting)")
            let delaying = try await AuthorizationPolicyTests.settle(timeout: 10, {
                try await Self.requests(n[0], from: frontend, base + "/delay/probe", ["--tally-header", Self.flagsHeader])
            }, until: { $0.flagged("DI") > 0 })
            try #require(delaying.flagged("DI") > 0, "the delay fault never showed: \(delaying)")

            // Abort 503 for 50%: flagged FI, and never forwarded.
            let before = try await Self.stats(n[1]).count
            let abort = try await Self.requests(n[0], from: frontend, base + "/abort/items", count: 1000,
                                                ["--keep-alive", "--tally-header", Self.flagsHeader])
            let afterAbort = try await Self.stats(n[1]).count
            let aborted = abort.count(503)
            print("FaultInjection abort 503 at 50% over 1,000 requests: \(aborted) aborted (\(Self.percent(aborted, of: 1000))), "
                  + "\(abort.count(200)) forwarded; flags \(abort.headerValues?[Self.flagsHeader] ?? [:]); backend received \(afterAbort - before)")
            #expect(abort.errors.isEmpty && abort.count(200) + aborted == 1000, "\(abort.statuses) \(abort.errors)")
            #expect((420...580).contains(aborted), "50% ± 8 points aborted: \(aborted) of 1,000")
            #expect(abort.flagged("FI") == aborted, "every abort, and only aborts, flagged FI: \(abort.headerValues ?? [:])")
            #expect(afterAbort - before == abort.count(200),
                    "aborted requests never reach the backend: it received \(afterAbort - before), \(abort.count(200)) were answered 200")

            // Delay 200 ms for every request, flagged DI.
            let delay = try await Self.requests(n[0], from: frontend, base + "/delay/items", count: 20,
                                                ["--keep-alive", "--timing", "--tally-header", Self.flagsHeader])
            print("FaultInjection delay 200ms at 100% over 20 requests: \(delay.statuses), "
                  + "\(Self.seconds(delay.elapsed?.min)) to \(Self.seconds(delay.elapsed?.max)) each")
            #expect(delay.statuses == ["200": 20] && delay.errors.isEmpty, "\(delay)")
            #expect(delay.flagged("DI") == 20, "\(delay.headerValues ?? [:])")
            #expect((delay.elapsed?.min ?? 0) >= 0.2, "every request at least 200 ms late: fastest \(Self.seconds(delay.elapsed?.min))")

            // A mirror gets a copy of every request, its Host marked -shadow;
            // the client only ever sees the primary's answer.
            let shadowBefore = try await Self.stats(n[1], port: Self.shadowPort).count
            let ordersBefore = try await Self.stats(n[1]).count
            let mirrored = try await Self.requests(n[0], from: frontend, base + "/mirror/items", count: 200, ["--keep-alive"])
            let ordersAfter = try await Self.stats(n[1]).count
            let copies = try await AuthorizationPolicyTests.settle(timeout: 10, {
                try await Self.stats(n[1], port: Self.shadowPort)
            }, until: { $0.count - shadowBefore >= 200 })
            let copied = copies.count - shadowBefore
            print("RequestMirror 100% over 200 requests: the mirror received \(copied); last Host \(copies.last?.headers["host"] ?? "none")")
            #expect(mirrored.statuses == ["200": 200] && mirrored.names == ["orders": 200],
                    "the client sees the primary's answers only: \(mirrored.statuses) \(mirrored.names) \(mirrored.errors)")
            #expect(ordersAfter - ordersBefore == 200, "the primary received \(ordersAfter - ordersBefore)")
            #expect((190...200).contains(copied), "the mirror must receive (nearly) every request once: \(copied) of 200")
            let host = copies.last?.headers["host"] ?? ""
            #expect(host.hasPrefix(Self.ordersVIP) && host.contains("-shadow"), "a mirrored request's Host ends in -shadow: \(host)")
            #expect(copies.last?.path == "/mirror/items", "\(String(describing: copies.last))")

            // percent: 50 mirrors about half.
            let halfBefore = try await Self.settledCount(n[1], port: Self.shadowPort)
            let half = try await Self.requests(n[0], from: frontend, base + "/half-mirror/items", count: 200, ["--keep-alive"])
            let halfAfter = try await Self.settledCount(n[1], port: Self.shadowPort)
            print("RequestMirror percent 50 over 200 requests: the mirror received \(halfAfter - halfBefore)")
            #expect(half.statuses == ["200": 200] && half.names == ["orders": 200], "\(half.statuses) \(half.names) \(half.errors)")
            #expect((60...140).contains(halfAfter - halfBefore), "percent: 50 mirrors about half: \(halfAfter - halfBefore) of 200")
        }
    }
}
