import Foundation
import Testing

/// Telemetry on real nodes, read the way users read it: a real Prometheus
/// (Debian's) scrapes both weftds' exporters, an OTLP/HTTP receiver decoding
/// with the official protobuf definitions collects the spans, and each
/// weftd writes its JSON access log.
@Suite(
    "Observability (Prometheus, OTLP traces, access logs)",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct ObservabilityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    static let promtool = fixtures.appendingPathComponent("promtool.py").path
    static let otlpsink = fixtures.appendingPathComponent("otlpsink.py").path
    static let dashboards = fixtures.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/grafana")
    static let catalogVIP = HTTPRoutingTests.vip
    static let ledgerVIP = "10.96.0.41"

    static func manifest(_ mesh: Mesh) -> String {
        let n = mesh.nodes
        return """
            apiVersion: weft.dev/v1alpha1
            kind: Namespace
            metadata: {name: shop}
            spec: {mesh: {enabled: true}}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata: {name: frontend, namespace: shop, labels: {app: frontend, version: v3}}
            spec: {node: \(n[0].name), unit: frontend.service, serviceAccount: frontend, addresses: ["\(MeshFabric.address(ofNode: 0))"]}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata: {name: catalog-v1, namespace: shop, labels: {app: catalog, version: v1}}
            spec: {node: \(n[1].name), unit: catalog-v1.service, serviceAccount: catalog,
                   addresses: ["\(MeshFabric.address(ofNode: 1))"], ports: [{name: http, port: 8080, protocol: http}, {name: ledger, port: 9000, protocol: tcp}]}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: catalog, namespace: shop}
            spec: {selector: {app: catalog}, virtualIP: \(catalogVIP), ports: [{name: http, port: 80, targetPort: 8080, protocol: http}]}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: ledger, namespace: shop}
            spec: {selector: {app: catalog}, virtualIP: \(ledgerVIP), ports: [{name: ledger, port: 9000, protocol: tcp}]}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: HTTPRoute
            metadata: {name: catalog, namespace: shop}
            spec:
              parentRefs: [{group: "", kind: Service, name: catalog, port: 80}]
              rules:
              - matches: [{path: {type: PathPrefix, value: /api}}]
                backendRefs: [{name: catalog, port: 80}]
            """
    }

    /// Runs a command in the fabric namespace (where Prometheus and the OTLP receiver live).
    static func inFabric(_ mesh: Mesh, _ arguments: [String], timeout: Double = 30) async -> CommandResult {
        await Command.runAsync(["nsenter", "--net=/run/netns/\(mesh.fabric.netns)"] + arguments, timeout: timeout)
    }

    static func show(_ v: Double?) -> String { v.map { "\($0)" } ?? "no series" }

    static func value(_ mesh: Mesh, _ prom: String, _ expr: String) async throws -> Double? {
        let r = await inFabric(mesh, [TestEnvironment.python, promtool, "query", prom, expr])
        guard r.succeeded else { throw HarnessError("query \(expr) failed: \(r)") }
        guard let list = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] else {
            throw HarnessError("query \(expr): not a result list: \(r.stdout)")
        }
        guard !list.isEmpty else { return nil }
        return list.compactMap { ($0["value"] as? [Any])?.last as? String }.compactMap(Double.init).reduce(0, +)
    }

    @Test func prometheusTracesAndAccessLogsSeeCrossNodeTrafficWithIstiosNamesAndBothReporters() async throws {
        let traceID = String(format: "%08x", UInt32.random(in: 1...UInt32.max)) + "4bf92f3577b34da6a3ce929d0e0e4736".dropFirst(8)
        let parentSpan = "00f067aa0ba902b7"
        let sinkAddress = "\(MeshFabric.gateway):4318"
        let tag = String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
        let accessLogs: [URL] = (0..<2).map { FileManager.default.temporaryDirectory.appendingPathComponent("weft-it-access-\(tag)-\($0).log") }
        defer { for url in accessLogs { try? FileManager.default.removeItem(at: url) } }
        let configs: [String] = accessLogs.map { url in
            "telemetry:\n  tracing:\n    endpoint: http://\(sinkAddress)/v1/traces\n    samplePercent: 100\n  accessLog:\n    output: \(url.path)\n"
        }
        try await withMesh(nodes: 2, nodeConfig: { configs[$0] }) { mesh in
            try await Self.checkTelemetry(mesh, traceID: traceID, parentSpan: parentSpan, sinkAddress: sinkAddress, accessLogs: accessLogs)
        }
    }

    static func checkTelemetry(_ mesh: Mesh, traceID: String, parentSpan: String, sinkAddress: String, accessLogs: [URL]) async throws {
            let n = mesh.nodes
            let spans = mesh.fabric.dir.appendingPathComponent("spans.jsonl")
            let sink = try mesh.fabric.spawn("otlpsink", [TestEnvironment.python, Self.otlpsink, "--listen", sinkAddress, "--out", spans.path])
            let promPort = 19090
            let prom = "http://127.0.0.1:\(promPort)"
            _ = try mesh.fabric.spawn("prometheus", [TestEnvironment.python, Self.promtool, "serve", "--config-dir",
                                                     mesh.fabric.dir.appendingPathComponent("prom").path, "--port", String(promPort),
                                                     "--targets", "\(MeshFabric.address(ofNode: 0)):15020,\(MeshFabric.address(ofNode: 1)):15020",
                                                     "--interval", "1s"])
            try await mesh.control.apply(Self.manifest(mesh))
            let catalog = try n[1].unit("shop", "catalog-v1.service")
            _ = try n[1].spawnTool("httpecho", ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, catalog,
                                                TestEnvironment.python, TestEnvironment.httpEcho, "--port", "8080", "--name", "v1"])
            _ = try n[1].start("ledger", cgroup: catalog, ["serve", "--host", "0.0.0.0", "--port", "9000"])
            let frontend = try n[0].unit("shop", "frontend.service")
            try await n[0].waitForCapture("shop captured", timeout: 15) { $0.namespace("shop")?.attached == true }
            try await mesh.waitForCertificates([(n[0], mesh.identity("shop", "frontend")), (n[1], mesh.identity("shop", "catalog"))])
            let warm = try await HTTPRoutingTests.warmUp(n[0], from: frontend)
            #expect(warm.statuses["200"] == 1, "\(warm)")

            // Known traffic: 40 routed requests, 3 with no route (404 NR),
            // one with a W3C parent, and 12 TCP connections to the ledger.
            let ok = try await HTTPRoutingTests.requests(n[0], from: frontend, path: "/api/items", count: 40)
            #expect(ok.statuses == ["200": 40], "\(ok)")
            let missing = try await HTTPRoutingTests.requests(n[0], from: frontend, path: "/nothing", count: 3)
            #expect(missing.statuses == ["404": 3], "\(missing)")
            let traced = try await HTTPRoutingTests.requests(n[0], from: frontend, path: "/api/traced", count: 1,
                                                             headers: ["traceparent: 00-\(traceID)-\(parentSpan)-01"])
            #expect(traced.statuses == ["200": 1], "\(traced)")
            let tcp = try await n[0].many(from: frontend, host: Self.ledgerVIP, port: 9000, count: 12, timeout: 60)
            #expect(tcp.ok == 12, "\(tcp)")

            // Prometheus: the series users' Istio queries read, from both reporters.
            let total = "sum(istio_requests_total{reporter=\"destination\",destination_workload=\"catalog-v1\"})"
            let waited = await Self.inFabric(mesh, [TestEnvironment.python, Self.promtool, "wait", prom, total, "--min", "42", "--timeout", "30"], timeout: 40)
            #expect(waited.succeeded, "\(waited)")
            try await Task.sleep(for: .seconds(2))
            let frontendID = mesh.identity("shop", "frontend"), catalogID = mesh.identity("shop", "catalog")
            let common = """
                source_workload="frontend",source_workload_namespace="shop",source_principal="\(frontendID)",source_app="frontend",\
                source_version="v3",destination_workload="catalog-v1",destination_workload_namespace="shop",\
                destination_principal="\(catalogID)",destination_app="catalog",destination_version="v1",\
                destination_canonical_service="catalog",destination_canonical_revision="v1",\
                destination_service="catalog.shop.svc.cluster.local",destination_service_name="catalog",\
                destination_service_namespace="shop",connection_security_policy="mutual_tls",request_protocol="http"
                """
            for reporter in ["source", "destination"] {
                let ok200 = try await Self.value(mesh, prom, "sum(istio_requests_total{reporter=\"\(reporter)\",\(common),response_code=\"200\",response_flags=\"-\"})")
                #expect(ok200 == 42, "\(reporter): 42 requests answered 200 (warm-up, 40, traced), got \(Self.show(ok200))")
                let hist = try await Self.value(mesh, prom, "sum(istio_request_duration_milliseconds_count{reporter=\"\(reporter)\",\(common)})")
                #expect(hist == 42, "\(reporter) duration histogram count: \(Self.show(hist))")
                let inf = try await Self.value(mesh, prom, "sum(istio_request_duration_milliseconds_bucket{reporter=\"\(reporter)\",destination_workload=\"catalog-v1\",le=~\"3600000(\\\\.0)?|3\\\\.6e\\\\+06\"})")
                #expect(inf == 42, "\(reporter): Istio's largest duration bucket (3600000 ms) holds every request: \(Self.show(inf))")
                let bytes = try await Self.value(mesh, prom, "sum(istio_response_bytes_sum{reporter=\"\(reporter)\",destination_workload=\"catalog-v1\"})")
                #expect((bytes ?? 0) > 42 * 100, "\(reporter) response bytes: \(Self.show(bytes))")
            }
            let nr = try await Self.value(mesh, prom, "sum(istio_requests_total{reporter=\"source\",source_workload=\"frontend\",response_code=\"404\",response_flags=\"NR\",destination_service=\"catalog.shop.svc.cluster.local\"})")
            #expect(nr == 3, "404 NR at the source: \(Self.show(nr))")
            for reporter in ["source", "destination"] {
                let tcpCommon = "reporter=\"\(reporter)\",source_workload=\"frontend\",destination_workload=\"catalog-v1\",destination_service=\"ledger.shop.svc.cluster.local\",request_protocol=\"tcp\",connection_security_policy=\"mutual_tls\""
                let opened = try await Self.value(mesh, prom, "sum(istio_tcp_connections_opened_total{\(tcpCommon)})")
                let closed = try await Self.value(mesh, prom, "sum(istio_tcp_connections_closed_total{\(tcpCommon)})")
                let received = try await Self.value(mesh, prom, "sum(istio_tcp_received_bytes_total{\(tcpCommon)})")
                let sent = try await Self.value(mesh, prom, "sum(istio_tcp_sent_bytes_total{\(tcpCommon)})")
                #expect(opened == 12 && closed == 12, "\(reporter) TCP opened \(Self.show(opened)), closed \(Self.show(closed))")
                #expect((received ?? 0) > 0 && (sent ?? 0) > 0, "\(reporter) TCP bytes received \(Self.show(received)), sent \(Self.show(sent))")
            }
            // The agent's own series.
            for (expr, check) in [
                ("weft_workload_captured{workload=\"frontend\",workload_namespace=\"shop\"}", { (v: Double) in v == 1 }),
                ("weft_workload_hooks_attached{workload=\"frontend\"} - weft_workload_hooks_expected{workload=\"frontend\"}", { $0 == 0 }),
                ("min(weft_control_connected)", { $0 == 1 }),
                ("min(weft_config_version)", { $0 > 0 }),
                ("min(weft_certificate_expiry_timestamp_seconds{identity=\"\(frontendID)\"}) - time()", { $0 > 3600 }),
                ("sum(weft_bpf_program_run_count_total{program=\"weft_sock4_connect\"})", { $0 > 0 }),
                ("min(weft_bpf_map_max_entries{map=\"weft_tuple\"})", { $0 > 0 }),
                ("sum(weft_proxy_connections_total)", { $0 >= 55 }),
                ("min(process_resident_memory_bytes)", { $0 > 1_000_000 }),
                ("count(weft_build_info)", { $0 == 2 }),
            ] as [(String, (Double) -> Bool)] {
                let v = try await Self.value(mesh, prom, expr)
                #expect(v.map(check) == true, "\(expr) = \(Self.show(v))")
            }

            // Every query of the shipped dashboards parses, uses known
            // metrics only, and finds data after this traffic.
            let listed = await Command.runAsync([TestEnvironment.python, Self.promtool, "queries", Self.dashboards.appendingPathComponent("dashboards").path,
                                                 "--metrics", Self.dashboards.appendingPathComponent("metrics.txt").path,
                                                 "--var", "namespace=shop", "--var", "workload=catalog-v1",
                                                 "--var", "service=catalog.shop.svc.cluster.local",
                                                 "--var", "instance=\(MeshFabric.address(ofNode: 1)):15020"])
            #expect(listed.succeeded, "\(listed)")
            var empty: [String] = []
            var queries = 0
            for line in listed.stdout.split(separator: "\n") {
                guard let q = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String], let expr = q["expr"] else { continue }
                queries += 1
                if try await Self.value(mesh, prom, expr) == nil { empty.append("\(q["dashboard"] ?? "?") / \(q["panel"] ?? "?"): \(expr)") }
            }
            print("dashboards: \(queries) queries, \(queries - empty.count) with data")
            #expect(queries >= 20, "the dashboards hold \(queries) queries")
            #expect(empty.count <= queries / 5, "queries without data after known traffic:\n\(empty.joined(separator: "\n"))")

            // One trace across both nodes: the client span at the source
            // proxy (child of the caller's span), the server span at the
            // destination proxy (child of the client span).
            var found: [[String: Any]] = []
            for _ in 0..<40 {
                let text = (try? String(contentsOf: spans, encoding: .utf8)) ?? ""
                found = text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                    .filter { $0["trace_id"] as? String == traceID }
                if found.count >= 2 { break }
                try await Task.sleep(for: .milliseconds(250))
            }
            let client = found.first { $0["kind"] as? String == "SPAN_KIND_CLIENT" }
            let server = found.first { $0["kind"] as? String == "SPAN_KIND_SERVER" }
            #expect(client != nil && server != nil, "spans of trace \(traceID): \(found); receiver log: \(sink.tail())")
            if let client, let server {
                #expect(client["parent_span_id"] as? String == parentSpan, "\(client)")
                #expect(server["parent_span_id"] as? String == client["span_id"] as? String, "server \(server) client \(client)")
                #expect((client["resource"] as? [String: Any])?["weft.node"] as? String == n[0].name, "\(client)")
                #expect((server["resource"] as? [String: Any])?["weft.node"] as? String == n[1].name, "\(server)")
                let attributes = server["attributes"] as? [String: Any] ?? [:]
                #expect(attributes["http.request.method"] as? String == "GET" && attributes["url.path"] as? String == "/api/traced"
                        && "\(attributes["http.response.status_code"] ?? "")" == "200"
                        && attributes["weft.source.principal"] as? String == frontendID, "\(attributes)")
            }

            // Access logs: the same request at both ends, one JSON line each.
            try await Task.sleep(for: .milliseconds(500))
            let lines = accessLogs.map { url in
                ((try? String(contentsOf: url, encoding: .utf8)) ?? "").split(separator: "\n")
                    .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            }
            let atSource = lines[0].first { $0["path"] as? String == "/api/traced" }
            let atDestination = lines[1].first { $0["path"] as? String == "/api/traced" }
            #expect(atSource?["reporter"] as? String == "source" && atSource?["response_code"] as? Int == 200
                    && atSource?["trace_id"] as? String == traceID && atSource?["upstream_host"] != nil, "\(String(describing: atSource))")
            #expect(atDestination?["reporter"] as? String == "destination" && atDestination?["source_principal"] as? String == frontendID
                    && atDestination?["request_id"] as? String == atSource?["request_id"] as? String, "\(String(describing: atDestination))")
            #expect(lines[0].contains { $0["protocol"] as? String == "tcp" && $0["destination_service"] as? String == "ledger.shop.svc.cluster.local" },
                    "TCP connections are logged too")
    }
}
