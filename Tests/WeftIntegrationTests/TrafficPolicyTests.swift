import Foundation
import Testing

/// Istio's DestinationRule as the source node's proxy applies it, on real
/// nodes over HBONE to backends on other nodes: load balancing (round robin,
/// random, least request, consistent hashing on a header and on a cookie),
/// outlier detection with ejections that grow, and circuit breaking (HTTP:
/// 503 UO past the pending queue; TCP: a connection past the limit is
/// reset). Measured from the client's side (netprobe `requests --sequence`:
/// every answer, in order, with its time) and at the backends (httpecho's
/// `/__stats`, read from the backend's node outside the mesh).
@Suite(
    "Traffic policy (DestinationRule: load balancing, outlier detection, circuit breaking)",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct TrafficPolicyTests {
    /// Manifests, backends and clients are HTTPTrafficTests'.
    typealias H = HTTPTrafficTests

    // MARK: Manifests

    /// A DestinationRule for the Service `host` (its name unless given);
    /// `trafficPolicy` is one line of flow YAML.
    static func destinationRule(_ name: String, host: String? = nil, _ trafficPolicy: String) -> String {
        """
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: \(name), namespace: shop}
        spec:
          host: \(host ?? name)
          trafficPolicy: \(trafficPolicy)

        """
    }

    /// A Service with one HTTP port 80 and an HTTPRoute on it to itself: its
    /// requests are balanced one by one, not its connections.
    static func routedService(_ name: String, vip: String, selector: String) -> String {
        H.service(name, vip: vip, selector: selector)
            + H.route(name, parent: name, rules: "- backendRefs: [{name: \(name), port: 80}]")
    }

    /// A workload serving plain TCP on `port` (netprobe `serve`).
    static func tcpWorkload(_ mesh: Mesh, _ name: String, labels: String, node: Int, port: Int) -> String {
        """
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Workload
        metadata: {name: \(name), namespace: shop, labels: \(labels)}
        spec: {node: \(mesh.nodes[node].name), unit: \(name).service, serviceAccount: \(name),
               addresses: ["\(MeshFabric.address(ofNode: node))"], ports: [{name: tcp, port: \(port), protocol: tcp}]}

        """
    }

    /// A Service with one TCP port and no HTTPRoute: its connections are balanced and limited.
    static func tcpService(_ name: String, vip: String, selector: String, port: Int) -> String {
        """
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Service
        metadata: {name: \(name), namespace: shop}
        spec: {selector: \(selector), virtualIP: \(vip), ports: [{name: tcp, port: \(port), targetPort: \(port), protocol: tcp}]}

        """
    }

    // MARK: Answers in order

    /// One answer of netprobe `requests --sequence`.
    struct Answer: Decodable {
        var status: Int
        /// httpecho's name of the backend that answered (nil: the proxy answered).
        var name: String?
        /// time.time() when the answer was read: the test's wall clock too.
        var t: Double
        /// Seconds from sending to the whole answer.
        var elapsed: Double
        /// The value of --vary-header sent with the request.
        var sent: String?
        var error: String?

        var label: String { status == 0 ? "error \(error ?? "?")" : "\(status) \(name ?? "proxy")" }
    }

    private struct Sequenced: Decodable {
        var sequence: [Answer]?
    }

    /// The answers of a `requests --sequence` run, in the order they came.
    static func answers(_ tally: H.Tally) throws -> [Answer] {
        guard let list = try JSONDecoder().decode(Sequenced.self, from: Data(tally.raw.utf8)).sequence else {
            throw HarnessError("netprobe printed no sequence (--sequence missing?): \(tally.raw.prefix(400))")
        }
        return list
    }

    static func clock(_ seconds: Double) -> String { String(format: "%.3f", seconds) }

    /// Runs of equal answers, timed from `t0`: `+0.120–0.480 s 200 good ×12, ...`.
    static func timeline(_ answers: [Answer], since t0: Double) -> String {
        var runs: [(label: String, first: Double, last: Double, count: Int)] = []
        for a in answers {
            if let last = runs.last, last.label == a.label {
                runs[runs.count - 1].last = a.t
                runs[runs.count - 1].count += 1
            } else {
                runs.append((a.label, a.t, a.t, 1))
            }
        }
        return runs.map { "+\(clock($0.first - t0))–\(clock($0.last - t0)) s \($0.label) ×\($0.count)" }
            .joined(separator: ", ")
    }

    /// For each --vary-header value sent, the backends that answered it and how often.
    static func backendsByKey(_ answers: [Answer]) -> [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for a in answers {
            out[a.sent ?? "-", default: [:]][a.name ?? a.label, default: 0] += 1
        }
        return out
    }

    static func describe(_ byKey: [String: [String: Int]]) -> String {
        let keys = byKey.keys.sorted { (x: String, y: String) -> Bool in x.count != y.count ? x.count < y.count : x < y }
        var parts: [String] = []
        for key in keys {
            let counts = (byKey[key] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }
            parts.append("\(key) → \(counts.joined(separator: " "))")
        }
        return parts.joined(separator: "; ")
    }

    /// Waits until `node` runs a snapshot at least as new as weft-control's
    /// current one: everything applied so far (the DestinationRules) is in
    /// force in its proxy.
    static func waitApplied(_ mesh: Mesh, on node: TestNode) async throws {
        let version = try await mesh.control.status().version
        try await node.waitForCapture("weftd applied snapshot \(version) or later", timeout: 20) { ($0.appliedVersion ?? 0) >= version }
    }

    /// Sleeps until the wall-clock time `t` (seconds since 1970), to let an ejection run out.
    static func sleep(until t: Double) async throws {
        let wait = t - Date().timeIntervalSince1970
        if wait > 0 { try await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
    }

    // MARK: Load balancing

    /// A Service over catalog-a (node 1) and catalog-b (node 2), routed to
    /// itself, with its own DestinationRule (`policy`) or none.
    struct Balanced: Sendable {
        var name: String
        var vip: String
        /// The rule's host when not the Service's short name.
        var host: String? = nil
        var policy: String?
    }

    static let plain = Balanced(name: "catalog", vip: "10.96.6.10", policy: nil)
    static let roundRobin = Balanced(name: "catalog-rr", vip: "10.96.6.11", policy: "{loadBalancer: {simple: ROUND_ROBIN}}")
    static let leastRequest = Balanced(name: "catalog-lr", vip: "10.96.6.12", policy: "{loadBalancer: {simple: LEAST_REQUEST}}")
    static let random = Balanced(name: "catalog-random", vip: "10.96.6.13", policy: "{loadBalancer: {simple: RANDOM}}")
    static let byUser = Balanced(name: "catalog-user", vip: "10.96.6.14", host: "catalog-user.shop.svc.cluster.local",
                                 policy: "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}")
    static let bySession = Balanced(name: "catalog-session", vip: "10.96.6.15",
                                    policy: "{loadBalancer: {consistentHash: {httpCookie: {name: session}}}}")
    static let balanced = [plain, roundRobin, leastRequest, random, byUser, bySession]

    /// frontend on node 0; catalog-a (node 1) and catalog-b (node 2), both
    /// `app: catalog`, behind every Service of `balanced`.
    static func balancingManifest(_ mesh: Mesh) -> String {
        var manifest = H.frontend(mesh)
            + H.workload(mesh, "catalog-a", labels: "{app: catalog}", serviceAccount: "catalog", node: 1)
            + H.workload(mesh, "catalog-b", labels: "{app: catalog}", serviceAccount: "catalog", node: 2)
        for s in balanced {
            manifest += routedService(s.name, vip: s.vip, selector: "{app: catalog}")
            if let policy = s.policy { manifest += destinationRule(s.name, host: s.host, policy) }
        }
        return manifest
    }

    @Test func roundRobinAlternatesRandomRepeatsLeastRequestShunsASlowEndpointAndConsistentHashPinsEachKey() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            try await mesh.control.apply(Self.balancingManifest(mesh))
            try await H.startEcho(n[1], unit: "catalog-a", name: "a")
            // b answers /slow* after 500 ms, everything else at once.
            try await H.startEcho(n[2], unit: "catalog-b", name: "b", ["--delay-path", "/slow", "--delay-ms", "500"])
            let frontend = try n[0].unit("shop", "frontend.service")
            try await H.waitForMesh(mesh, [(0, "frontend"), (1, "catalog"), (2, "catalog")])

            // Every Service's route answers (x-forwarded-proto is the route's);
            // through the plain one, both endpoints.
            for s in Self.balanced {
                let warm = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                    try await H.requests(n[0], from: frontend, "http://\(s.vip)/warm", count: 4, ["--keep-alive", "--timeout", "4"])
                }, until: {
                    $0.count(200) == 4 && $0.echo()?.headers["x-forwarded-proto"] == "http" && (s.policy != nil || $0.names.count == 2)
                })
                try #require(warm.count(200) == 4 && warm.echo()?.headers["x-forwarded-proto"] == "http",
                             "the route of \(s.name) never answered: \(warm)")
                if s.policy == nil {
                    try #require(warm.names.count == 2, "both endpoints never answered through \(s.name): \(warm.names)")
                }
            }
            // The rules came with the routes; once node 0 runs weft-control's
            // latest snapshot, every one of them is in force there.
            try await Self.waitApplied(mesh, on: n[0])

            // Round robin, without a rule and with ROUND_ROBIN: 50% ± 5 each over 200 sequential requests.
            for s in [Self.plain, Self.roundRobin] {
                let t = try await H.requests(n[0], from: frontend, "http://\(s.vip)/rr", count: 200, ["--keep-alive"])
                let a = t.names["a"] ?? 0, b = t.names["b"] ?? 0
                print("\(s.policy ?? "no DestinationRule") on \(s.name), 200 sequential requests: "
                      + "a \(a) (\(H.percent(a, of: 200))), b \(b) (\(H.percent(b, of: 200))); \(t.statuses) \(t.errors)")
                #expect(t.count(200) == 200 && t.errors.isEmpty && a + b == 200, "\(s.name): \(t.statuses) \(t.names) \(t.errors)")
                #expect((90...110).contains(a) && (90...110).contains(b),
                        "round robin over 2 endpoints gives each 50% ± 5 of 200 requests (\(s.name)): a \(a), b \(b)")
            }

            // RANDOM: about half each, and unlike round robin the same endpoint twice in a row about half the time.
            let random = try await H.requests(n[0], from: frontend, "http://\(Self.random.vip)/random", count: 200,
                                              ["--keep-alive", "--sequence"])
            let picks = try Self.answers(random).compactMap(\.name)
            let repeats = zip(picks, picks.dropFirst()).filter { $0.0 == $0.1 }.count
            let randomA = random.names["a"] ?? 0
            print("RANDOM on \(Self.random.name), 200 sequential requests: a \(randomA), b \(random.names["b"] ?? 0); "
                  + "\(repeats) of 199 followed by the same endpoint")
            #expect(random.count(200) == 200 && random.errors.isEmpty, "\(random.statuses) \(random.errors)")
            #expect((60...140).contains(randomA), "RANDOM over 2 endpoints: about half each: a \(randomA) of 200")
            #expect((60...140).contains(repeats),
                    "RANDOM picks the previous endpoint again about half the time (round robin never, a stuck choice always): \(repeats) of 199")

            // LEAST_REQUEST under 6 concurrent clients: the endpoint that takes
            // 500 ms has more in flight and gets markedly fewer requests; round
            // robin (no rule) gives it half regardless.
            let control = try await H.requests(n[0], from: frontend, "http://\(Self.plain.vip)/slow/items", count: 60,
                                               ["--keep-alive", "--workers", "6", "--timing"], timeout: 90)
            let controlSlow = control.names["b"] ?? 0
            print("no DestinationRule, 60 requests from 6 workers, b slow (500 ms): a \(control.names["a"] ?? 0), "
                  + "b \(controlSlow) (\(H.percent(controlSlow, of: 60))) in \(H.seconds(control.elapsed?.total))")
            #expect(control.count(200) == 60 && control.errors.isEmpty, "\(control.statuses) \(control.errors)")
            #expect((24...36).contains(controlSlow), "round robin sends the slow endpoint about half (40% to 60%): \(controlSlow) of 60")
            let least = try await H.requests(n[0], from: frontend, "http://\(Self.leastRequest.vip)/slow/items", count: 300,
                                             ["--keep-alive", "--workers", "6", "--timing"], timeout: 90)
            let leastSlow = least.names["b"] ?? 0
            print("LEAST_REQUEST, 300 requests from 6 workers, b slow (500 ms): a \(least.names["a"] ?? 0), "
                  + "b \(leastSlow) (\(H.percent(leastSlow, of: 300))) in \(H.seconds(least.elapsed?.total))")
            #expect(least.count(200) == 300 && least.errors.isEmpty && (least.names["a"] ?? 0) + leastSlow == 300,
                    "\(least.statuses) \(least.names) \(least.errors)")
            #expect(leastSlow < 75, "LEAST_REQUEST sends the slow endpoint under 25% of 300 requests: \(leastSlow)")

            // Without a rule an x-user value is not pinned: 5 values in turn
            // (an odd number, so that alternation moves each value) reach both.
            let unpinned = try await H.requests(n[0], from: frontend, "http://\(Self.plain.vip)/hash", count: 50,
                                                ["--keep-alive", "--sequence", "--vary-header", "x-user: user-", "--vary-count", "5"])
            let unpinnedByKey = Self.backendsByKey(try Self.answers(unpinned))
            print("no DestinationRule, 5 x-user values × 10 requests: \(Self.describe(unpinnedByKey))")
            #expect(unpinnedByKey.values.filter { $0.count == 2 }.count >= 3,
                    "without consistentHash a header value does not stick to an endpoint: \(Self.describe(unpinnedByKey))")

            // consistentHash on x-user (host written out in full): 21 values,
            // interleaved, 30 requests each: one endpoint per value, both in use.
            let users = try await H.requests(n[0], from: frontend, "http://\(Self.byUser.vip)/hash", count: 630,
                                             ["--keep-alive", "--sequence", "--vary-header", "x-user: user-", "--vary-count", "21"],
                                             timeout: 90)
            let byUser = Self.backendsByKey(try Self.answers(users))
            let userBackends = Set(byUser.values.flatMap(\.keys))
            print("consistentHash {httpHeaderName: x-user}, 21 values × 30 requests: \(Self.describe(byUser))")
            #expect(users.count(200) == 630 && users.errors.isEmpty, "\(users.statuses) \(users.errors)")
            #expect(byUser.count == 21 && byUser.values.allSatisfy { $0.values.reduce(0, +) == 30 }, "\(Self.describe(byUser))")
            let userSplit = byUser.filter { $0.value.count > 1 }
            #expect(userSplit.isEmpty, "every x-user value must stay on one endpoint: \(Self.describe(userSplit))")
            #expect(userBackends == ["a", "b"], "21 x-user values must spread over both endpoints: \(userBackends.sorted())")

            // consistentHash on the cookie session: the same with Cookie: session=s-<i>.
            let sessions = try await H.requests(n[0], from: frontend, "http://\(Self.bySession.vip)/hash", count: 270,
                                                ["--keep-alive", "--sequence", "--vary-header", "Cookie: session=s-", "--vary-count", "9"],
                                                timeout: 90)
            let bySession = Self.backendsByKey(try Self.answers(sessions))
            let sessionBackends = Set(bySession.values.flatMap(\.keys))
            print("consistentHash {httpCookie: {name: session}}, 9 cookies × 30 requests: \(Self.describe(bySession))")
            #expect(sessions.count(200) == 270 && sessions.errors.isEmpty, "\(sessions.statuses) \(sessions.errors)")
            #expect(bySession.count == 9 && bySession.values.allSatisfy { $0.values.reduce(0, +) == 30 }, "\(Self.describe(bySession))")
            let sessionSplit = bySession.filter { $0.value.count > 1 }
            #expect(sessionSplit.isEmpty, "every session cookie must stay on one endpoint: \(Self.describe(sessionSplit))")
            #expect(sessionBackends == ["a", "b"], "9 session cookies must spread over both endpoints: \(sessionBackends.sorted())")
        }
    }

    // MARK: Outlier detection

    static let inventoryVIP = "10.96.7.10"
    /// outlierDetection's baseEjectionTime, in seconds.
    static let baseEjection = 2.0
    static let consecutive5xx = 3
    /// Answers this close to an ejection's end are not held against it (the
    /// proxy starts the ejection a little before the client reads the 503).
    static let margin = 0.1

    /// frontend on node 0; inventory-good (node 1) always answers 200,
    /// inventory-bad (node 2) always 503; Service inventory over both with
    /// outlier detection, and a Service per endpoint to warm each up without
    /// touching inventory's outlier state.
    static func outlierManifest(_ mesh: Mesh) -> String {
        H.frontend(mesh)
            + H.workload(mesh, "inventory-good", labels: "{app: inventory, health: good}", serviceAccount: "inventory", node: 1)
            + H.workload(mesh, "inventory-bad", labels: "{app: inventory, health: bad}", serviceAccount: "inventory", node: 2)
            + routedService("inventory", vip: inventoryVIP, selector: "{app: inventory}")
            + routedService("inventory-good", vip: "10.96.7.11", selector: "{app: inventory, health: good}")
            + routedService("inventory-bad", vip: "10.96.7.12", selector: "{app: inventory, health: bad}")
            // RANDOM rather than the default round robin: ejection does not depend
            // on the order, and a round-robin fault cannot hide the bad endpoint.
            + destinationRule("inventory", "{loadBalancer: {simple: RANDOM}, outlierDetection: {consecutive5xxErrors: \(consecutive5xx), "
                              + "interval: 1s, baseEjectionTime: \(Int(baseEjection))s, maxEjectionPercent: 50}}")
    }

    /// An ejection as the client sees it: the failing endpoint's
    /// `consecutive5xx`th failure in a row (it never answers otherwise, so
    /// its failures are consecutive), failures while it is out not counted;
    /// the kth ejection lasts k × baseEjectionTime.
    struct Ejection {
        var at: Double
        var lasts: Double
        var end: Double { at + lasts }
    }

    static func ejections(_ answers: [Answer]) -> [Ejection] {
        var found: [Ejection] = []
        var run = 0
        for a in answers where a.status != 200 {
            if let last = found.last, a.t < last.end - margin { continue }
            run += 1
            if run == consecutive5xx {
                found.append(Ejection(at: a.t, lasts: baseEjection * Double(found.count + 1)))
                run = 0
            }
        }
        return found
    }

    /// Answers of the failing endpoint while it was ejected.
    static func whileEjected(_ answers: [Answer], _ ejections: [Ejection]) -> [Answer] {
        answers.filter { a in a.status != 200 && ejections.contains { a.t > $0.at && a.t < $0.end - margin } }
    }

    static func isGood(_ a: Answer) -> Bool { a.status == 200 && a.name == "good" }

    @Test func anEndpointAnsweringConsecutive5xxIsEjectedForLongerEachTimeAndGetsTrafficAgainAfterwards() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            let base = Self.baseEjection
            try await mesh.control.apply(Self.outlierManifest(mesh))
            try await H.startEcho(n[1], unit: "inventory-good", name: "good")
            try await H.startEcho(n[2], unit: "inventory-bad", name: "bad", ["--fail-path", "/"])
            let frontend = try n[0].unit("shop", "frontend.service")
            try await H.waitForMesh(mesh, [(0, "frontend"), (1, "inventory"), (2, "inventory")])

            // Each endpoint answers through the mesh (x-forwarded-proto: routed),
            // warmed through its own Service: inventory's outlier state starts clean.
            let good = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                try await H.requests(n[0], from: frontend, "http://10.96.7.11/warm", ["--timeout", "4"])
            }, until: { $0.count(200) == 1 && $0.echo()?.headers["x-forwarded-proto"] == "http" })
            try #require(good.count(200) == 1 && good.echo()?.headers["x-forwarded-proto"] == "http", "inventory-good never answered: \(good)")
            let bad = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                try await H.requests(n[0], from: frontend, "http://10.96.7.12/warm", ["--timeout", "4"])
            }, until: { $0.count(503) == 1 && $0.echo(503)?.headers["x-forwarded-proto"] == "http" })
            try #require(bad.count(503) == 1 && bad.echo(503)?.headers["x-forwarded-proto"] == "http", "inventory-bad never answered: \(bad)")
            // inventory's route and rule came in the same apply.
            try await Self.waitApplied(mesh, on: n[0])

            let badBefore = try await H.stats(n[2]).count
            let t0 = Date().timeIntervalSince1970
            var all: [Answer] = []
            let burst: (Int) async throws -> [Answer] = { count in
                try Self.answers(try await H.requests(n[0], from: frontend, "http://\(Self.inventoryVIP)/items", count: count,
                                                      ["--keep-alive", "--sequence", "--timeout", "4"]))
            }

            // 1. Until the bad endpoint's third 503 in a row, then for
            //    baseEjectionTime the healthy endpoint only: no retries, so the
            //    client sees the 503s that eject it, and only those.
            let first = try await burst(30)
            all += first
            print("outlier detection, burst 1 (30 sequential requests): \(Self.timeline(first, since: t0))")
            let e1 = try #require(Self.ejections(first).first,
                                  "3 consecutive 503s never showed (the bad endpoint got under 3 of 30 requests?): \(Self.timeline(first, since: t0))")
            let firstOut = first.filter { $0.t > e1.at && $0.t < e1.end - Self.margin }
            #expect(firstOut.count >= 10 && firstOut.allSatisfy(Self.isGood),
                    "after its third 503 in a row the endpoint is ejected for \(base) s: every request goes to the healthy one (\(firstOut.count) answers in that time): \(Self.timeline(first, since: t0))")
            let badAfterFirst = try await H.stats(n[2]).count
            let firstFailed = first.filter { $0.status != 200 }.count
            #expect(badAfterFirst - badBefore == firstFailed,
                    "the bad endpoint received exactly the requests the client saw fail: \(badAfterFirst - badBefore) received, \(firstFailed) 503s")

            // 2. After baseEjectionTime it gets traffic again, and 3 more 503s eject it again.
            try await Self.sleep(until: e1.end + 0.25)
            let second = try await burst(30)
            all += second
            print("burst 2, \(base) s after the first ejection: \(Self.timeline(second, since: t0))")
            #expect(second.contains { $0.status == 503 && $0.name == "bad" },
                    "after baseEjectionTime (\(base) s) the ejected endpoint gets traffic again: \(Self.timeline(second, since: t0))")
            let afterSecond = Self.ejections(all)
            let e2 = try #require(afterSecond.count >= 2 ? afterSecond[1] : nil,
                                  "3 more 503s in a row must eject the endpoint again: \(Self.timeline(all, since: t0))")

            // 3. The second ejection lasts 2 × baseEjectionTime: past one base it is still out.
            try await Self.sleep(until: e2.at + base + 0.3)
            let third = try await burst(20)
            all += third
            print("burst 3, \(base) s into the second ejection: \(Self.timeline(third, since: t0))")
            let stillOut = third.filter { $0.t > e2.at + base + 0.1 && $0.t < e2.end - Self.margin }
            #expect(stillOut.count >= 5 && stillOut.allSatisfy(Self.isGood),
                    "the second ejection lasts 2 × baseEjectionTime (\(2 * base) s): between \(base) s and \(2 * base) s after it the endpoint still gets nothing (\(stillOut.count) answers in that time): \(Self.timeline(third, since: t0))")

            // 4. After 2 × baseEjectionTime it is back, and ejected a third time.
            try await Self.sleep(until: e2.end + 0.25)
            let fourth = try await burst(30)
            all += fourth
            print("burst 4, \(2 * base) s after the second ejection: \(Self.timeline(fourth, since: t0))")
            #expect(fourth.contains { $0.status == 503 && $0.name == "bad" },
                    "after 2 × baseEjectionTime the endpoint gets traffic again: \(Self.timeline(fourth, since: t0))")

            let found = Self.ejections(all)
            let violations = Self.whileEjected(all, found)
            let badEnd = try await H.stats(n[2]).count
            let failed = all.filter { $0.status != 200 }.count
            let ejectionList = found.map { "at +\(Self.clock($0.at - t0)) s for \(Self.clock($0.lasts)) s" }.joined(separator: ", ")
            print("ejections (from the client's side): \(ejectionList); \(all.count) requests, "
                  + "\(failed) answered 503 by the bad endpoint, which received \(badEnd - badBefore)")
            #expect(all.allSatisfy { Self.isGood($0) || ($0.status == 503 && $0.name == "bad") },
                    "only the endpoints' own answers, no proxy 5xx or errors: \(Self.timeline(all, since: t0))")
            #expect(found.count >= 3, "ejected three times: \(Self.timeline(all, since: t0))")
            let violationList = violations.map { "+\(Self.clock($0.t - t0)) s \($0.label)" }
            #expect(violations.isEmpty, "an ejected endpoint got requests: \(violationList)")
            #expect(badEnd - badBefore == failed,
                    "every request the bad endpoint received was one the client saw fail (none while ejected, no retries): \(badEnd - badBefore) received, \(failed) 503s")
        }
    }

    // MARK: Circuit breaking

    static let paymentsVIP = "10.96.8.10"
    static let paymentsOpenVIP = "10.96.8.11"
    static let ledgerVIP = "10.96.8.20"
    static let ledgerOpenVIP = "10.96.8.21"
    static let ledgerPort = 9090

    /// frontend on node 0; on node 1 payments (HTTP, /slow* takes 1 s) and
    /// ledger (TCP echo on 9090). payments and ledger have connection-pool
    /// limits; payments-open and ledger-open reach the same backends without.
    static func circuitManifest(_ mesh: Mesh) -> String {
        H.frontend(mesh)
            + H.workload(mesh, "payments", labels: "{app: payments}", serviceAccount: "payments", node: 1)
            + tcpWorkload(mesh, "ledger", labels: "{app: ledger}", node: 1, port: ledgerPort)
            + routedService("payments", vip: paymentsVIP, selector: "{app: payments}")
            + routedService("payments-open", vip: paymentsOpenVIP, selector: "{app: payments}")
            + destinationRule("payments", "{connectionPool: {http: {http1MaxPendingRequests: 1, http2MaxRequests: 2}}}")
            + tcpService("ledger", vip: ledgerVIP, selector: "{app: ledger}", port: ledgerPort)
            + tcpService("ledger-open", vip: ledgerOpenVIP, selector: "{app: ledger}", port: ledgerPort)
            + destinationRule("ledger", "{connectionPool: {tcp: {maxConnections: 1}}}")
    }

    /// A `linger` connection through the mesh, once its first line echoed;
    /// started again (for up to 10 s) while an earlier connection still
    /// counts against a limit.
    static func holdConnection(_ node: TestNode, from cgroup: String, host: String, port: Int, seconds: Double) async throws -> Spawned {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let child = try node.start("linger", cgroup: cgroup, ["linger", "--host", host, "--port", String(port),
                                                                  "--duration", String(seconds), "--interval", "0.05", "--timeout", "3"])
            let lineDeadline = Date().addingTimeInterval(10)
            while true {
                let lines = child.jsonLines
                if lines.contains(where: { $0.contains("\"connected\"") }) { return child }
                if lines.contains(where: { $0.contains("\"closed\"") }) || !child.isRunning { break }
                guard Date() < lineDeadline else { throw HarnessError("linger to \(host):\(port) printed nothing in 10 s:\n\(child.tail(10))") }
                try await Task.sleep(for: .milliseconds(20))
            }
            child.stop()
            guard Date() < deadline else { throw HarnessError("no connection to \(host):\(port) could be held open:\n\(child.tail(5))") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    @Test func pastTheConnectionPoolRequestsGet503UOAtOnceAndAnExtraTCPConnectionIsReset() async throws {
        try await withMesh(nodes: 2) { mesh in
            let n = mesh.nodes
            try await mesh.control.apply(Self.circuitManifest(mesh))
            try await H.startEcho(n[1], unit: "payments", name: "payments", ["--delay-path", "/slow", "--delay-ms", "1000"])
            _ = try await n[1].startWorkloadServer("shop", "ledger.service", port: Self.ledgerPort)
            let frontend = try n[0].unit("shop", "frontend.service")
            try await H.waitForMesh(mesh, [(0, "frontend"), (1, "payments"), (1, "ledger")])

            for vip in [Self.paymentsVIP, Self.paymentsOpenVIP] {
                let warm = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                    try await H.requests(n[0], from: frontend, "http://\(vip)/warm", ["--timeout", "4"])
                }, until: { $0.count(200) == 1 && $0.echo()?.headers["x-forwarded-proto"] == "http" })
                try #require(warm.count(200) == 1 && warm.echo()?.headers["x-forwarded-proto"] == "http",
                             "the route to payments at \(vip) never answered: \(warm)")
            }
            for vip in [Self.ledgerVIP, Self.ledgerOpenVIP] {
                let warm = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(300), {
                    try await n[0].probe(from: frontend, host: vip, port: Self.ledgerPort, ["--timeout", "4"], timeout: 15)
                }, until: { $0.ok })
                try #require(warm.ok, "ledger at \(vip):\(Self.ledgerPort) never answered through the mesh: \(warm)")
            }
            // The rules came with the Services and routes.
            try await Self.waitApplied(mesh, on: n[0])
            let overflowBefore = try await n[0].proxyCounter("circuitBreakerOverflow")
            try #require(overflowBefore >= 0, "/debug/capture has no proxy.circuitBreakerOverflow")

            // HTTP, http2MaxRequests 2 and http1MaxPendingRequests 1: of 8
            // concurrent requests of 1 s, 2 are in flight and 1 waits; the rest
            // are answered 503 UO at once, never forwarded.
            let before = try await H.stats(n[1])
            let burst = try await H.requests(n[0], from: frontend, "http://\(Self.paymentsVIP)/slow/charge", count: 8,
                                             ["--workers", "8", "--timeout", "10", "--sequence", "--tally-header", H.flagsHeader],
                                             timeout: 40)
            let after = try await H.stats(n[1])
            let overflowAfterHTTP = try await n[0].proxyCounter("circuitBreakerOverflow")
            let answers = try Self.answers(burst)
            let served = burst.count(200), refused = burst.count(503)
            let servedTimes = answers.filter { $0.status == 200 }.map(\.elapsed).sorted()
            let refusedTimes = answers.filter { $0.status == 503 }.map(\.elapsed).sorted()
            let servedList = servedTimes.map { Self.clock($0) }.joined(separator: ", ")
            let refusedList = refusedTimes.map { Self.clock($0) }.joined(separator: ", ")
            let peakAtBackend = after.maxActive.map { "\($0)" } ?? "?"
            let flags = burst.headerValues?[H.flagsHeader] ?? [:]
            print("connectionPool {http2MaxRequests: 2, http1MaxPendingRequests: 1}, 8 concurrent requests of 1 s: "
                  + "\(served) served after [\(servedList)] s, \(refused) refused after [\(refusedList)] s; flags \(flags); "
                  + "the backend received \(after.count - before.count), at most \(peakAtBackend) at once; "
                  + "circuitBreakerOverflow +\(overflowAfterHTTP - overflowBefore)")
            #expect(burst.errors.isEmpty && served + refused == 8, "only 200s and 503s: \(burst.statuses) \(burst.errors)")
            #expect(refused >= 1 && burst.flagged("UO") == refused, "every refusal is a 503 flagged UO: \(burst.headerValues ?? [:])")
            #expect((2...3).contains(served), "at most 3 served (2 in flight, 1 pending), at least 2: \(served)")
            let refusal = burst.samples["503"]?.body.lowercased() ?? ""
            #expect(refusal.contains("overflow") || refusal.contains("circuit breaker"), "the 503 says why: \(refusal)")
            #expect((refusedTimes.last ?? 99) < 0.5, "refusals are answered at once, not queued: \(refusedTimes)")
            #expect((servedTimes.first ?? 0) >= 0.9, "served requests took the backend's 1 s: \(servedTimes)")
            if served == 3 {
                #expect((servedTimes.last ?? 0) >= 1.8, "the pending request waited for room, then took its 1 s: \(servedTimes)")
            }
            #expect(after.count - before.count == served, "refused requests never reach the backend: it received \(after.count - before.count)")
            #expect(after.maxActive == 2, "at most 2 requests at once at the backend (and 2 did run together): \(peakAtBackend)")
            #expect(overflowAfterHTTP - overflowBefore == refused, "circuitBreakerOverflow counts each UO: +\(overflowAfterHTTP - overflowBefore), \(refused) refused")

            // The same backend through a Service without a rule: all 8 at once.
            let unlimited = try await H.requests(n[0], from: frontend, "http://\(Self.paymentsOpenVIP)/slow/charge", count: 8,
                                                 ["--workers", "8", "--timeout", "10", "--timing"], timeout: 40)
            let peak = try await H.stats(n[1]).maxActive ?? 0
            print("no DestinationRule, 8 concurrent requests of 1 s: \(unlimited.statuses) in \(H.seconds(unlimited.elapsed?.total)); at most \(peak) at once")
            #expect(unlimited.count(200) == 8 && unlimited.errors.isEmpty, "\(unlimited.statuses) \(unlimited.errors)")
            #expect(peak > 2, "without a connection pool the backend runs more than 2 at once: \(peak)")

            // TCP, maxConnections 1: while one connection is open, another is
            // reset at once (connections do not queue); the limit is the Service's.
            let held = try await Self.holdConnection(n[0], from: frontend, host: Self.ledgerVIP, port: Self.ledgerPort, seconds: 3)
            let overflowHeld = try await n[0].proxyCounter("circuitBreakerOverflow")
            let extra = try await n[0].probe(from: frontend, host: Self.ledgerVIP, port: Self.ledgerPort, ["--timeout", "3"], timeout: 15)
            let elsewhere = try await n[0].probe(from: frontend, host: Self.ledgerOpenVIP, port: Self.ledgerPort, ["--timeout", "3"], timeout: 15)
            let overflowAfterTCP = try await n[0].proxyCounter("circuitBreakerOverflow")
            let extraOutcome = extra.ok ? "connected" : "failed (" + (extra.error ?? "?") + ")"
            let elsewhereOutcome = elsewhere.ok ? "connected" : "failed (" + (elsewhere.error ?? "?") + ")"
            print("connectionPool {tcp: {maxConnections: 1}} with one connection held: a second through ledger \(extraOutcome) "
                  + "after \(extra.elapsedMs) ms; one through ledger-open \(elsewhereOutcome)")
            #expect(!extra.ok && extra.hello == nil && extra.error != "timeout",
                    "a connection past maxConnections must be reset: \(extra)")
            #expect(extra.elapsedMs < 1000, "refused at once, not queued: \(extra.elapsedMs) ms")
            #expect(elsewhere.ok, "the limit is ledger's: the same backend through ledger-open takes another connection: \(elsewhere)")
            #expect(overflowAfterTCP - overflowHeld == 1, "the reset is counted in circuitBreakerOverflow: +\(overflowAfterTCP - overflowHeld)")
            #expect(await held.waitExit(timeout: 10), "the held connection did not finish: \(held.tail(5))")
            #expect(held.jsonLines.last?.contains("\"done\"") == true && !held.jsonLines.contains { $0.contains("\"closed\"") },
                    "the connection held open is left alone: \(held.tail(5))")
            // Once it closed there is room again.
            let room = try await AuthorizationPolicyTests.settle(timeout: 5, {
                try await n[0].probe(from: frontend, host: Self.ledgerVIP, port: Self.ledgerPort, ["--timeout", "3"], timeout: 15)
            }, until: { $0.ok })
            #expect(room.ok && room.echoMatches, "a connection after the held one closed must get through: \(room)")

            let overflowEnd = try await n[0].proxyCounter("circuitBreakerOverflow")
            #expect(overflowEnd > 0, "node 0's /debug/capture proxy.circuitBreakerOverflow after refusals: \(overflowEnd)")
        }
    }
}
