import Prometheus
import Synchronization

/// One side of a request or connection, as Istio's standard metrics label it.
/// `unknown` where the proxy cannot know (a peer outside the mesh), as in Istio.
public struct PeerLabels: Sendable, Hashable {
    public var workload: String
    public var namespace: String
    public var principal: String
    public var app: String
    public var version: String
    public var canonicalService: String
    public var canonicalRevision: String

    public static let unknown = PeerLabels(workload: "unknown", namespace: "unknown", principal: "unknown",
                                           app: "unknown", version: "unknown", canonicalService: "unknown",
                                           canonicalRevision: "unknown")

    public init(workload: String, namespace: String, principal: String, app: String, version: String,
                canonicalService: String, canonicalRevision: String) {
        self.workload = workload
        self.namespace = namespace
        self.principal = principal
        self.app = app
        self.version = version
        self.canonicalService = canonicalService
        self.canonicalRevision = canonicalRevision
    }

    /// From a workload's name, namespace, identity and labels, with Istio's
    /// rules for app, version and the canonical service and revision.
    public init(workload: String, namespace: String, principal: String?, labels: [String: String]) {
        let app = labels["app"] ?? labels["app.kubernetes.io/name"]
        let version = labels["version"] ?? labels["app.kubernetes.io/version"]
        self.init(workload: workload, namespace: namespace, principal: principal ?? "unknown",
                  app: app ?? "unknown", version: version ?? "unknown",
                  canonicalService: labels["service.istio.io/canonical-name"] ?? app ?? workload,
                  canonicalRevision: labels["service.istio.io/canonical-revision"] ?? version ?? "latest")
    }
}

/// The Service a request or connection was addressed to.
public struct ServiceLabels: Sendable, Hashable {
    /// The service's host name (`name.namespace.svc.<cluster domain>`), or
    /// the destination address for traffic to no Service.
    public var host: String
    public var name: String
    public var namespace: String

    public static let unknown = ServiceLabels(host: "unknown", name: "unknown", namespace: "unknown")

    public init(host: String, name: String, namespace: String) {
        self.host = host
        self.name = name
        self.namespace = namespace
    }
}

public enum Reporter: String, Sendable, Hashable { case source, destination }

public enum SecurityPolicy: String, Sendable, Hashable {
    case mutualTLS = "mutual_tls"
    case none
}

/// What every istio_* series of one request or connection shares.
///
/// A value type over one shared, immutable box: a request's labels are
/// copied into its metric key, the connection's recent-series cache and its
/// access-log record, and copying the box is one reference count where
/// copying its eighteen strings was eighteen, and again on release. A
/// change makes a new box; callers that make the same change per request
/// keep its result (`sharesStorage(with:)` tells them it is the same).
public struct TrafficLabels: Sendable, Hashable {
    private struct Fields: Hashable, Sendable {
        var reporter: Reporter
        var source: PeerLabels
        var destination: PeerLabels
        var service: ServiceLabels
        var requestProtocol: String
        var security: SecurityPolicy
    }

    // Never written once made: two values share it safely across threads, and
    // comparing two of them borrows their fields in place, with no copy.
    private final class Storage: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var storage: Storage

    public var reporter: Reporter {
        get { storage.fields.reporter }
        set { change { $0.reporter = newValue } }
    }
    public var source: PeerLabels {
        get { storage.fields.source }
        set { change { $0.source = newValue } }
    }
    public var destination: PeerLabels {
        get { storage.fields.destination }
        set { change { $0.destination = newValue } }
    }
    public var service: ServiceLabels {
        get { storage.fields.service }
        set { change { $0.service = newValue } }
    }
    /// http, grpc or tcp.
    public var requestProtocol: String {
        get { storage.fields.requestProtocol }
        set { change { $0.requestProtocol = newValue } }
    }
    public var security: SecurityPolicy {
        get { storage.fields.security }
        set { change { $0.security = newValue } }
    }

    public init(reporter: Reporter, source: PeerLabels, destination: PeerLabels, service: ServiceLabels,
                requestProtocol: String, security: SecurityPolicy) {
        storage = Storage(Fields(reporter: reporter, source: source, destination: destination, service: service,
                                 requestProtocol: requestProtocol, security: security))
    }

    private mutating func change(_ edit: (inout Fields) -> Void) {
        var fields = storage.fields
        edit(&fields)
        storage = Storage(fields)
    }

    /// The same box: equal without reading a label, and a change made to one
    /// of them before gives the same result.
    public func sharesStorage(with other: TrafficLabels) -> Bool {
        storage === other.storage
    }

    public func reported(by reporter: Reporter) -> TrafficLabels {
        var copy = self
        copy.reporter = reporter
        return copy
    }

    public static func == (a: TrafficLabels, b: TrafficLabels) -> Bool {
        a.storage === b.storage || a.storage.fields == b.storage.fields
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(storage.fields)
    }
}

/// Istio's standard metrics (names, labels, buckets as Istio and Envoy use
/// them, so that existing dashboards and queries work unchanged), on
/// swift-prometheus.
///
/// Each metric family holds at most `maxSeriesPerMetric` label sets: a
/// workload that sends ever-changing values (a label bomb) must not grow the
/// agent's memory or the scrape without bound. Past the cap, new label sets
/// are folded into one series whose variable labels read `overflow`, and
/// `weft_metrics_label_overflow_total{metric}` counts what was folded, so
/// totals stay right while detail is lost.
public final class MeshMetrics: Sendable {
    public static let durationBuckets: [Double] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
                                                   30000, 60000, 300000, 600000, 1800000, 3600000]
    public static let sizeBuckets: [Double] = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000]

    public let registry: PrometheusCollectorRegistry
    public let cluster: String
    public let maxSeriesPerMetric: Int
    /// false: nothing is recorded (no exporter reads it). Connections get one
    /// shared series of a private registry, so the data path does not branch.
    public let enabled: Bool
    private let discard: TCPSeries

    struct HTTPKey: Hashable, Sendable {
        var traffic: TrafficLabels
        var code: Int
        var grpcStatus: String
        var flags: String
    }

    final class HTTPSeries: Sendable {
        let requests: Counter
        let duration: ValueHistogram
        let requestBytes: ValueHistogram
        let responseBytes: ValueHistogram
        init(requests: Counter, duration: ValueHistogram, requestBytes: ValueHistogram, responseBytes: ValueHistogram) {
            self.requests = requests
            self.duration = duration
            self.requestBytes = requestBytes
            self.responseBytes = responseBytes
        }
    }

    struct TCPKey: Hashable {
        var traffic: TrafficLabels
        var flags: String
    }

    /// The four istio_tcp_* counters of one label set.
    public final class TCPSeries: Sendable {
        let sent: Counter
        let received: Counter
        let opened: Counter
        let closed: Counter
        init(sent: Counter, received: Counter, opened: Counter, closed: Counter) {
            self.sent = sent
            self.received = received
            self.opened = opened
            self.closed = closed
        }

        /// Bytes from the destination to the source (the response direction).
        public func sentBytes(_ n: Int) { sent.increment(by: Int64(n)) }
        /// Bytes from the source to the destination (the request direction).
        public func receivedBytes(_ n: Int) { received.increment(by: Int64(n)) }
        public func connectionClosed() { closed.increment() }
    }

    private let http = Mutex<[HTTPKey: HTTPSeries]>([:])
    private let tcp = Mutex<[TCPKey: TCPSeries]>([:])
    private let overflowHTTP: [Counter]
    private let overflowTCP: [Counter]

    public init(registry: PrometheusCollectorRegistry, cluster: String = "weft", maxSeriesPerMetric: Int = 10_000,
                enabled: Bool = true) {
        self.registry = registry
        self.cluster = cluster
        self.maxSeriesPerMetric = max(1, maxSeriesPerMetric)
        self.enabled = enabled
        let scratch = PrometheusCollectorRegistry()
        discard = TCPSeries(sent: scratch.makeCounter(descriptor: Self.descriptor("discard", "")),
                            received: scratch.makeCounter(descriptor: Self.descriptor("discard", "")),
                            opened: scratch.makeCounter(descriptor: Self.descriptor("discard", "")),
                            closed: scratch.makeCounter(descriptor: Self.descriptor("discard", "")))
        func overflow(_ metric: String) -> Counter {
            registry.makeCounter(descriptor: Self.descriptor("weft_metrics_label_overflow_total",
                                                             "Records folded into the overflow series because a metric family reached its series cap."),
                                 labels: [("metric", metric)])
        }
        overflowHTTP = ["istio_requests_total", "istio_request_duration_milliseconds", "istio_request_bytes",
                        "istio_response_bytes"].map(overflow)
        overflowTCP = ["istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
                       "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"].map(overflow)
    }

    public static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// One finished HTTP request.
    public func recordRequest(_ traffic: TrafficLabels, responseCode: Int, grpcStatus: String = "", flags: String = "-",
                              durationMilliseconds: Double, requestBytes: Int, responseBytes: Int) {
        var none = RecentSeries()
        recordRequest(traffic, responseCode: responseCode, grpcStatus: grpcStatus, flags: flags,
                      durationMilliseconds: durationMilliseconds, requestBytes: requestBytes, responseBytes: responseBytes,
                      recent: &none)
    }

    /// The series a connection's requests reported to lately. They nearly
    /// always share a few label sets, built from the same strings: comparing
    /// those (by their storage, first) costs less than hashing every label
    /// and looking the set up under the table's lock on each request.
    /// Series are never dropped from the table, so a kept one stays current.
    public struct RecentSeries: Sendable {
        fileprivate var entries: [(key: HTTPKey, series: HTTPSeries)] = []
        fileprivate var next = 0
        public init() {}

        fileprivate static let capacity = 4

        fileprivate func find(_ key: HTTPKey) -> HTTPSeries? {
            for e in entries where e.key == key { return e.series }
            return nil
        }

        fileprivate mutating func keep(_ key: HTTPKey, _ series: HTTPSeries) {
            if entries.count < Self.capacity {
                entries.append((key, series))
            } else {
                entries[next] = (key, series)
                next = (next + 1) % Self.capacity
            }
        }
    }

    /// One finished HTTP request, looked up first among a connection's recent series.
    public func recordRequest(_ traffic: TrafficLabels, responseCode: Int, grpcStatus: String = "", flags: String = "-",
                              durationMilliseconds: Double, requestBytes: Int, responseBytes: Int,
                              recent: inout RecentSeries) {
        guard enabled else { return }
        let key = HTTPKey(traffic: traffic, code: responseCode, grpcStatus: grpcStatus, flags: flags)
        let series: HTTPSeries
        if let kept = recent.find(key) {
            series = kept
        } else {
            if let held = http.withLock({ table -> HTTPSeries? in
                if let s = table[key] { return s }
                if table.count >= maxSeriesPerMetric { return nil }
                let s = makeHTTPSeries(labels(key))
                table[key] = s
                return s
            }) {
                series = held
                recent.keep(key, held)
            } else {
                // Folded past the cap: counted as overflow each time, so never kept.
                series = overflowHTTPSeries(key)
            }
        }
        series.requests.increment()
        series.duration.record(durationMilliseconds)
        series.requestBytes.record(Double(requestBytes))
        series.responseBytes.record(Double(responseBytes))
    }

    /// A TCP connection opened: its counters, to be fed as bytes flow and
    /// when it closes.
    public func openConnection(_ traffic: TrafficLabels, flags: String = "-") -> TCPSeries {
        guard enabled else { return discard }
        let key = TCPKey(traffic: traffic, flags: flags)
        let series = tcp.withLock { table -> TCPSeries? in
            if let s = table[key] { return s }
            if table.count >= maxSeriesPerMetric { return nil }
            let s = makeTCPSeries(tcpLabels(key))
            table[key] = s
            return s
        } ?? overflowTCPSeries(key)
        series.opened.increment()
        return series
    }

    /// Distinct label sets held (for tests and the agent's own metrics).
    public var seriesCount: (http: Int, tcp: Int) {
        (http.withLock { $0.count }, tcp.withLock { $0.count })
    }

    // MARK: series

    private func overflowHTTPSeries(_ key: HTTPKey) -> HTTPSeries {
        for c in overflowHTTP { c.increment() }
        var folded = key
        folded.traffic = Self.folded(key.traffic)
        folded.code = 0
        folded.grpcStatus = "overflow"
        folded.flags = "overflow"
        // Always created, past the cap: there is one per reporter, protocol and policy.
        return http.withLock { table in
            if let s = table[folded] { return s }
            let s = makeHTTPSeries(labels(folded))
            table[folded] = s
            return s
        }
    }

    private func overflowTCPSeries(_ key: TCPKey) -> TCPSeries {
        for c in overflowTCP { c.increment() }
        var folded = key
        folded.traffic = Self.folded(key.traffic)
        folded.flags = "overflow"
        return tcp.withLock { table in
            if let s = table[folded] { return s }
            let s = makeTCPSeries(tcpLabels(folded))
            table[folded] = s
            return s
        }
    }

    /// The labels of the overflow series: reporter, protocol and policy kept,
    /// the rest folded.
    static func folded(_ t: TrafficLabels) -> TrafficLabels {
        var f = t
        f.source = overflowPeer
        f.destination = overflowPeer
        f.service = ServiceLabels(host: "overflow", name: "overflow", namespace: "overflow")
        return f
    }

    static let overflowPeer = PeerLabels(workload: "overflow", namespace: "overflow", principal: "overflow",
                                         app: "overflow", version: "overflow", canonicalService: "overflow",
                                         canonicalRevision: "overflow")

    private func makeHTTPSeries(_ labels: [(String, String)]) -> HTTPSeries {
        HTTPSeries(
            requests: registry.makeCounter(descriptor: Self.descriptor("istio_requests_total", "Requests, by source and destination."), labels: labels),
            duration: registry.makeValueHistogram(descriptor: Self.descriptor("istio_request_duration_milliseconds", "Request duration in milliseconds."),
                                                  labels: labels, buckets: Self.durationBuckets),
            requestBytes: registry.makeValueHistogram(descriptor: Self.descriptor("istio_request_bytes", "Request sizes (headers and body) in bytes."),
                                                      labels: labels, buckets: Self.sizeBuckets),
            responseBytes: registry.makeValueHistogram(descriptor: Self.descriptor("istio_response_bytes", "Response sizes (headers and body) in bytes."),
                                                       labels: labels, buckets: Self.sizeBuckets))
    }

    private func makeTCPSeries(_ labels: [(String, String)]) -> TCPSeries {
        TCPSeries(
            sent: registry.makeCounter(descriptor: Self.descriptor("istio_tcp_sent_bytes_total", "Bytes sent to the source (response direction) on TCP connections."), labels: labels),
            received: registry.makeCounter(descriptor: Self.descriptor("istio_tcp_received_bytes_total", "Bytes received from the source (request direction) on TCP connections."), labels: labels),
            opened: registry.makeCounter(descriptor: Self.descriptor("istio_tcp_connections_opened_total", "TCP connections opened."), labels: labels),
            closed: registry.makeCounter(descriptor: Self.descriptor("istio_tcp_connections_closed_total", "TCP connections closed."), labels: labels))
    }

    private func common(_ t: TrafficLabels) -> [(String, String)] {
        [
            ("reporter", t.reporter.rawValue),
            ("source_workload", t.source.workload),
            ("source_workload_namespace", t.source.namespace),
            ("source_principal", t.source.principal),
            ("source_app", t.source.app),
            ("source_version", t.source.version),
            ("source_cluster", t.source.workload == "unknown" ? "unknown" : cluster),
            ("source_canonical_service", t.source.canonicalService),
            ("source_canonical_revision", t.source.canonicalRevision),
            ("destination_workload", t.destination.workload),
            ("destination_workload_namespace", t.destination.namespace),
            ("destination_principal", t.destination.principal),
            ("destination_app", t.destination.app),
            ("destination_version", t.destination.version),
            ("destination_cluster", t.destination.workload == "unknown" ? "unknown" : cluster),
            ("destination_canonical_service", t.destination.canonicalService),
            ("destination_canonical_revision", t.destination.canonicalRevision),
            ("destination_service", t.service.host),
            ("destination_service_name", t.service.name),
            ("destination_service_namespace", t.service.namespace),
            ("request_protocol", t.requestProtocol),
        ]
    }

    private func labels(_ k: HTTPKey) -> [(String, String)] {
        common(k.traffic) + [
            ("response_code", String(k.code)),
            ("grpc_response_status", k.grpcStatus),
            ("response_flags", k.flags),
            ("connection_security_policy", k.traffic.security.rawValue),
        ]
    }

    private func tcpLabels(_ k: TCPKey) -> [(String, String)] {
        common(k.traffic) + [
            ("response_flags", k.flags),
            ("connection_security_policy", k.traffic.security.rawValue),
        ]
    }
}
