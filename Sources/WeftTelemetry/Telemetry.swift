import Foundation
import Prometheus

/// Everything the node proxy reports through: Istio's metrics, the access
/// log (nil when off) and tracing (nil when off), and the labels they share.
public final class Telemetry: Sendable {
    public let metrics: MeshMetrics
    public let accessLog: AccessLog?
    public let tracing: MeshTracing?
    /// For service host names: `<name>.<namespace>.svc.<clusterDomain>`.
    public let clusterDomain: String

    public init(metrics: MeshMetrics, accessLog: AccessLog?, tracing: MeshTracing?, clusterDomain: String) {
        self.metrics = metrics
        self.accessLog = accessLog
        self.tracing = tracing
        self.clusterDomain = clusterDomain
    }

    /// Metrics into a private registry; no logs, no traces.
    public static func metricsOnly(clusterDomain: String = "cluster.local") -> Telemetry {
        Telemetry(metrics: MeshMetrics(registry: PrometheusCollectorRegistry()), accessLog: nil, tracing: nil,
                  clusterDomain: clusterDomain)
    }

    public func serviceLabels(namespace: String, name: String) -> ServiceLabels {
        ServiceLabels(host: "\(name).\(namespace).svc.\(clusterDomain)", name: name, namespace: namespace)
    }
}

/// The standard `process_*` metrics, read from /proc when scraped.
public struct ProcessMetrics: Sendable {
    private let cpu: Gauge
    private let rss: Gauge
    private let vsize: Gauge
    private let start: Gauge
    private let fds: Gauge
    private let maxFds: Gauge

    public init(registry: PrometheusCollectorRegistry) {
        func g(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MeshMetrics.descriptor(name, help))
        }
        // A gauge named *_total would confuse some tools; Prometheus' own
        // client exposes process_cpu_seconds_total as a counter, set from /proc,
        // which swift-prometheus' Counter cannot be set to: a gauge it is.
        cpu = g("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
        rss = g("process_resident_memory_bytes", "Resident memory size in bytes.")
        vsize = g("process_virtual_memory_bytes", "Virtual memory size in bytes.")
        start = g("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")
        fds = g("process_open_fds", "Number of open file descriptors.")
        maxFds = g("process_max_fds", "Maximum number of open file descriptors.")
    }

    public func update() {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            // Fields after the command name: state is field 3; utime 14, stime 15,
            // starttime 22, vsize 23, rss 24 (1-based, see proc(5)).
            let f = stat[stat.index(after: close)...].split(separator: " ").map(String.init)
            func field(_ n: Int) -> Double { Double(f.count > n - 3 ? f[n - 3] : "0") ?? 0 }
            cpu.set((field(14) + field(15)) / ticks)
            vsize.set(field(23))
            rss.set(field(24) * page)
            if let uptime = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
               let up = Double(uptime.split(separator: " ").first ?? "") {
                let boot = Date().timeIntervalSince1970 - up
                start.set(boot + field(22) / ticks)
            }
        }
        if let list = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            fds.set(Double(list.count))
        }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFds.set(Double(limit.rlim_cur)) }
    }
}
