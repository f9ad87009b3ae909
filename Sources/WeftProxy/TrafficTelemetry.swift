import Foundation
import NIOCore
import Synchronization
import WeftCore
import WeftHTTP
import WeftIdentity
import WeftTelemetry

/// Labels for Istio's metrics, access logs and spans, from what the proxy
/// knows of each end: the mesh directory (identity, labels) for workloads
/// it knows, the verified peer certificate plus the source's baggage for a
/// tunnel's client.
extension NodeProxy {
    func peerLabels(_ entry: MeshDirectory.Entry) -> PeerLabels {
        PeerLabels(workload: entry.ref.name.rawValue, namespace: entry.ref.namespace.rawValue,
                   principal: entry.identity, labels: entry.labels)
    }

    /// The dialling workload of this node.
    func sourceLabels(_ ref: WorkloadRef?) -> PeerLabels {
        guard let ref else { return .unknown }
        if let entry = mesh.current.entry(ref) { return peerLabels(entry) }
        // Without a control plane: the name is known, the identity is not.
        return PeerLabels(workload: ref.name.rawValue, namespace: ref.namespace.rawValue, principal: nil, labels: [:])
    }

    func destinationLabels(_ hop: Hop) -> PeerLabels {
        hop.destinationEntry.map(peerLabels) ?? .unknown
    }

    func serviceLabels(_ service: (namespace: String, name: String)?) -> ServiceLabels {
        guard let service else { return .unknown }
        return telemetry.serviceLabels(namespace: service.namespace, name: service.name)
    }

    /// The source proxy's view of a connection or request over `hop`.
    func sourceTraffic(source: PeerLabels, hop: Hop, service: (namespace: String, name: String)?,
                       protocol: String) -> TrafficLabels {
        TrafficLabels(reporter: .source, source: source, destination: destinationLabels(hop),
                      service: serviceLabels(service), requestProtocol: `protocol`,
                      security: hop.identities != nil ? .mutualTLS : .none)
    }

    /// A TCP connection's meter: the source's series, and the destination's
    /// too when the destination is a meshed workload of this node (this
    /// proxy is then the destination proxy as well).
    func meter(_ traffic: TrafficLabels, alsoDestination: Bool, upstream: String, transport: String) -> ConnectionMeter {
        var series = [telemetry.metrics.openConnection(traffic)]
        var reporters = [traffic]
        if alsoDestination {
            let d = traffic.reported(by: .destination)
            series.append(telemetry.metrics.openConnection(d))
            reporters.append(d)
        }
        let logged = reporters.filter { t in
            telemetry.accessLog?.shouldLog(namespace: t.reporter == .source ? t.source.namespace : t.destination.namespace) ?? false
        }
        return ConnectionMeter(series: series, accessLog: telemetry.accessLog, logged: logged, upstream: upstream, transport: transport)
    }

    /// Headers for an HBONE CONNECT: who the source is (W3C baggage, as
    /// Istio's HBONE carries it) for the destination's telemetry, and the
    /// protocol of the stream when the source proxy speaks HTTP in it.
    func connectHeaders(source: PeerLabels, protocol: String?) -> [(String, String)] {
        var h = [("baggage", Baggage.encode(source))]
        if let `protocol` { h.append(("x-weft-protocol", `protocol`)) }
        return h
    }
}

/// The source workload's metadata on a CONNECT, in W3C baggage form.
/// Only telemetry reads it, and only when its namespace agrees with the
/// verified certificate: identity never comes from it.
enum Baggage {
    static func encode(_ p: PeerLabels) -> String {
        [("k8s.namespace.name", p.namespace), ("k8s.workload.name", p.workload), ("app", p.app),
         ("version", p.version), ("service.name", p.canonicalService), ("service.version", p.canonicalRevision)]
            .map { "\($0.0)=\(escape($0.1))" }.joined(separator: ",")
    }

    /// W3C baggage: `key=value` members split by commas (the first 32), a member's properties
    /// after `;` ignored, spaces and tabs around keys and values trimmed, values percent-decoded
    /// (left as they came when that fails). Read over the header's bytes: with Foundation's
    /// trimming and `removingPercentEncoding`, this took about 300,000 instructions per HBONE
    /// stream the destination accepted (callgrind).
    static func decode(_ header: String) -> [String: String] {
        var out: [String: String] = [:]
        for member in header.utf8.split(separator: UInt8(ascii: ",")).prefix(32) {
            let kv = member.prefix { $0 != UInt8(ascii: ";") }
            guard let eq = kv.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let key = trimmed(kv[..<eq]), value = trimmed(kv[kv.index(after: eq)...])
            out[String(decoding: key, as: UTF8.self)] = percentDecoded(value)
        }
        return out
    }

    private static func trimmed(_ s: Substring.UTF8View.SubSequence) -> Substring.UTF8View.SubSequence {
        let isSpace = { (b: UInt8) in b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }
        guard let first = s.firstIndex(where: { !isSpace($0) }), let last = s.lastIndex(where: { !isSpace($0) }) else {
            return s[s.endIndex...]
        }
        return s[first...last]
    }

    /// `%XX` sequences decoded; the value as it came when one is malformed or the decoded bytes
    /// are not UTF-8 (where `removingPercentEncoding` gives nil).
    private static func percentDecoded(_ s: Substring.UTF8View.SubSequence) -> String {
        let raw = String(decoding: s, as: UTF8.self)
        guard s.contains(UInt8(ascii: "%")) else { return raw }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(s.count)
        var i = s.startIndex
        while i != s.endIndex {
            guard s[i] == UInt8(ascii: "%") else {
                bytes.append(s[i])
                i = s.index(after: i)
                continue
            }
            let h = s.index(after: i)
            guard h != s.endIndex, s.index(after: h) != s.endIndex,
                  let hi = PathNormalization.hexValue(s[h]), let lo = PathNormalization.hexValue(s[s.index(after: h)]) else { return raw }
            bytes.append(hi << 4 | lo)
            i = s.index(h, offsetBy: 2)
        }
        return String(validating: bytes, as: UTF8.self) ?? raw
    }

    /// The source's labels at the destination: the principal and namespace from
    /// the certificate's verified SPIFFE ID; the rest from the baggage when it
    /// names that namespace, else unknown.
    static func sourceLabels(peer: SpiffeID, baggage: String?) -> PeerLabels {
        let principal = peer.uri
        guard case .workload(let namespace, _) = peer.kind else {
            var p = PeerLabels.unknown
            p.principal = principal
            return p
        }
        let ns = namespace.rawValue
        let b = baggage.map(decode) ?? [:]
        guard b["k8s.namespace.name"] == ns, let workload = b["k8s.workload.name"], !workload.isEmpty else {
            var p = PeerLabels.unknown
            p.namespace = ns
            p.principal = principal
            return p
        }
        return PeerLabels(workload: workload, namespace: ns, principal: principal, app: b["app"] ?? "unknown",
                          version: b["version"] ?? "unknown", canonicalService: b["service.name"] ?? workload,
                          canonicalRevision: b["service.version"] ?? "latest")
    }

    /// Built once: a CharacterSet union per CONNECT cost more than the rest of the request.
    private static let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~/:"))
    private static let plain = ByteClass("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/:")

    private static func escape(_ s: String) -> String {
        // Names and labels are nearly always plain ASCII: nothing to encode.
        if s.utf8.allSatisfy(plain.contains) { return s }
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

/// Feeds one relayed TCP connection's bytes and close into its istio_tcp_*
/// series (as they flow, so long connections show up before they end) and
/// writes its access log line when it closes.
final class ConnectionMeter: Sendable {
    private let series: [MeshMetrics.TCPSeries]
    private let accessLog: AccessLog?
    private let logged: [TrafficLabels]
    private let upstream: String
    private let transport: String
    private let received = Atomic<Int>(0)
    private let sent = Atomic<Int>(0)
    private let started = Date()
    private let startedAt = NIODeadline.now()
    private let done = Atomic<Bool>(false)

    init(series: [MeshMetrics.TCPSeries], accessLog: AccessLog?, logged: [TrafficLabels], upstream: String, transport: String) {
        self.transport = transport
        self.series = series
        self.accessLog = accessLog
        self.logged = logged
        self.upstream = upstream
    }

    /// Bytes from the source towards the destination.
    func request(_ n: Int) {
        received.add(n, ordering: .relaxed)
        for s in series { s.receivedBytes(n) }
    }

    /// Bytes from the destination back to the source.
    func response(_ n: Int) {
        sent.add(n, ordering: .relaxed)
        for s in series { s.sentBytes(n) }
    }

    func closed() {
        guard !done.exchange(true, ordering: .relaxed) else { return }
        for s in series { s.connectionClosed() }
        guard let accessLog, !logged.isEmpty else { return }
        let ms = Double((NIODeadline.now() - startedAt).nanoseconds) / 1e6
        for t in logged {
            accessLog.append(AccessLogRecord(startTime: started, durationMilliseconds: ms, traffic: t, responseFlags: "-",
                                             bytesReceived: received.load(ordering: .relaxed),
                                             bytesSent: sent.load(ordering: .relaxed), upstreamHost: upstream,
                                             upstreamTransport: transport))
        }
    }
}
