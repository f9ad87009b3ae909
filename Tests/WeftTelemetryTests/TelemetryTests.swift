import Foundation
import Prometheus
import Testing
@testable import WeftTelemetry

@Suite("Istio metrics, B3 propagation and access log lines")
struct TelemetryTests {
    static func traffic(_ workload: String) -> TrafficLabels {
        TrafficLabels(reporter: .source,
                      source: PeerLabels(workload: workload, namespace: "shop", principal: "spiffe://weft.local/ns/shop/sa/x", labels: ["app": "bomb"]),
                      destination: PeerLabels(workload: "catalog-v1", namespace: "shop", principal: "spiffe://weft.local/ns/shop/sa/catalog",
                                              labels: ["app": "catalog", "version": "v1"]),
                      service: ServiceLabels(host: "catalog.shop.svc.cluster.local", name: "catalog", namespace: "shop"),
                      requestProtocol: "http", security: .mutualTLS)
    }

    @Test func trafficLabelsCopiesAreIndependentValuesThatCompareAndHashByContent() {
        let original = Self.traffic("frontend")
        var changed = original
        changed.destination = .unknown
        changed.requestProtocol = "grpc"
        #expect(original.destination.workload == "catalog-v1" && original.requestProtocol == "http",
                "a copy's change must not reach the value it was copied from")
        #expect(changed.destination == .unknown && changed.requestProtocol == "grpc")
        let destination = original.reported(by: .destination)
        #expect(original.reporter == .source && destination.reporter == .destination)
        // A copy shares its box until it is changed; a change is a box of its own.
        let copy = original
        #expect(copy.sharesStorage(with: original))
        #expect(!changed.sharesStorage(with: original) && !destination.sharesStorage(with: original))
        // Equal contents built separately: equal, same hash, one series.
        let rebuilt = Self.traffic("frontend")
        #expect(rebuilt == original && rebuilt.hashValue == original.hashValue)
        #expect(!rebuilt.sharesStorage(with: original), "equal by content, not by sharing")
        #expect(rebuilt != changed && rebuilt != destination)
        #expect(Set([original, rebuilt, changed, destination]).count == 3)
    }

    @Test func aLabelBombIsFoldedIntoOneOverflowSeriesAndCountedWhileTotalsStayRight() {
        let registry = PrometheusCollectorRegistry()
        let metrics = MeshMetrics(registry: registry, maxSeriesPerMetric: 50)
        for i in 0..<5000 {
            metrics.recordRequest(Self.traffic("bomb-\(i)"), responseCode: 200, durationMilliseconds: 1, requestBytes: 10, responseBytes: 10)
        }
        let text = registry.emitToString()
        let series = text.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") }
        #expect(series.count == 51, "50 series and one overflow series, not \(series.count)")
        let total = series.compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(total == 5000, "every request still counted: \(total)")
        #expect(text.contains(#"weft_metrics_label_overflow_total{metric="istio_requests_total"} 4950"#), "\(text.prefix(400))")
        #expect(series.contains { $0.contains(#"source_workload="overflow""#) })
    }

    @Test func aConnectionsRecentSeriesCountEveryRequestOnceAndFoldedOnesAsOverflowEachTime() {
        let registry = PrometheusCollectorRegistry()
        let metrics = MeshMetrics(registry: registry, maxSeriesPerMetric: 3)
        var recent = MeshMetrics.RecentSeries()
        // Six label sets in turn through one cache of four: kept, evicted, looked up again; three fold.
        let sets = (0..<6).map { Self.traffic("w\($0)") }
        for round in 0..<100 {
            for t in sets {
                metrics.recordRequest(t, responseCode: round % 10 == 9 ? 503 : 200, durationMilliseconds: 1,
                                      requestBytes: 1, responseBytes: 1, recent: &recent)
            }
        }
        let text = registry.emitToString()
        let series = text.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") }
        let total = series.compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(total == 600, "\(series)")
        #expect(series.contains { $0.contains(#"source_workload="w0""#) && $0.contains(#"response_code="200""#) && $0.hasSuffix(" 90") },
                "\(series)")
        // 600 requests, of which only those of the three series the cap admitted were not folded.
        let kept = series.filter { !$0.contains(#"source_workload="overflow""#) }
            .compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(text.contains(#"weft_metrics_label_overflow_total{metric="istio_requests_total"} \#(Int(600 - kept))"#),
                "\(kept) kept: \(text.prefix(600))")
    }

    @Test func requestSeriesCarryIstiosLabelsAndBuckets() {
        let registry = PrometheusCollectorRegistry()
        let metrics = MeshMetrics(registry: registry, cluster: "east")
        metrics.recordRequest(Self.traffic("frontend"), responseCode: 503, flags: "UF", durationMilliseconds: 7, requestBytes: 120, responseBytes: 80)
        let text = registry.emitToString()
        for label in [#"reporter="source""#, #"source_workload="frontend""#, #"destination_app="catalog""#, #"destination_version="v1""#,
                      #"destination_canonical_service="catalog""#, #"destination_canonical_revision="v1""#, #"source_cluster="east""#,
                      #"response_code="503""#, #"response_flags="UF""#, #"connection_security_policy="mutual_tls""#,
                      #"destination_service="catalog.shop.svc.cluster.local""#, #"request_protocol="http""#, #"grpc_response_status="""#] {
            #expect(text.contains(label), "\(label) missing")
        }
        #expect(text.contains("istio_request_duration_milliseconds_bucket{") && text.contains(#"le="3600000.0""#) || text.contains(#"le="3600000""#))
        let tcp = metrics.openConnection(Self.traffic("frontend"))
        tcp.receivedBytes(100)
        tcp.sentBytes(40)
        tcp.connectionClosed()
        let after = registry.emitToString()
        #expect(after.contains("istio_tcp_received_bytes_total{") && after.contains("istio_tcp_connections_closed_total{"))
    }

    @Test func b3ContextsBecomeTraceparentsAndDeferredDecisionsAreMadeHere() {
        let multi: HeaderList = [("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"), ("X-B3-SpanId", "e457b5a2e4d86bd1"), ("X-B3-Sampled", "1")]
        #expect(MeshTracing.traceparent(fromB3: multi, samplePercent: 0) == "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01")
        let short: HeaderList = [("x-b3-traceid", "64fe8b2a57d3eff7"), ("x-b3-spanid", "e457b5a2e4d86bd1"), ("x-b3-sampled", "0")]
        #expect(MeshTracing.traceparent(fromB3: short, samplePercent: 100) == "00-000000000000000064fe8b2a57d3eff7-e457b5a2e4d86bd1-00")
        let single: HeaderList = [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")]
        #expect(MeshTracing.traceparent(fromB3: single, samplePercent: 0) == "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01")
        let deferred: HeaderList = [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")]
        #expect(MeshTracing.traceparent(fromB3: deferred, samplePercent: 0)?.hasSuffix("-00") == true)
        #expect(MeshTracing.traceparent(fromB3: deferred, samplePercent: 100)?.hasSuffix("-01") == true)
        for bad in [[("b3", "1")], [("x-b3-traceid", "zz"), ("x-b3-spanid", "e457b5a2e4d86bd1")],
                    [("x-b3-traceid", "00000000000000000000000000000000"), ("x-b3-spanid", "e457b5a2e4d86bd1")]] as [HeaderList] {
            #expect(MeshTracing.traceparent(fromB3: bad, samplePercent: 100) == nil, "\(bad)")
        }
        var headers: HeaderList = [("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"), ("x-b3-spanid", "e457b5a2e4d86bd1"), ("x-b3-sampled", "1")]
        MeshTracing.rewriteB3(&headers, traceparent: "00-80f198ee56343ba864fe8b2a57d3eff7-1111111111111111-01")
        #expect(headers.map { "\($0.name)=\($0.value)" } == ["x-b3-traceid=80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid=1111111111111111",
                                                             "x-b3-parentspanid=e457b5a2e4d86bd1", "x-b3-sampled=1"])
    }

    @Test func accessLogLinesAreOneJSONObjectEachWithEscapedFields() throws {
        let record = AccessLogRecord(startTime: Date(timeIntervalSince1970: 1_700_000_000.25), durationMilliseconds: 1.5,
                                     traffic: Self.traffic("front\"end\n"), method: "GET", path: "/a\u{1}b", responseCode: 200,
                                     requestID: "r-1", responseFlags: "-", bytesReceived: 10, bytesSent: 20)
        let line = record.jsonLine()
        #expect(line.hasSuffix("}\n") && line.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["source_workload"] as? String == "front\"end\n")
        #expect(object["path"] as? String == "/a\u{1}b")
        #expect(object["response_code"] as? Int == 200 && object["bytes_sent"] as? Int == 20)
        #expect(object["start_time"] as? String == "2023-11-14T22:13:20.250Z")
    }

    @Test func accessLogSamplingFollowsTheNamespaceRule() {
        let policy = AccessLogPolicy(defaults: .init(enabled: true, samplePercent: 100),
                                     namespaces: ["quiet": .init(enabled: false, samplePercent: 100), "half": .init(enabled: true, samplePercent: 50)])
        #expect(policy.shouldLog(namespace: "shop"))
        #expect(!policy.shouldLog(namespace: "quiet"))
        let logged = (0..<4000).filter { _ in policy.shouldLog(namespace: "half") }.count
        #expect((1700...2300).contains(logged), "50% of 4000: \(logged)")
    }
}
