import Foundation
import WeftCore
import Yams

/// weftd's node configuration (docs/weftd.md), validated: every error names
/// the field at fault, and unknown fields are refused rather than ignored.
public struct NodeConfig: Sendable, Equatable {
    public struct Namespace: Sendable, Equatable {
        public var name: NamespaceName
        public var mesh: Bool
    }

    public struct ExplicitWorkload: Sendable, Equatable {
        public var ref: WorkloadRef
        /// Relative to the cgroup root.
        public var cgroup: String
        public var netns: String?
    }

    /// Where the node's desired state comes from when it is not this file.
    public struct Control: Sendable, Equatable {
        /// `https://host:port` of weft-control: the first of ``servers``.
        public var server: String
        /// The mesh CA certificate (PEM) that weft-control's certificate chains to.
        public var caFile: String
        /// A one-time bootstrap token (`weftctl node token create`), read only
        /// until the node has its credential.
        public var tokenFile: String?
        /// Node credential and the last applied snapshot, kept across restarts.
        public var stateDir: String
        /// Every weft-control replica, in order (`servers:`, or just `server:`);
        /// the agent moves to the next one when the one in use fails.
        public var servers: [String] = []
    }

    /// weftd's DNS server for meshed workloads.
    public struct DNS: Sendable, Equatable {
        public var enabled = true
        public var port: UInt16 = 15053
        public var clusterDomain = "cluster.local"
        /// `ip` or `ip:port` / `[ipv6]:port`; empty: the nameservers of /etc/resolv.conf.
        public var upstreams: [(host: String, port: UInt16)] = []
        public var timeoutMs = 2000

        public static func == (a: DNS, b: DNS) -> Bool {
            a.enabled == b.enabled && a.port == b.port && a.clusterDomain == b.clusterDomain
                && a.upstreams.map(\.host) == b.upstreams.map(\.host) && a.upstreams.map(\.port) == b.upstreams.map(\.port)
                && a.timeoutMs == b.timeoutMs
        }
    }

    /// Metrics exporter, traces and access logs (docs/observability.md).
    public struct Telemetry: Sendable, Equatable {
        public var cluster = "weft"
        /// nil: no exporter (`metrics.address: off`).
        public var metricsHost: String? = "0.0.0.0"
        public var metricsPort = 15020
        public var maxSeriesPerMetric = 10_000
        /// nil: no tracing.
        public var tracingEndpoint: String?
        public var tracingSamplePercent: Double = 1
        public var tracingServiceName = "weftd"
        /// nil: no access log; "stdout" or an absolute path.
        public var accessLogOutput: String?
        public var accessLogSamplePercent: Double = 100
        public var accessLogNamespaces: [String: AccessLogRule] = [:]

        public struct AccessLogRule: Sendable, Equatable {
            public var enabled: Bool
            public var samplePercent: Double
        }
    }

    public var node: String
    public var telemetry = Telemetry()
    public var dns = DNS()
    /// nil: namespaces and workloads come from this file.
    public var control: Control?
    /// nil: the cgroup2 mount point.
    public var cgroupRoot: String?
    public var bpfRoot: String
    public var reconcileInterval: Duration
    public var outboundPort: UInt16
    /// HBONE port: where this node accepts tunnels and opens them on others.
    public var tunnelPort: Int = 15008
    /// Same-node legs between meshed workloads and the proxy move socket to
    /// socket (sockmap) rather than through loopback TCP. Restart to change:
    /// a connection's bytes must take one path from first to last.
    public var socketRedirect: Bool = true
    public var proxyMark: UInt32
    public var connectTimeoutMs: Int
    public var idleTimeoutSeconds: Int
    public var adminHost: String
    public var adminPort: Int
    public var exclusions: CaptureExclusions
    public var namespaces: [Namespace]
    public var workloads: [ExplicitWorkload]

    public static let defaultPath = "/etc/weft/weftd.yaml"
    public static let defaultExcludedCIDRs = ["127.0.0.0/8", "::1/128"]

    /// `ip`, `ip:port` or `[ipv6]:port`.
    static func hostPort(_ text: String, defaultPort: UInt16) -> (host: String, port: UInt16)? {
        if let ip = IPAddress(text) { return (ip.description, defaultPort) }
        guard let (ip, port) = IPAddress.parseEndpoint(text), port != 0 else { return nil }
        return (ip.description, port)
    }

    /// The nameservers of a resolv.conf, each on port 53.
    public static func resolvConfNameservers(_ text: String) -> [(host: String, port: UInt16)] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2, fields[0] == "nameserver", let ip = IPAddress(String(fields[1])) else { return nil }
            return (ip.description, 53)
        }
    }

    public static func load(path: String) throws -> NodeConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ValidationError(field: path, "cannot read the config file: \(error.localizedDescription)")
        }
        return try parse(yaml: text)
    }

    public static func parse(yaml text: String) throws -> NodeConfig {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw ValidationError(field: "(yaml)", "not valid YAML: \(error)")
        }
        guard let map = root?.mapping else {
            throw ValidationError(field: "(root)", "expected a mapping with at least `node:`")
        }
        let r = Reader(map: map, path: "")
        try r.allowOnly(["node", "cgroupRoot", "bpfRoot", "reconcileIntervalMs", "proxy", "admin", "capture", "namespaces", "workloads", "control", "dns", "telemetry"])

        let node = try r.string("node", required: true)!
        guard DNSLabel.isValid(node) else {
            throw ValidationError(field: "node", "\"\(node)\" must be lower-case letters, digits and '-' (1 to 63)")
        }
        var cfg = NodeConfig(
            node: node, control: nil,
            cgroupRoot: try r.string("cgroupRoot"),
            bpfRoot: try r.string("bpfRoot") ?? "/sys/fs/bpf/weft",
            reconcileInterval: .milliseconds(try r.int("reconcileIntervalMs", in: 50...60_000) ?? 500),
            outboundPort: 15001, proxyMark: 0x5746, connectTimeoutMs: 3000, idleTimeoutSeconds: 3600,
            adminHost: "127.0.0.1", adminPort: 15021,
            exclusions: CaptureExclusions(ports: [], cidrs: []), namespaces: [], workloads: [])
        for (field, value) in [("cgroupRoot", cfg.cgroupRoot), ("bpfRoot", cfg.bpfRoot)] {
            if let value, !value.hasPrefix("/") { throw ValidationError(field: field, "must be an absolute path") }
        }

        if let p = try r.sub("proxy") {
            try p.allowOnly(["outboundPort", "tunnelPort", "mark", "connectTimeoutMs", "idleTimeoutSeconds", "socketRedirect"])
            cfg.socketRedirect = try p.bool("socketRedirect") ?? true
            cfg.outboundPort = UInt16(try p.int("outboundPort", in: 1...65535) ?? 15001)
            cfg.tunnelPort = try p.int("tunnelPort", in: 1...65535) ?? 15008
            cfg.proxyMark = UInt32(try p.int("mark", in: 1...Int(UInt32.max)) ?? 0x5746)
            cfg.connectTimeoutMs = try p.int("connectTimeoutMs", in: 1...600_000) ?? 3000
            cfg.idleTimeoutSeconds = try p.int("idleTimeoutSeconds", in: 1...86_400 * 7) ?? 3600
        }
        if let a = try r.sub("admin") {
            try a.allowOnly(["address"])
            if let addr = try a.string("address") {
                guard let (ip, port) = IPAddress.parseEndpoint(addr) else {
                    throw ValidationError(field: "admin.address", "\"\(addr)\" must be ip:port or [ipv6]:port")
                }
                cfg.adminHost = ip.description
                cfg.adminPort = Int(port)
            }
        }
        if let t = try r.sub("telemetry") {
            try t.allowOnly(["cluster", "metrics", "tracing", "accessLog"])
            if let c = try t.string("cluster") {
                guard DNSLabel.isValid(c) else { throw ValidationError(field: "telemetry.cluster", "\"\(c)\" must be a DNS label") }
                cfg.telemetry.cluster = c
            }
            if let m = try t.sub("metrics") {
                try m.allowOnly(["address", "maxSeriesPerMetric"])
                if let addr = try m.string("address") {
                    if addr == "off" {
                        cfg.telemetry.metricsHost = nil
                    } else {
                        guard let (ip, port) = IPAddress.parseEndpoint(addr) else {
                            throw ValidationError(field: "telemetry.metrics.address", "\"\(addr)\" must be ip:port, [ipv6]:port or off")
                        }
                        cfg.telemetry.metricsHost = ip.description
                        cfg.telemetry.metricsPort = Int(port)
                    }
                }
                cfg.telemetry.maxSeriesPerMetric = try m.int("maxSeriesPerMetric", in: 1...1_000_000) ?? 10_000
            }
            if let tr = try t.sub("tracing") {
                try tr.allowOnly(["endpoint", "samplePercent", "serviceName"])
                if let e = try tr.string("endpoint") {
                    guard let url = URL(string: e), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                        throw ValidationError(field: "telemetry.tracing.endpoint", "\"\(e)\" must be an http(s) URL, such as http://jaeger:4318/v1/traces")
                    }
                    cfg.telemetry.tracingEndpoint = e
                }
                cfg.telemetry.tracingSamplePercent = try tr.percent("samplePercent") ?? 1
                if let n = try tr.string("serviceName") {
                    guard !n.isEmpty else { throw ValidationError(field: "telemetry.tracing.serviceName", "must not be empty") }
                    cfg.telemetry.tracingServiceName = n
                }
            }
            if let a = try t.sub("accessLog") {
                try a.allowOnly(["output", "samplePercent", "namespaces"])
                if let o = try a.string("output") {
                    guard o == "stdout" || o == "off" || o.hasPrefix("/") else {
                        throw ValidationError(field: "telemetry.accessLog.output", "\"\(o)\" must be stdout, off or an absolute file path")
                    }
                    cfg.telemetry.accessLogOutput = o == "off" ? nil : o
                }
                cfg.telemetry.accessLogSamplePercent = try a.percent("samplePercent") ?? 100
                if let ns = try a.sub("namespaces") {
                    for (k, _) in ns.map {
                        guard let name = k.string, (try? NamespaceName(name)) != nil else {
                            throw ValidationError(field: "telemetry.accessLog.namespaces", "\"\(k.string ?? "?")\" is not a namespace name")
                        }
                        guard let rule = try ns.sub(name) else { continue }
                        try rule.allowOnly(["enabled", "samplePercent"])
                        cfg.telemetry.accessLogNamespaces[name] = .init(enabled: try rule.bool("enabled") ?? true,
                                                                        samplePercent: try rule.percent("samplePercent") ?? 100)
                    }
                }
            }
        }
        if let d = try r.sub("dns") {
            try d.allowOnly(["enabled", "port", "clusterDomain", "upstreams", "timeoutMs"])
            cfg.dns.enabled = try d.bool("enabled") ?? true
            cfg.dns.port = UInt16(try d.int("port", in: 1...65535) ?? 15053)
            cfg.dns.timeoutMs = try d.int("timeoutMs", in: 100...30_000) ?? 2000
            if let domain = try d.string("clusterDomain") {
                let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
                guard !labels.isEmpty, labels.allSatisfy({ DNSLabel.isValid(String($0)) }) else {
                    throw ValidationError(field: "dns.clusterDomain", "\"\(domain)\" must be dot-separated DNS labels, such as cluster.local")
                }
                cfg.dns.clusterDomain = domain
            }
            if let ups = try d.list("upstreams") {
                cfg.dns.upstreams = try ups.enumerated().map { i, n in
                    guard let text = n.string, let parsed = Self.hostPort(text, defaultPort: 53) else {
                        throw ValidationError(field: "dns.upstreams[\(i)]", "must be an IP address, ip:port or [ipv6]:port")
                    }
                    return parsed
                }
            }
        }
        var cidrTexts = defaultExcludedCIDRs
        if let c = try r.sub("capture") {
            try c.allowOnly(["excludePorts", "excludeCIDRs"])
            if let ports = try c.list("excludePorts") {
                cfg.exclusions.ports = try ports.enumerated().map { i, n in
                    guard let v = n.int, (1...65535).contains(v) else {
                        throw ValidationError(field: "capture.excludePorts[\(i)]", "must be a port number 1 to 65535")
                    }
                    return UInt16(v)
                }
                guard cfg.exclusions.ports.count <= 256 else {
                    throw ValidationError(field: "capture.excludePorts", "at most 256 ports")
                }
            }
            if let cidrs = try c.list("excludeCIDRs") {
                cidrTexts = try cidrs.enumerated().map { i, n in
                    guard let s = n.string else { throw ValidationError(field: "capture.excludeCIDRs[\(i)]", "must be a string") }
                    return s
                }
            }
        }
        cfg.exclusions.cidrs = try cidrTexts.enumerated().map { i, s in
            try CIDR(s, field: "capture.excludeCIDRs[\(i)]")
        }
        if cfg.exclusions.cidrs.count > 256 {
            throw ValidationError(field: "capture.excludeCIDRs", "at most 256 prefixes")
        }

        var seen = Set<NamespaceName>()
        for (i, n) in (try r.list("namespaces") ?? []).enumerated() {
            guard let m = n.mapping else { throw ValidationError(field: "namespaces[\(i)]", "expected a mapping") }
            let e = Reader(map: m, path: "namespaces[\(i)].")
            try e.allowOnly(["name", "mesh"])
            let name = try NamespaceName(try e.string("name", required: true)!, field: "namespaces[\(i)].name")
            guard seen.insert(name).inserted else {
                throw ValidationError(field: "namespaces[\(i)].name", "\"\(name)\" is listed twice")
            }
            cfg.namespaces.append(Namespace(name: name, mesh: try e.bool("mesh") ?? false))
        }
        var seenWorkloads = Set<WorkloadRef>()
        for (i, n) in (try r.list("workloads") ?? []).enumerated() {
            let at = "workloads[\(i)]"
            guard let m = n.mapping else { throw ValidationError(field: at, "expected a mapping") }
            let e = Reader(map: m, path: at + ".")
            try e.allowOnly(["namespace", "name", "cgroup", "netns"])
            let ns = try NamespaceName(try e.string("namespace", required: true)!, field: at + ".namespace")
            guard seen.contains(ns) else {
                throw ValidationError(field: at + ".namespace", "namespace \"\(ns)\" is not listed under namespaces")
            }
            let ref = WorkloadRef(namespace: ns, name: try WorkloadName(try e.string("name", required: true)!, field: at + ".name"))
            guard seenWorkloads.insert(ref).inserted else {
                throw ValidationError(field: at + ".name", "workload \(ref) is listed twice")
            }
            let cgroup = try e.string("cgroup", required: true)!
            let parts = cgroup.split(separator: "/")
            guard !parts.isEmpty, !parts.contains(".."), !parts.contains(".") else {
                throw ValidationError(field: at + ".cgroup", "\"\(cgroup)\" must be a path below the cgroup root, without '..'")
            }
            let netns = try e.string("netns")
            if let netns, !netns.hasPrefix("/") {
                throw ValidationError(field: at + ".netns", "must be an absolute path such as /run/netns/NAME")
            }
            cfg.workloads.append(ExplicitWorkload(ref: ref, cgroup: parts.joined(separator: "/"), netns: netns))
        }
        if let c = try r.sub("control") {
            try c.allowOnly(["server", "servers", "caFile", "tokenFile", "stateDir"])
            let servers = try controlServers(c)
            let control = Control(
                server: servers[0],
                caFile: try c.string("caFile", required: true)!,
                tokenFile: try c.string("tokenFile"),
                stateDir: try c.string("stateDir") ?? "/var/lib/weft",
                servers: servers)
            for (field, value) in [("control.caFile", control.caFile), ("control.stateDir", control.stateDir), ("control.tokenFile", control.tokenFile ?? "/")] {
                if !value.hasPrefix("/") { throw ValidationError(field: field, "must be an absolute path") }
            }
            if !cfg.namespaces.isEmpty {
                throw ValidationError(field: "namespaces", "not allowed together with control: weft-control decides which namespaces are meshed")
            }
            if !cfg.workloads.isEmpty {
                throw ValidationError(field: "workloads", "not allowed together with control: declare workloads through weft-control")
            }
            cfg.control = control
        }
        return cfg
    }

    /// `control.server` (one replica) or `control.servers` (a list of replicas), each an https:// URL.
    private static func controlServers(_ c: Reader) throws -> [String] {
        let single = try c.string("server")
        let list = try c.list("servers")
        var servers: [String]
        var field: (Int) -> String
        switch (single, list) {
        case (let one?, nil):
            servers = [one]
            field = { _ in "control.server" }
        case (nil, let many?):
            servers = try many.enumerated().map { i, n in
                guard case .scalar(let s) = n, !s.string.isEmpty else { throw ValidationError(field: "control.servers[\(i)]", "must be an https:// URL") }
                return s.string
            }
            guard !servers.isEmpty else { throw ValidationError(field: "control.servers", "must list at least one weft-control URL") }
            field = { "control.servers[\($0)]" }
        case (_?, _?):
            throw ValidationError(field: "control.servers", "give either server: (one weft-control) or servers: (a list of replicas), not both")
        case (nil, nil):
            throw ValidationError(field: "control.server", "is required (or servers:, a list of weft-control replicas)")
        }
        for (i, server) in servers.enumerated() {
            guard server.hasPrefix("https://"), server.count > "https://".count else {
                throw ValidationError(field: field(i), "\"\(server)\" must be an https:// URL: the control API is only spoken over TLS")
            }
            if servers[..<i].contains(server) { throw ValidationError(field: field(i), "\(server) is listed twice") }
        }
        return servers
    }

    /// The namespaces and workloads a control-plane snapshot asks of this node.
    /// Entries that this node cannot use are skipped and named in `skipped`,
    /// never guessed at.
    public static func desiredState(from snapshot: NodeSnapshot, node: String)
        -> (namespaces: [Namespace], workloads: [ExplicitWorkload], skipped: [String]) {
        var namespaces: [Namespace] = []
        var skipped: [String] = []
        var known = Set<NamespaceName>()
        for ns in snapshot.namespaces {
            guard let name = try? NamespaceName(ns.name), known.insert(name).inserted else {
                skipped.append("namespace \(ns.name)")
                continue
            }
            namespaces.append(Namespace(name: name, mesh: ns.mesh))
        }
        var workloads: [ExplicitWorkload] = []
        for w in snapshot.workloads where w.node == node {
            guard let ns = try? NamespaceName(w.namespace), known.contains(ns), let name = try? WorkloadName(w.name) else {
                skipped.append("workload \(w.namespace)/\(w.name)")
                continue
            }
            let path: String
            if let unit = w.unit, (try? WorkloadName(unit)) != nil {
                path = "\(SystemdNames.slicePath(for: ns))/\(unit)"
            } else if let cgroup = w.cgroup {
                let parts = cgroup.split(separator: "/")
                guard !parts.isEmpty, !parts.contains(".."), !parts.contains(".") else {
                    skipped.append("workload \(w.namespace)/\(w.name)")
                    continue
                }
                path = parts.joined(separator: "/")
            } else {
                skipped.append("workload \(w.namespace)/\(w.name)")
                continue
            }
            if let netns = w.netns, !netns.hasPrefix("/") {
                skipped.append("workload \(w.namespace)/\(w.name)")
                continue
            }
            workloads.append(ExplicitWorkload(ref: WorkloadRef(namespace: ns, name: name), cgroup: path, netns: w.netns))
        }
        return (namespaces, workloads, skipped)
    }
}

/// Walks a YAML mapping, naming fields by their full path in errors.
private struct Reader {
    let map: Node.Mapping
    let path: String

    func allowOnly(_ keys: Set<String>) throws {
        for (k, _) in map {
            guard let key = k.string else { throw ValidationError(field: path + "(key)", "keys must be strings") }
            if !keys.contains(key) {
                throw ValidationError(field: path + key, "unknown field (allowed: \(keys.sorted().joined(separator: ", ")))")
            }
        }
    }

    func node(_ key: String) -> Node? {
        guard let n = map[key] else { return nil }
        if case .scalar(let s) = n, s.tag == Tag(.null) || s.string == "~" || (s.string.isEmpty && s.style == .plain) { return nil }
        return n
    }

    func string(_ key: String, required: Bool = false) throws -> String? {
        guard let n = node(key) else {
            if required { throw ValidationError(field: path + key, "is required") }
            return nil
        }
        guard case .scalar(let s) = n else { throw ValidationError(field: path + key, "must be a string") }
        return s.string
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let n = node(key) else { return nil }
        guard let v = n.int ?? parseHex(n.string) else {
            throw ValidationError(field: path + key, "must be a whole number")
        }
        guard range.contains(v) else {
            throw ValidationError(field: path + key, "must be \(range.lowerBound) to \(range.upperBound), not \(v)")
        }
        return v
    }

    /// A percentage, 0 to 100, fractions allowed.
    func percent(_ key: String) throws -> Double? {
        guard let n = node(key) else { return nil }
        guard let v = n.float ?? n.int.map(Double.init) else {
            throw ValidationError(field: path + key, "must be a number from 0 to 100")
        }
        guard (0...100).contains(v) else {
            throw ValidationError(field: path + key, "must be 0 to 100, not \(v)")
        }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        guard let n = node(key) else { return nil }
        guard let b = n.bool else { throw ValidationError(field: path + key, "must be true or false") }
        return b
    }

    func list(_ key: String) throws -> [Node]? {
        guard let n = node(key) else { return nil }
        guard let seq = n.sequence else { throw ValidationError(field: path + key, "must be a list") }
        return Array(seq)
    }

    func sub(_ key: String) throws -> Reader? {
        guard let n = node(key) else { return nil }
        guard let m = n.mapping else { throw ValidationError(field: path + key, "must be a mapping") }
        return Reader(map: m, path: path + key + ".")
    }

    private func parseHex(_ s: String?) -> Int? {
        guard let s, s.hasPrefix("0x") else { return nil }
        return Int(s.dropFirst(2), radix: 16)
    }
}

extension NodeConfig {
    /// What a reload may change while weftd runs. The node's identity, its
    /// folders, the proxy's port, mark and timeouts, and the admin address are
    /// fixed at start: the proxy and the eBPF programs must agree on the port
    /// and the mark at every instant, or the proxy's own connections would be
    /// captured. Returns the configuration to apply and the fields whose new
    /// values wait for a restart. Under weft-control the file cannot change
    /// namespaces or workloads either.
    public func reloaded(from fresh: NodeConfig) -> (NodeConfig, restartOnly: [String]) {
        var applied = fresh
        var restartOnly: [String] = []
        func keep<T: Equatable>(_ name: String, _ path: WritableKeyPath<NodeConfig, T>) {
            if applied[keyPath: path] != self[keyPath: path] {
                restartOnly.append(name)
                applied[keyPath: path] = self[keyPath: path]
            }
        }
        keep("node", \.node)
        keep("bpfRoot", \.bpfRoot)
        keep("cgroupRoot", \.cgroupRoot)
        keep("control", \.control)
        keep("proxy.outboundPort", \.outboundPort)
        keep("proxy.tunnelPort", \.tunnelPort)
        keep("dns", \.dns)
        keep("telemetry", \.telemetry)
        keep("proxy.mark", \.proxyMark)
        keep("proxy.socketRedirect", \.socketRedirect)
        keep("proxy.connectTimeoutMs", \.connectTimeoutMs)
        keep("proxy.idleTimeoutSeconds", \.idleTimeoutSeconds)
        keep("admin.address", \.adminHost)
        keep("admin.address", \.adminPort)
        if applied.control != nil {
            applied.namespaces = namespaces
            applied.workloads = workloads
        }
        return (applied, Array(Set(restartOnly)).sorted())
    }
}
