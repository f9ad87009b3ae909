// `make bench-telemetry` (part 1): the in-process cost of Istio's metrics,
// on the registry weftd uses: recording one request on an existing series,
// and rendering /metrics with 10,000 label sets of the HTTP families.
import Foundation
import Prometheus
import WeftTelemetry

func traffic(_ i: Int) -> TrafficLabels {
    TrafficLabels(reporter: .source,
                  source: PeerLabels(workload: "client-\(i)", namespace: "bench", principal: "spiffe://cluster.local/ns/bench/sa/client",
                                     labels: ["app": "client", "version": "v1"]),
                  destination: PeerLabels(workload: "server", namespace: "bench", principal: "spiffe://cluster.local/ns/bench/sa/server",
                                          labels: ["app": "server", "version": "v1"]),
                  service: ServiceLabels(host: "web.bench.svc.cluster.local", name: "web", namespace: "bench"),
                  requestProtocol: "http", security: .mutualTLS)
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

let renders = Int(ProcessInfo.processInfo.environment["RENDERS"] ?? "20") ?? 20
let clock = ContinuousClock()

// Recording: one label set, many requests (the steady state of a mesh).
let hot = MeshMetrics(registry: PrometheusCollectorRegistry())
let t = traffic(0)
let n = 200_000
var start = clock.now
for i in 0..<n {
    hot.recordRequest(t, responseCode: 200, durationMilliseconds: Double(i % 50), requestBytes: 120, responseBytes: 300)
}
let recordNs = Double((clock.now - start).components.attoseconds) / 1e9 / Double(n)
    + Double((clock.now - start).components.seconds) * 1e9 / Double(n)

// Rendering: label sets in the four HTTP families. Each label set is 49 samples
// (a counter, and three histograms with their buckets, sum and count), so 204
// label sets are about 10,000 samples and 10,000 label sets about 490,000.
let sizes = (ProcessInfo.processInfo.environment["SIZES"] ?? "204,10000").split(separator: ",").compactMap { Int($0) }
var renderResults: [[String: Any]] = []
for labelSets in sizes {
    let registry = PrometheusCollectorRegistry()
    let metrics = MeshMetrics(registry: registry, maxSeriesPerMetric: labelSets + 1)
    for i in 0..<labelSets {
        metrics.recordRequest(traffic(i), responseCode: 200, durationMilliseconds: 3, requestBytes: 120, responseBytes: 300)
    }
    var times: [Double] = []
    var out: [UInt8] = []
    for _ in 0..<renders {
        start = clock.now
        out = registry.emitToBuffer()
        let d = clock.now - start
        times.append(Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15)
    }
    let samples = String(decoding: out, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("#") }.count
    renderResults.append([
        "label_sets": labelSets, "samples": samples, "bytes": out.count, "renders": renders,
        "ms_median": (median(times) * 10).rounded() / 10,
        "ms_min": ((times.min() ?? 0) * 10).rounded() / 10,
        "ms_max": ((times.max() ?? 0) * 10).rounded() / 10,
    ])
}
let result: [String: Any] = [
    "record_ns_per_request": (recordNs * 10).rounded() / 10,
    "render": renderResults,
]
let json = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
print(String(decoding: json, as: UTF8.self))
