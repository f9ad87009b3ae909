import Foundation
import Prometheus
import Synchronization
import WeftBPF
import WeftCore
import WeftProxy
import WeftTelemetry

/// The node agent's own `weft_*` metrics and `process_*`, refreshed from the
/// agent's published state when Prometheus scrapes (on the exporter's own
/// thread, never on the data path). Series of workloads, identities or maps
/// that are gone are removed, so a scrape shows only what exists.
final class AgentMetrics: Sendable {
    /// What the agent publishes at each reconcile for the exporter.
    struct State: Sendable {
        var report: CaptureReport?
        var repairsByWorkload: [String: Int] = [:]
        var maps: [(name: String, entries: Int, maxEntries: Int)] = []
        var programs: [(name: String, runCount: UInt64, runTimeNanoseconds: UInt64)] = []
        /// PeerAuthentication STRICT refusals by workload (namespace/name).
        var strictRefused: [String: UInt64] = [:]
        var certificateExpiry: [String: Date] = [:]
        var appliedVersion: Int64?
        /// nil: no control plane configured.
        var controlConnected: Bool?
    }

    let registry: PrometheusCollectorRegistry
    private let process: ProcessMetrics
    private let labelled = Mutex<[String: Gauge]>([:])
    private let counters = Mutex<[String: (counter: Counter, last: Double)]>([:])
    private let connectionsOpen: Gauge
    private let connectionsTotal: Gauge
    private let tunnelsOpened: Gauge
    private let handshakeFailures: Gauge
    private let inboundRefused: Gauge

    init(registry: PrometheusCollectorRegistry, version: String) {
        self.registry = registry
        process = ProcessMetrics(registry: registry)
        func g(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MeshMetrics.descriptor(name, help))
        }
        registry.makeGauge(descriptor: MeshMetrics.descriptor("weft_build_info", "weftd's version."),
                           labels: [("version", version)]).set(Double(1))
        connectionsOpen = g("weft_proxy_connections_open", "Connections the node proxy holds open now.")
        // Totals read from the proxy's own counters; gauges because
        // swift-prometheus counters only increase by steps.
        connectionsTotal = g("weft_proxy_connections_total", "Connections the node proxy accepted.")
        tunnelsOpened = g("weft_hbone_tunnels_opened_total", "Outbound HBONE tunnel connections opened.")
        handshakeFailures = g("weft_hbone_handshake_failures_total", "HBONE TLS handshakes that failed, either way.")
        inboundRefused = g("weft_hbone_inbound_refused_total", "Inbound HBONE tunnels or streams refused.")
    }

    func refresh(_ s: State, stats: ProxyStats.Snapshot?) {
        process.update()
        if let stats {
            connectionsOpen.set(Double(stats.active))
            connectionsTotal.set(Double(stats.accepted))
            tunnelsOpened.set(Double(stats.tunnelsOpened))
            handshakeFailures.set(Double(stats.handshakeFailures))
            inboundRefused.set(Double(stats.inboundRefused))
        }
        var wanted: [(name: String, help: String, labels: [(String, String)], value: Double)] = []
        for w in s.report?.workloads ?? [] {
            let labels = [("workload_namespace", w.namespace), ("workload", w.name)]
            wanted.append(("weft_workload_captured", "1 when every capture hook is attached to the workload's cgroup.", labels, w.captured ? 1 : 0))
            wanted.append(("weft_workload_hooks_attached", "Capture hooks in effect on the workload's cgroup.", labels, Double(w.hooks.count)))
            wanted.append(("weft_workload_hooks_expected", "Capture hooks a meshed workload must have.", labels, Double(CaptureHookCount.value)))
        }
        for m in s.maps {
            wanted.append(("weft_bpf_map_entries", "Entries in an eBPF map.", [("map", m.name)], Double(m.entries)))
            wanted.append(("weft_bpf_map_max_entries", "Capacity of an eBPF map.", [("map", m.name)], Double(m.maxEntries)))
        }
        for (id, expiry) in s.certificateExpiry {
            wanted.append(("weft_certificate_expiry_timestamp_seconds", "When a workload certificate held by this node expires.",
                           [("identity", id)], expiry.timeIntervalSince1970))
        }
        if let v = s.appliedVersion {
            wanted.append(("weft_config_version", "The control-plane snapshot version applied.", [], Double(v)))
        }
        if let c = s.controlConnected {
            wanted.append(("weft_control_connected", "1 while the control API answers.", [], c ? 1 : 0))
        }
        setGauges(wanted)

        var counted: [(name: String, help: String, labels: [(String, String)], value: Double)] = []
        for w in s.report?.workloads ?? [] {
            counted.append(("weft_capture_repairs_total", "Capture hooks found missing and re-attached.",
                            [("workload_namespace", w.namespace), ("workload", w.name)],
                            Double(s.repairsByWorkload["\(w.namespace)/\(w.name)"] ?? 0)))
        }
        for p in s.programs {
            counted.append(("weft_bpf_program_run_count_total", "Runs of an eBPF program (kernel BPF statistics).",
                            [("program", p.name)], Double(p.runCount)))
            counted.append(("weft_bpf_program_run_time_seconds_total", "Time spent in an eBPF program (kernel BPF statistics).",
                            [("program", p.name)], Double(p.runTimeNanoseconds) / 1e9))
        }
        for (key, n) in s.strictRefused {
            let parts = key.split(separator: "/", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            counted.append(("weft_peer_authentication_refused_total",
                            "Plaintext connections into a STRICT workload dropped in the kernel.",
                            [("workload_namespace", parts[0]), ("workload", parts[1])], Double(n)))
        }
        for a in stats?.authorization ?? [] {
            let name = a.decision == "deny" ? "weft_authorization_denied_total" : "weft_authorization_audited_total"
            let help = a.decision == "deny" ? "Connections or requests an AuthorizationPolicy denied, by destination workload."
                : "Connections or requests an AUDIT AuthorizationPolicy matched, by destination workload."
            counted.append((name, help, [("workload_namespace", a.namespace), ("workload", a.workload), ("protocol", a.protocol)], Double(a.count)))
        }
        advanceCounters(counted)
    }

    func render() -> String {
        registry.emitToString()
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        name + "{" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
    }

    private func setGauges(_ wanted: [(name: String, help: String, labels: [(String, String)], value: Double)]) {
        labelled.withLock { held in
            var seen = Set<String>()
            for w in wanted {
                let k = Self.key(w.name, w.labels)
                seen.insert(k)
                let gauge = held[k] ?? registry.makeGauge(descriptor: MeshMetrics.descriptor(w.name, w.help), labels: w.labels)
                held[k] = gauge
                gauge.set(w.value)
            }
            for (k, gauge) in held where !seen.contains(k) {
                registry.unregisterGauge(gauge)
                held[k] = nil
            }
        }
    }

    /// Counters fed with the increase since the last scrape of a total the
    /// kernel or the agent keeps.
    private func advanceCounters(_ totals: [(name: String, help: String, labels: [(String, String)], value: Double)]) {
        counters.withLock { held in
            for t in totals {
                let k = Self.key(t.name, t.labels)
                var entry = held[k] ?? (registry.makeCounter(descriptor: MeshMetrics.descriptor(t.name, t.help), labels: t.labels), 0)
                if t.value > entry.last {
                    entry.counter.increment(by: t.value - entry.last)
                    entry.last = t.value
                }
                held[k] = entry
            }
        }
    }
}

enum CaptureHookCount {
    static let value = CaptureHook.allCases.count
}
