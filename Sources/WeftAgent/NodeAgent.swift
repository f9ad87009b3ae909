import CWeftShim
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import UnixSignals
import WeftBPF
import WeftCore
import WeftIdentity
import WeftProxy
import WeftTelemetry
import Prometheus

/// weftd's agent: loads capture, opens the proxy's listeners, and keeps the
/// node's attachments equal to its configuration (reconcile loop).
public actor NodeAgent: Service {
    private let configPath: String
    private var config: NodeConfig
    private var configStamp: Date?
    private var generation = 1
    private let logger: Logger
    /// What the admin endpoints read, shared without going through the actor.
    private final class Shared: Sendable {
        let report = Mutex<CaptureReport?>(nil)
        let reloadRequested = Atomic<Bool>(false)
        let stats = Mutex<ProxyStats?>(nil)
        let dns = Mutex<DNSStats?>(nil)
        let metricsState = Mutex(AgentMetrics.State())
    }

    private let shared = Shared()

    private var cgroupRoot = ""
    private var dataplane: CaptureDataplane?
    /// The proxy's half of same-node socket redirect is attached.
    private var redirectReady = false
    private var proxy: NodeProxy?
    private let directory = WorkloadDirectory()
    private var nodeNetns: NetworkNamespace?
    private var listeners: [UInt64: ProxyListeners] = [:]
    private var repairs = 0
    private var lastRepair: [String: Date] = [:]
    private var repairCount: [String: Int] = [:]
    /// Istio's metrics, access log, traces; the agent's own metrics.
    public nonisolated let telemetry: Telemetry
    private nonisolated let agentMetrics: AgentMetrics
    /// Control-plane state: whether a snapshot was ever applied, which one.
    private var synced = false
    public private(set) var appliedVersion: Int64 = 0
    private var snapshot: NodeSnapshot?
    /// The snapshot's AuthorizationPolicies and PeerAuthentications.
    private var securityPolicies = SnapshotPolicies()
    /// weft_inbound_stats as last read, per workload cgroup.
    private var inboundSeen: [UInt64: (plaintextAccepted: UInt64, strictRefused: UInt64)] = [:]
    /// STRICT refusals per workload (namespace/name), since weftd started.
    private var strictRefused: [String: UInt64] = [:]
    private var certificates: [SpiffeID: WorkloadCertificate] = [:]
    private var tunnelAddresses: [String] = []

    public init(configPath: String, config: NodeConfig, logger: Logger) throws {
        self.configPath = configPath
        self.config = config
        self.logger = logger
        self.configStamp = Self.modificationDate(configPath)
        let registry = PrometheusCollectorRegistry()
        let t = config.telemetry
        let accessLog = try t.accessLogOutput.map { output in
            try AccessLog(output: output == "stdout" ? .stdout : .file(output),
                          policy: AccessLogPolicy(defaults: .init(enabled: true, samplePercent: t.accessLogSamplePercent),
                                                  namespaces: t.accessLogNamespaces.mapValues { .init(enabled: $0.enabled, samplePercent: $0.samplePercent) }))
        }
        let tracing = try t.tracingEndpoint.map { endpoint in
            try MeshTracing(settings: .init(endpoint: endpoint, samplePercent: t.tracingSamplePercent,
                                            serviceName: t.tracingServiceName, node: config.node), logger: logger)
        }
        telemetry = Telemetry(metrics: MeshMetrics(registry: registry, cluster: t.cluster, maxSeriesPerMetric: t.maxSeriesPerMetric,
                                                       enabled: t.metricsHost != nil),
                              accessLog: accessLog, tracing: tracing, clusterDomain: config.dns.clusterDomain)
        agentMetrics = AgentMetrics(registry: registry, version: ControlSync.weftdVersion)
        shared.metricsState.withLock { $0.controlConnected = config.control == nil ? nil : false }
    }

    /// `/metrics` for Prometheus: Istio's series and the agent's own.
    public nonisolated func metricsRoute() -> AdminServer.Route {
        let shared = self.shared
        let metrics = self.agentMetrics
        return { path in
            guard path == "/metrics" || path == "/stats/prometheus" else { return nil }
            metrics.refresh(shared.metricsState.withLock { $0 }, stats: shared.stats.withLock { $0 }?.snapshot())
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
    }

    /// Whether the control API answered the last call (for weft_control_connected).
    nonisolated func controlReachable(_ up: Bool) {
        shared.metricsState.withLock { $0.controlConnected = up }
    }

    // MARK: admin view (any thread)

    /// The admin routes, served off the data path.
    public nonisolated func adminRoute() -> AdminServer.Route {
        let shared = self.shared
        return { path in
            switch path {
            case "/healthz/ready":
                let ready = shared.report.withLock { $0?.ready ?? false }
                return ready ? (.ok, "text/plain", "ready\n") : (.serviceUnavailable, "text/plain", "not ready\n")
            case "/debug/capture":
                guard var report = shared.report.withLock({ $0 }) else {
                    return (.serviceUnavailable, "text/plain", "starting\n")
                }
                if let dns = shared.dns.withLock({ $0 }) { report.dns = dns.snapshot() }
                if let stats = shared.stats.withLock({ $0 }) {
                    report.proxy = stats.snapshot()
                    for i in report.workloads.indices {
                        let w = report.workloads[i]
                        if let ref = try? WorkloadRef(namespace: NamespaceName(w.namespace), name: WorkloadName(w.name)) {
                            report.workloads[i].connections = stats.connections(by: ref)
                        }
                    }
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                let body = (try? encoder.encode(report)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
                return (.ok, "application/json", body + "\n")
            default:
                return nil
            }
        }
    }

    // MARK: lifecycle

    public func run() async throws {
        try await start()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [shared, logger] in
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    logger.info("SIGHUP: reloading configuration")
                    shared.reloadRequested.store(true, ordering: .relaxed)
                }
            }
            group.addTask {
                await cancelWhenGracefulShutdown {
                    await self.loop()
                }
            }
            if let tracing = telemetry.tracing {
                group.addTask { [logger] in
                    do {
                        try await tracing.service.run()
                    } catch {
                        logger.warning("trace export stopped", metadata: ["error": "\(error)"])
                    }
                }
            }
            if let log = telemetry.accessLog {
                group.addTask { await cancelWhenGracefulShutdown { await log.run() } }
            }
            if let control = config.control {
                let sync = ControlSync(settings: control, node: config.node, agent: self, logger: logger)
                group.addTask {
                    await cancelWhenGracefulShutdown { await sync.run() }
                }
            }
            await group.next()
            group.cancelAll()
        }
        await stop()
    }

    private func start() async throws {
        guard let root = config.cgroupRoot ?? Cgroups.cgroup2Mount() else {
            throw AgentError("no cgroup2 mount found in /proc/self/mountinfo; mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or set cgroupRoot")
        }
        guard weft_is_cgroup2(root) == 1 else {
            throw AgentError("cgroupRoot \(root) is not on a cgroup v2 mount; set cgroupRoot to a folder of the cgroup2 mount")
        }
        cgroupRoot = root
        let layout = PinLayout(root: config.bpfRoot, node: config.node)
        let dataplane = try CaptureDataplane(layout: layout, settings: captureSettings(config), logger: logger)
        self.dataplane = dataplane
        if config.socketRedirect { enableSocketRedirect(dataplane) }
        let proxy = NodeProxy(
            config: ProxyConfiguration(outboundPort: config.outboundPort, mark: config.proxyMark,
                                       connectTimeout: .milliseconds(Int64(config.connectTimeoutMs)),
                                       idleTimeout: .seconds(Int64(config.idleTimeoutSeconds)),
                                       tunnelPort: config.tunnelPort, dns: dnsSettings(config)),
            resolver: try dataplane.connectionTable(), workloads: directory, telemetry: telemetry, logger: logger)
        dataplane.enableRunTimeStats()
        self.proxy = proxy
        shared.stats.withLock { $0 = proxy.stats }
        shared.dns.withLock { $0 = proxy.dns?.stats }
        let node = try NetworkNamespace.node()
        nodeNetns = node
        listeners[node.inode] = try await proxy.listen(in: node)
        logger.info("node proxy listening", metadata: ["addresses": "\(listeners[node.inode]!.addresses)"])
        if config.control != nil {
            // Workload identities come from weft-control's CA: without it
            // there is nothing to present, so no HBONE listener.
            tunnelAddresses = try await proxy.listenForTunnels(netns: node)
            logger.info("HBONE listening (mutual TLS, HTTP/2 CONNECT)", metadata: ["addresses": "\(tunnelAddresses)"])
        }
        if let control = config.control, let persisted = NodeStateDir(path: control.stateDir).snapshot() {
            logger.info("applying the last snapshot from weft-control until it answers", metadata: ["version": "\(persisted.version)"])
            adopt(persisted)
        }
        await reconcile()
        if shared.report.withLock({ $0?.ready ?? false }) {
            logger.info("ready: capture is in place", metadata: ["node": "\(config.node)"])
            SystemdNotify.send("READY=1\nSTATUS=capture in place")
        }
    }

    private func loop() async {
        var wasReady = shared.report.withLock { $0?.ready ?? false }
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: config.reconcileInterval)
            } catch {
                return
            }
            reloadIfChanged()
            await reconcile()
            let ready = shared.report.withLock { $0?.ready ?? false }
            if ready && !wasReady {
                logger.info("ready: capture is in place")
                SystemdNotify.send("READY=1")
            }
            wasReady = ready
            SystemdNotify.send("WATCHDOG=1")
        }
    }

    /// Closes listeners; capture stays attached (pinned), so meshed
    /// workloads' connections are refused, not let through, until weftd is back.
    private func stop() async {
        SystemdNotify.send("STOPPING=1")
        for l in listeners.values { await l.close() }
        listeners.removeAll()
        await proxy?.shutdown()
        logger.info("stopped; capture stays attached and fails closed until weftd returns")
    }

    // MARK: configuration

    /// weftd's cgroup: read once, a process does not move by itself.
    private static let ownCgroupID: UInt64 = Cgroups.ownID() ?? 0

    private func captureSettings(_ c: NodeConfig) -> CaptureSettings {
        CaptureSettings(outboundPort: c.outboundPort, proxyMark: c.proxyMark, exclusions: c.exclusions,
                        dnsPort: c.dns.enabled ? c.dns.port : 0, proxyCgroupID: Self.ownCgroupID,
                        socketRedirect: c.socketRedirect && redirectReady)
    }

    /// Attaches the proxy's half of same-node socket redirect to weftd's own
    /// cgroup, then turns it on. Without it every leg takes the TCP path,
    /// which is slower and otherwise the same: a warning, not a failure.
    private func enableSocketRedirect(_ dataplane: CaptureDataplane) {
        let mount = Cgroups.cgroup2Mount()
        guard let own = Cgroups.ownPath(mount: mount) else {
            logger.warning("socket redirect off: weftd's cgroup v2 folder is unknown (see /proc/self/cgroup)")
            return
        }
        if own == mount {
            // Every socket on the node would run the proxy's sockops.
            logger.warning("socket redirect off: weftd runs in the root cgroup; start it from its unit (systemd/weftd.service)")
            return
        }
        do {
            try dataplane.ensureProxyAttached(cgroupPath: own)
            redirectReady = true
            try dataplane.write(captureSettings(config))
            logger.info("same-node legs move socket to socket (sockmap)", metadata: ["cgroup": "\(own)"])
        } catch {
            redirectReady = false
            logger.warning("socket redirect off: every leg takes the TCP path", metadata: ["error": "\(error)"])
        }
    }

    /// The DNS server's settings; upstreams default to the node's resolv.conf.
    private func dnsSettings(_ c: NodeConfig) -> DNSSettings? {
        guard c.dns.enabled else { return nil }
        var upstreams = c.dns.upstreams
        if upstreams.isEmpty {
            let text = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
            upstreams = NodeConfig.resolvConfNameservers(text)
            if upstreams.isEmpty {
                logger.warning("no nameserver in /etc/resolv.conf and no dns.upstreams: names outside the mesh get SERVFAIL")
            }
        }
        let addresses = upstreams.compactMap { try? SocketAddress(ipAddress: $0.host, port: Int($0.port)) }
        return DNSSettings(port: c.dns.port, clusterDomain: c.dns.clusterDomain, upstreams: addresses,
                           timeout: .milliseconds(Int64(c.dns.timeoutMs)))
    }

    private static func modificationDate(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    private func reloadIfChanged() {
        let stamp = Self.modificationDate(configPath)
        let forced = shared.reloadRequested.exchange(false, ordering: .relaxed)
        guard forced || stamp != configStamp else { return }
        configStamp = stamp
        let fresh: NodeConfig
        do {
            fresh = try NodeConfig.load(path: configPath)
        } catch {
            logger.error("configuration refused, keeping the previous one", metadata: ["path": "\(configPath)", "error": "\(error)"])
            return
        }
        guard fresh != config else { return }
        let (applied, restartOnly) = config.reloaded(from: fresh)
        if !restartOnly.isEmpty {
            logger.warning("these settings change only when weftd restarts; the rest is applied now",
                           metadata: ["unchanged": "\(restartOnly.joined(separator: ", "))"])
        }
        if captureSettings(applied) != captureSettings(config) {
            do {
                try dataplane?.write(captureSettings(applied))
            } catch {
                logger.error("could not write capture settings", metadata: ["error": "\(error)"])
                return
            }
        }
        config = applied
        generation += 1
        logger.info("configuration applied", metadata: ["generation": "\(generation)"])
    }

    // MARK: control plane

    /// Applies a snapshot from weft-control: its namespaces and this node's
    /// workloads replace the current ones, then one reconcile pass runs.
    func applySnapshot(_ s: NodeSnapshot) async {
        adopt(s)
        await reconcile()
        logger.info("snapshot applied", metadata: ["version": "\(s.version)"])
    }

    private func adopt(_ s: NodeSnapshot) {
        let desired = NodeConfig.desiredState(from: s, node: config.node)
        if !desired.skipped.isEmpty {
            logger.warning("snapshot entries this node cannot use were skipped", metadata: ["entries": "\(desired.skipped)"])
        }
        config.namespaces = desired.namespaces
        config.workloads = desired.workloads
        proxy?.services.replace(ServiceTable(snapshot: s))
        proxy?.mesh.replace(MeshDirectory(snapshot: s))
        proxy?.dns?.replace(s)
        proxy?.httpRoutes.replace(s)
        proxy?.trafficPolicies.replace(s)
        let policies = SnapshotPolicies(snapshot: s)
        if !policies.undecodable.isEmpty {
            logger.error("security policies this weftd cannot read are enforced as deny-all (AuthorizationPolicy) or STRICT (PeerAuthentication) for their namespace; upgrade weftd",
                         metadata: ["policies": "\(policies.undecodable)"])
        }
        securityPolicies = policies
        if proxy?.authorization.replace(s) == true {
            // Open connections a new policy denies are closed now, not at their next request.
            proxy?.revokeDeniedConnections()
        }
        snapshot = s
        // Certificates of workloads that left this node (or the mesh) are dropped.
        let wanted = Set(workloadIdentities().map(\.1))
        certificates = certificates.filter { wanted.contains($0.key) }
        proxy?.credentials.retain(only: Set(wanted.map(\.uri)))
        appliedVersion = s.version
        synced = true
        generation += 1
    }

    /// The identities this node must hold certificates for: its workloads in
    /// meshed namespaces, by their service accounts.
    func workloadIdentities() -> [(WorkloadRef, SpiffeID)] {
        guard let s = snapshot, let td = try? TrustDomain(s.trustDomain) else { return [] }
        let meshed = Set(s.namespaces.filter(\.mesh).map(\.name))
        return s.workloads.compactMap { w in
            guard w.node == config.node, meshed.contains(w.namespace),
                  let ns = try? NamespaceName(w.namespace), let name = try? WorkloadName(w.name),
                  let sa = try? ServiceAccountName(w.serviceAccount) else { return nil }
            return (WorkloadRef(namespace: ns, name: name), SpiffeID.workload(trustDomain: td, namespace: ns, serviceAccount: sa))
        }
    }

    func certificate(for id: SpiffeID) -> WorkloadCertificate? { certificates[id] }

    var isSynced: Bool { synced }

    func store(_ cert: WorkloadCertificate) {
        certificates[cert.spiffeID] = cert
        do {
            try proxy?.credentials.install(identity: cert.spiffeID.uri, certificatePEM: cert.certificatePEM,
                                           privateKeyPEM: cert.privateKeyPEM, caBundlePEM: cert.caBundlePEM,
                                           trustDomain: cert.spiffeID.trustDomain.name, notAfter: cert.certificate.notValidAfter)
        } catch {
            logger.error("cannot use the workload certificate for mTLS; keeping the previous one",
                         metadata: ["identity": "\(cert.spiffeID)", "error": "\(error)"])
        }
    }

    /// When the next certificate falls due for renewal (nil: none held).
    func nextRenewal(_ schedule: RenewalSchedule) -> Date? {
        certificates.values.map { schedule.renewAt($0.certificate) }.min()
    }

    /// The status report for weft-control.
    func nodeStatus() -> NodeStatus {
        let report = shared.report.withLock { $0 }
        let iso = ISO8601DateFormatter()
        let workloads = (report?.workloads ?? []).map { w in
            NodeStatus.WorkloadState(
                namespace: w.namespace, name: w.name, cgroup: w.cgroup, captured: w.captured,
                reason: w.captured ? nil : (config.namespaces.first { $0.name.rawValue == w.namespace }?.mesh == true
                    ? "capture hooks missing on the cgroup: \(Set(CaptureHook.allCases.map(\.rawValue)).subtracting(w.hooks).sorted())"
                    : "namespace mesh disabled"),
                netns: w.netns, hooksAttached: w.hooks.count, hooksExpected: CaptureHook.allCases.count, lastRepair: w.lastRepair)
        }
        let certs = certificates.values.map {
            NodeStatus.CertificateState(spiffeID: $0.spiffeID.uri, notAfter: iso.string(from: $0.certificate.notValidAfter))
        }.sorted { $0.spiffeID < $1.spiffeID }
        return NodeStatus(appliedVersion: appliedVersion, weftdVersion: ControlSync.weftdVersion, workloads: workloads, certificates: certs)
    }

    // MARK: reconcile

    private struct Discovered: Sendable {
        var ref: WorkloadRef
        var cgroup: String
        var explicitNetns: String?
        var meshed: Bool
        var pinKey: String?
    }

    private func slicePath(_ ns: NamespaceName) -> String {
        "\(cgroupRoot)/\(SystemdNames.slicePath(for: ns))"
    }

    /// One pass: attach what should be, repair what broke, detach what
    /// should not be, open listeners where workloads live, publish the state.
    private func reconcile() async {
        guard let dataplane, let proxy, let nodeNetns else { return }
        let now = Date()

        // 1. What should be attached.
        var desired: [String: AttachTarget] = [:]
        var nsReports: [CaptureReport.NamespaceReport] = []
        let enabled = Set(config.namespaces.filter(\.mesh).map(\.name))
        for ns in config.namespaces {
            let slice = slicePath(ns.name)
            if ns.mesh {
                if !Cgroups.exists(slice) {
                    // Made ahead of systemd so that capture is in place
                    // before the first unit of the namespace starts.
                    do { try Cgroups.create(slice) } catch {
                        logger.error("cannot create the namespace's slice cgroup", metadata: ["path": "\(slice)", "error": "\(error)"])
                    }
                }
                desired["namespaces/\(ns.name)"] = AttachTarget(pinKey: "namespaces/\(ns.name)", cgroupPath: slice)
            }
            nsReports.append(.init(name: ns.name.rawValue, mesh: ns.mesh, cgroup: slice, attached: false))
        }
        for w in config.workloads where enabled.contains(w.ref.namespace) {
            let path = "\(cgroupRoot)/\(w.cgroup)"
            let underSlice = enabled.contains { path.hasPrefix(slicePath($0) + "/") }
            if !underSlice && Cgroups.exists(path) {
                let key = "workloads/\(w.ref.namespace)/\(w.ref.name)"
                desired[key] = AttachTarget(pinKey: key, cgroupPath: path)
            }
        }

        // 2. Attach and repair.
        var attached = Set<String>()
        for (key, target) in desired.sorted(by: { $0.key < $1.key }) {
            do {
                let outcome = try dataplane.ensureAttached(target)
                attached.insert(key)
                switch outcome {
                case .repaired:
                    repairs += 1
                    lastRepair[key] = now
                    repairCount[key, default: 0] += 1
                    logger.warning("capture was missing and has been re-attached", metadata: ["target": "\(key)", "cgroup": "\(target.cgroupPath)"])
                case .attached:
                    logger.info("capture attached", metadata: ["target": "\(key)", "cgroup": "\(target.cgroupPath)"])
                case .adopted:
                    logger.info("capture adopted from a previous weftd", metadata: ["target": "\(key)"])
                case .unchanged:
                    break
                }
            } catch {
                logger.error("cannot attach capture", metadata: ["target": "\(key)", "error": "\(error)"])
            }
        }

        // 3. Detach what is no longer wanted (a namespace disabled, perhaps while weftd was down).
        for key in dataplane.attachedPinKeys() where desired[key] == nil {
            dataplane.detach(pinKey: key)
            lastRepair[key] = nil
            logger.info("capture detached", metadata: ["target": "\(key)"])
        }
        for i in nsReports.indices {
            nsReports[i].attached = attached.contains("namespaces/\(nsReports[i].name)")
        }

        // 4. Discover workloads.
        let found = Self.discoverWorkloads(config: config, cgroupRoot: cgroupRoot, enabled: enabled)
        let table = Self.cgroupTable(found)
        // A miss re-reads the slices themselves: the unit that dialled may
        // have been created since this pass.
        let (cfg, root) = (config, cgroupRoot)
        directory.replace(table) {
            Self.cgroupTable(Self.discoverWorkloads(config: cfg, cgroupRoot: root, enabled: enabled))
        }

        // 4b. PeerAuthentication, in the kernel: the namespace's mode on its
        // slice (for units not identified yet), each workload's own on its cgroup.
        writeMTLSModes(found, enabled: enabled)

        // 5. Listeners in every network namespace a meshed workload lives in.
        var neededNetns: [UInt64: String] = [:]  // inode -> a path to open it by
        var workloadNetns: [WorkloadRef: String] = [:]
        for w in found {
            var label = "node"
            if let path = w.explicitNetns {
                if let inode = try? NetworkNamespace.inodeOf(path: path), inode != nodeNetns.inode {
                    neededNetns[inode] = path
                    label = "netns:\(inode)"
                }
            } else {
                for cg in Cgroups.subtree(w.cgroup) {
                    for pid in Cgroups.pids(cg) {
                        let path = "/proc/\(pid)/ns/net"
                        if let inode = try? NetworkNamespace.inodeOf(path: path), inode != nodeNetns.inode {
                            if w.meshed { neededNetns[inode] = neededNetns[inode] ?? path }
                            label = "netns:\(inode)"
                        }
                    }
                }
            }
            workloadNetns[w.ref] = label
        }
        for (inode, path) in neededNetns where listeners[inode] == nil {
            do {
                let ns = try NetworkNamespace.open(path: path)
                listeners[inode] = try await proxy.listen(in: ns)
                logger.info("node proxy listening in a workload network namespace", metadata: ["netns": "\(ns)"])
            } catch {
                logger.error("cannot open the proxy listener in a workload's network namespace; its connections are refused",
                             metadata: ["netns": "\(path)", "error": "\(error)"])
            }
        }
        for (inode, l) in listeners where inode != nodeNetns.inode && neededNetns[inode] == nil {
            await l.close()
            listeners[inode] = nil
            logger.info("closed the proxy listener of a network namespace no longer used", metadata: ["netns": "\(l.netns)"])
        }

        // 6. Integrity, from the kernel's point of view, and publish.
        var reports: [CaptureReport.WorkloadReport] = []
        let iso = ISO8601DateFormatter()
        for w in found {
            let hooks = dataplane.effectiveHooks(onCgroup: w.cgroup)
            let repairedAt = w.pinKey.flatMap { lastRepair[$0] }
            let pids = Cgroups.subtree(w.cgroup).reduce(0) { $0 + Cgroups.pids($1).count }
            reports.append(.init(
                namespace: w.ref.namespace.rawValue, name: w.ref.name.rawValue, cgroup: w.cgroup,
                cgroupID: Cgroups.id(w.cgroup) ?? 0, netns: workloadNetns[w.ref] ?? "node",
                captured: w.meshed && hooks.count == CaptureHook.allCases.count,
                hooks: CaptureHook.allCases.filter(hooks.contains).map(\.rawValue),
                hooksExpected: CaptureHook.allCases.count, connections: 0, lastRepair: repairedAt.map { iso.string(from: $0) }, pids: pids))
        }
        let ready = desired.keys.allSatisfy { attached.contains($0) || !$0.hasPrefix("namespaces/") }
            && listeners[nodeNetns.inode] != nil
            && (config.control == nil || synced)
        var listenerReports = listeners.values.map { CaptureReport.ListenerReport(netns: "\($0.netns)", addresses: $0.addresses) }
            .sorted { $0.netns < $1.netns }
        if !tunnelAddresses.isEmpty {
            listenerReports.append(CaptureReport.ListenerReport(netns: "node (HBONE)", addresses: tunnelAddresses))
        }
        // Counted once per reconcile (each count walks a map's keys, one system call per entry).
        let mapStats = dataplane.mapStats()
        let report = CaptureReport(
            node: config.node, ready: ready, configGeneration: generation, repairs: repairs,
            namespaces: nsReports, workloads: reports, listeners: listenerReports,
            maps: Dictionary(mapStats.map { ($0.name, $0.entries) }, uniquingKeysWith: { a, _ in a }), appliedVersion: config.control == nil ? nil : appliedVersion,
            proxy: proxy.stats.snapshot())
        shared.report.withLock { $0 = report }
        var repairsByWorkload: [String: Int] = [:]
        for w in found {
            if let k = w.pinKey, let n = repairCount[k] { repairsByWorkload["\(w.ref.namespace.rawValue)/\(w.ref.name.rawValue)"] = n }
        }
        let (maps, programs) = (mapStats, dataplane.programStats())
        let version: Int64? = config.control == nil || !synced ? nil : appliedVersion
        let expiry = Dictionary(certificates.map { ($0.key.uri, $0.value.certificate.notValidAfter) }, uniquingKeysWith: { a, _ in a })
        shared.metricsState.withLock {
            $0.certificateExpiry = expiry
            $0.report = report
            $0.repairsByWorkload = repairsByWorkload
            $0.maps = maps
            $0.programs = programs
            $0.strictRefused = strictRefused
            $0.appliedVersion = version
        }
    }

    private func writeMTLSModes(_ found: [Discovered], enabled: Set<NamespaceName>) {
        guard let dataplane else { return }
        var entries = Set<CaptureDataplane.MTLSEntry>()
        for ns in enabled {
            guard let id = Cgroups.id(slicePath(ns)) else { continue }
            entries.insert(.init(cgroupID: id, port: 0,
                                 mode: EffectivePeerAuthentication.namespaceMode(securityPolicies.peerAuthentication, namespace: ns.rawValue)))
        }
        var labels: [WorkloadRef: [String: String]] = [:]
        for w in snapshot?.workloads ?? [] {
            if let ns = try? NamespaceName(w.namespace), let name = try? WorkloadName(w.name) {
                labels[WorkloadRef(namespace: ns, name: name)] = w.labels
            }
        }
        var byCgroup: [UInt64: WorkloadRef] = [:]
        for w in found where w.meshed {
            guard let id = Cgroups.id(w.cgroup) else { continue }
            byCgroup[id] = w.ref
            let effective = securityPolicies.peerAuthentication(namespace: w.ref.namespace.rawValue, labels: labels[w.ref] ?? [:])
            entries.insert(.init(cgroupID: id, port: 0, mode: effective.mode))
            for (port, mode) in effective.ports { entries.insert(.init(cgroupID: id, port: port, mode: mode)) }
        }
        do {
            if try dataplane.replaceMTLSModes(entries) {
                logger.info("PeerAuthentication modes written to the kernel", metadata: ["entries": "\(entries.count)"])
            }
        } catch {
            logger.error("cannot write PeerAuthentication modes to the kernel", metadata: ["error": "\(error)"])
        }
        // What the kernel counted since the last pass: plaintext let in is
        // reported as the destination's TCP connections (security "none").
        for (cgroup, now) in dataplane.inboundStats() {
            let before = inboundSeen[cgroup] ?? (0, 0)
            inboundSeen[cgroup] = now
            guard let ref = byCgroup[cgroup] else { continue }
            if now.plaintextAccepted > before.plaintextAccepted {
                proxy?.recordPlaintextInbound(ref, connections: Int(now.plaintextAccepted - before.plaintextAccepted))
            }
            if now.strictRefused > before.strictRefused {
                strictRefused["\(ref.namespace.rawValue)/\(ref.name.rawValue)", default: 0] += now.strictRefused - before.strictRefused
            }
        }
    }

    private static func discoverWorkloads(config: NodeConfig, cgroupRoot: String, enabled: Set<NamespaceName>) -> [Discovered] {
        func slicePath(_ ns: NamespaceName) -> String { "\(cgroupRoot)/\(SystemdNames.slicePath(for: ns))" }
        var out: [Discovered] = []
        var seen = Set<WorkloadRef>()
        for w in config.workloads {
            let path = "\(cgroupRoot)/\(w.cgroup)"
            guard Cgroups.exists(path) else { continue }
            let meshed = enabled.contains(w.ref.namespace)
            let key = enabled.contains { path.hasPrefix(slicePath($0) + "/") }
                ? "namespaces/\(w.ref.namespace)" : "workloads/\(w.ref.namespace)/\(w.ref.name)"
            out.append(Discovered(ref: w.ref, cgroup: path, explicitNetns: w.netns, meshed: meshed, pinKey: key))
            seen.insert(w.ref)
        }
        for ns in config.namespaces {
            let slice = slicePath(ns.name)
            for child in Cgroups.children(slice) {
                // A folder whose name is not a workload name is not a workload.
                guard let name = try? WorkloadName(child) else { continue }
                let ref = WorkloadRef(namespace: ns.name, name: name)
                let path = "\(slice)/\(child)"
                // A cgroup already named by an explicit entry is that workload.
                if seen.contains(ref) || out.contains(where: { $0.cgroup == path }) { continue }
                out.append(Discovered(ref: ref, cgroup: path, explicitNetns: nil, meshed: ns.mesh,
                                      pinKey: ns.mesh ? "namespaces/\(ns.name)" : nil))
            }
        }
        return out.sorted { $0.ref < $1.ref }
    }

    private static func cgroupTable(_ found: [Discovered]) -> [UInt64: WorkloadRef] {
        var table: [UInt64: WorkloadRef] = [:]
        for w in found {
            for cg in Cgroups.subtree(w.cgroup) {
                if let id = Cgroups.id(cg) { table[id] = w.ref }
            }
        }
        return table
    }
}

public struct AgentError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
