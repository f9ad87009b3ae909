// weft-control at scale: N simulated agents (in this process) long-poll their
// node snapshot and report status as weftd does, against a weft-control
// process on SQLite or on a three-member etcd cluster, while resources change.
// Measures how long each change takes to reach every agent, and the control
// plane's CPU and memory from /proc. Run by Benchmarks/control/run.sh.
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization
import WeftEtcdHarness
import WeftIdentity

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var store = "sqlite"
    var agents = 1000
    var changes = 10
    var workloads = 100
    var services = 20
    var binary = ".build/release/weft-control"

    init(_ args: [String]) throws {
        var i = 0
        func value() throws -> String {
            i += 1
            guard i < args.count else { throw HarnessError("\(args[i - 1]) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--store": store = try value()
            case "--agents": agents = Int(try value()) ?? -1
            case "--changes": changes = Int(try value()) ?? -1
            case "--workloads": workloads = Int(try value()) ?? -1
            case "--services": services = Int(try value()) ?? -1
            case "--control-binary": binary = try value()
            default: throw HarnessError("unknown argument \(args[i]) (--store sqlite|etcd, --agents N, --changes N, --workloads N, --services N, --control-binary PATH)")
            }
            i += 1
        }
        guard ["sqlite", "etcd"].contains(store) else { throw HarnessError("--store: sqlite or etcd, not \(store)") }
        guard agents > 0, changes > 0, workloads >= 0, services > 0 else { throw HarnessError("--agents, --changes and --services must be positive") }
    }
}

/// CPU seconds and memory of a process, from /proc.
struct ProcSample {
    var cpuSeconds: Double
    var rssKiB: Int
    var peakKiB: Int

    static let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))

    static func read(_ pid: Int32) -> ProcSample {
        var cpu = 0.0
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After the command: state is field 3, utime 14 and stime 15.
            if fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) { cpu = (u + s) / ticks }
        }
        var rss = 0, peak = 0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if line.hasPrefix("VmRSS:"), parts.count > 1 { rss = Int(parts[1]) ?? 0 }
                if line.hasPrefix("VmHWM:"), parts.count > 1 { peak = Int(parts[1]) ?? 0 }
            }
        }
        return ProcSample(cpuSeconds: cpu, rssKiB: rss, peakKiB: peak)
    }

    static func sum(_ pids: [Int32]) -> ProcSample {
        pids.map(read).reduce(ProcSample(cpuSeconds: 0, rssKiB: 0, peakKiB: 0)) {
            ProcSample(cpuSeconds: $0.cpuSeconds + $1.cpuSeconds, rssKiB: $0.rssKiB + $1.rssKiB, peakKiB: $0.peakKiB + $1.peakKiB)
        }
    }
}

/// Every snapshot version each agent saw, and when.
final class Sightings: Sendable {
    private let state = Mutex<[[(version: Int64, at: ContinuousClock.Instant)]]>([])
    init(agents: Int) { state.withLock { $0 = Array(repeating: [], count: agents) } }
    func record(_ agent: Int, _ version: Int64) { state.withLock { $0[agent].append((version, .now)) } }
    /// How many agents have seen `version` or later.
    func count(atLeast version: Int64) -> Int { state.withLock { $0.filter { ($0.last?.version ?? .min) >= version }.count } }
    /// For each agent, when it first saw `version` or later.
    func firstSeen(_ version: Int64) -> [ContinuousClock.Instant] {
        state.withLock { $0.compactMap { $0.first { $0.version >= version }?.at } }
    }
}

final class Counter: Sendable {
    private let n = Mutex(0)
    func add() { n.withLock { $0 += 1 } }
    var value: Int { n.withLock { $0 } }
}

struct Control {
    let url: String
    let token: String
    let tls: TLSConfiguration
    let http: HTTPClient

    func call(_ method: HTTPMethod, _ path: String, body: String? = nil, tls override: TLSConfiguration? = nil,
              admin: Bool = true, timeout: TimeAmount = .seconds(60)) async throws -> (Int, String) {
        var request = HTTPClientRequest(url: url + path)
        request.method = method
        request.tlsConfiguration = override ?? tls
        if admin { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await http.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 64 << 20)
        return (Int(response.status.code), String(buffer: bytes))
    }

    func apply(_ documents: [String]) async throws -> Int64 {
        let (status, text) = try await call(.POST, "/v1/apply", body: #"{"items": [\#(documents.joined(separator: ","))]}"#)
        guard status == 200, let revision = Self.number(text, "revision") else { throw HarnessError("apply: \(status) \(text.prefix(300))") }
        return revision
    }

    /// A top-level integer field of a JSON answer.
    static func number(_ text: String, _ field: String) -> Int64? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        return (object[field] as? NSNumber)?.int64Value
    }
}

enum Manifests {
    static func namespace() -> String {
        #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": "bench"}, "spec": {"mesh": {"enabled": true}}}"#
    }
    static func workload(_ i: Int, nodes: Int) -> String {
        #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "w\#(i)", "namespace": "bench", "labels": {"app": "s\#(i % 20)"}}, "spec": {"node": "node-\#(i % nodes)", "unit": "w\#(i).service", "serviceAccount": "sa\#(i % 20)", "addresses": ["198.18.\#(i / 250).\#(i % 250 + 1)"], "ports": [{"name": "http", "port": 8080, "protocol": "http"}]}}"#
    }
    static func service(_ i: Int, port: Int = 80) -> String {
        #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Service", "metadata": {"name": "s\#(i)", "namespace": "bench"}, "spec": {"selector": {"app": "s\#(i)"}, "ports": [{"name": "http", "port": \#(port), "targetPort": 8080, "protocol": "http"}]}}"#
    }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }

func run(_ o: Options) async throws {
    let http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup,
                          configuration: .init(timeout: .init(connect: .seconds(10), read: nil)))
    do {
        try await measure(o, http)
    } catch {
        try? await http.shutdown()
        throw error
    }
    try? await http.shutdown()
}

func measure(_ o: Options, _ http: HTTPClient) async throws {
    let scratch = NSTemporaryDirectory() + "weft-control-bench-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    var cluster: EtcdCluster?
    var control: Process?
    defer {
        if let control, control.isRunning { control.terminate(); control.waitUntilExit() }
        cluster?.stop()
        try? FileManager.default.removeItem(atPath: scratch)
    }
    var storeArgs = ["--store", o.store]
    if o.store == "etcd" {
        // Data dirs on disk (not /dev/shm): etcd's fsyncs are part of the cost.
        cluster = try await EtcdCluster.start(members: 3, directory: scratch)
        storeArgs += ["--etcd-endpoints", cluster!.clientURLs.joined(separator: ",")]
    }
    let port = try EtcdCluster.freePorts(1)[0]
    let dataDir = scratch + "/control"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: o.binary)
    process.arguments = ["--data-dir", dataDir, "--listen", "127.0.0.1:\(port)", "--log-level", "warning"] + storeArgs
    _ = FileManager.default.createFile(atPath: scratch + "/control.log", contents: nil)
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch + "/control.log"))
    try process.run()
    control = process

    // Until it has written its CA and answers.
    var ready: Control?
    for _ in 0..<300 {
        if let ca = try? String(contentsOfFile: dataDir + "/ca/ca.crt", encoding: .utf8),
           let token = try? String(contentsOfFile: dataDir + "/admin.token", encoding: .utf8) {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
            let c = Control(url: "https://127.0.0.1:\(port)", token: token.trimmingCharacters(in: .whitespacesAndNewlines), tls: tls, http: http)
            if let (status, _) = try? await c.call(.GET, "/healthz", admin: false, timeout: .seconds(2)), status == 200 { ready = c; break }
        }
        guard process.isRunning else { throw HarnessError("weft-control exited: see \(scratch)/control.log") }
        try await Task.sleep(for: .milliseconds(100))
    }
    guard let api = ready else { throw HarnessError("weft-control did not answer within 30 s") }
    let caPEM = try String(contentsOfFile: dataDir + "/ca/ca.crt", encoding: .utf8)

    // The mesh: one namespace, workloads spread over the first nodes, services selecting them.
    // In batches: one commit on etcd holds at most 127 objects.
    _ = try await api.apply([Manifests.namespace()])
    var documents = (0..<o.workloads).map { Manifests.workload($0, nodes: o.agents) }
    documents += (0..<o.services).map { Manifests.service($0) }
    for start in stride(from: 0, to: documents.count, by: 100) {
        _ = try await api.apply(Array(documents[start..<min(start + 100, documents.count)]))
    }

    // Join every agent (token, CSR, node certificate), a few at a time.
    let started = ContinuousClock.now
    let trustDomain = try TrustDomain("cluster.local")
    let agents: [(node: String, tls: TLSConfiguration)] = try await withThrowingTaskGroup(of: (Int, TLSConfiguration).self) { group in
        var out = [TLSConfiguration?](repeating: nil, count: o.agents)
        var next = 0
        func add() {
            let i = next
            next += 1
            group.addTask {
                let (status, text) = try await api.call(.POST, "/v1/tokens", body: #"{"ttlSeconds": 3600}"#)
                guard status == 201, let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                      let token = object["token"] as? String else { throw HarnessError("token: \(status) \(text)") }
                let (key, csr) = try SpiffeID.node(trustDomain: trustDomain, name: "node-\(i)").makeKeyAndCSR()
                let body = try JSONSerialization.data(withJSONObject: ["token": token, "node": "node-\(i)", "csr": try PEM.encode(csr)])
                let (joined, answer) = try await api.call(.POST, "/v1/nodes/join", body: String(decoding: body, as: UTF8.self), admin: false)
                guard joined == 200, let cert = (try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any])?["certificate"] as? String else {
                    throw HarnessError("join node-\(i): \(joined) \(answer)")
                }
                var tls = TLSConfiguration.makeClientConfiguration()
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
                tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(cert.utf8)).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(PEM.encode(key).utf8), format: .pem))
                return (i, tls)
            }
        }
        for _ in 0..<min(8, o.agents) { add() }
        while let (i, tls) = try await group.next() {
            out[i] = tls
            if next < o.agents { add() }
        }
        return out.enumerated().map { ("node-\($0.offset)", $0.element!) }
    }
    let joinSeconds = ms(ContinuousClock.now - started) / 1000

    // The agents: long poll (after = the version applied, 25 s as weftd), then
    // report, for ever, as weftd's ControlSync does.
    let sightings = Sightings(agents: o.agents)
    let reports = Counter()
    let failures = Counter()
    let agentTasks = agents.enumerated().map { index, agent in
        Task {
            var applied: Int64?
            while !Task.isCancelled {
                do {
                    let query = applied.map { "?after=\($0)&timeoutSeconds=25" } ?? "?timeoutSeconds=25"
                    let (status, text) = try await api.call(.GET, "/v1/nodes/\(agent.node)/snapshot\(query)", tls: agent.tls, admin: false, timeout: .seconds(60))
                    guard status == 200, let version = Control.number(text, "version") else { throw HarnessError("snapshot \(status)") }
                    if version != applied {
                        sightings.record(index, version)
                        applied = version
                    }
                    let report = #"{"appliedVersion": \#(version), "weftdVersion": "bench", "workloads": [], "certificates": []}"#
                    let (reported, _) = try await api.call(.PUT, "/v1/nodes/\(agent.node)/status", body: report, tls: agent.tls, admin: false)
                    if reported == 200 { reports.add() } else { failures.add() }
                } catch {
                    if Task.isCancelled { return }
                    failures.add()
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }
    defer { for t in agentTasks { t.cancel() } }

    // Everyone connected and waiting on the current version.
    let base = try await api.apply([Manifests.service(0, port: 81)])
    let settleBy = ContinuousClock.now + .seconds(120)
    while sightings.count(atLeast: base) < o.agents, ContinuousClock.now < settleBy { try await Task.sleep(for: .milliseconds(100)) }
    try await Task.sleep(for: .seconds(3))
    let pids = [process.processIdentifier]
    let etcdPids = (0..<(cluster?.members.count ?? 0)).compactMap { cluster?.pid(member: $0) }

    // Idle: every agent waiting in a long poll.
    let idleFrom = (ProcSample.sum(pids), ProcSample.sum(etcdPids), ContinuousClock.now)
    try await Task.sleep(for: .seconds(10))
    let idleTo = (ProcSample.sum(pids), ProcSample.sum(etcdPids), ContinuousClock.now)

    // Changes: one Service's port at a time (a change every snapshot carries).
    var latencies: [Double] = []
    var toAll: [Double] = []
    var missing = 0
    let busyFrom = (ProcSample.sum(pids), ProcSample.sum(etcdPids), ContinuousClock.now)
    for round in 0..<o.changes {
        let sent = ContinuousClock.now
        let revision = try await api.apply([Manifests.service(round % o.services, port: 1000 + round)])
        let deadline = ContinuousClock.now + .seconds(120)
        while sightings.count(atLeast: revision) < o.agents, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        let seen = sightings.firstSeen(revision).map { ms($0 - sent) }.sorted()
        missing += o.agents - seen.count
        latencies += seen
        if let last = seen.last { toAll.append(last) }
        // Let the reports that follow the change land before the next one.
        try await Task.sleep(for: .seconds(2))
    }
    let busyTo = (ProcSample.sum(pids), ProcSample.sum(etcdPids), ContinuousClock.now)
    latencies.sort()
    toAll.sort()

    func cpu(_ from: (ProcSample, ProcSample, ContinuousClock.Instant), _ to: (ProcSample, ProcSample, ContinuousClock.Instant)) -> (Double, Double) {
        let wall = ms(to.2 - from.2) / 1000
        return (100 * (to.0.cpuSeconds - from.0.cpuSeconds) / wall, 100 * (to.1.cpuSeconds - from.1.cpuSeconds) / wall)
    }
    let (idleControl, idleEtcd) = cpu(idleFrom, idleTo)
    let (busyControl, busyEtcd) = cpu(busyFrom, busyTo)
    let end = ProcSample.sum(pids)
    let etcdEnd = ProcSample.sum(etcdPids)
    func f(_ x: Double) -> String { String(format: "%.0f", x) }
    func mib(_ kib: Int) -> String { String(format: "%.0f MiB", Double(kib) / 1024) }
    print("""
        store=\(o.store) agents=\(o.agents) changes=\(o.changes) workloads=\(o.workloads) services=\(o.services) joined in \(String(format: "%.1f", joinSeconds)) s
        propagation per agent: p50 \(f(percentile(latencies, 0.5))) ms, p99 \(f(percentile(latencies, 0.99))) ms, max \(f(latencies.last ?? .nan)) ms (\(latencies.count) samples, \(missing) not seen within 120 s)
        time until every agent had a change: median \(f(percentile(toAll, 0.5))) ms, worst \(f(toAll.last ?? .nan)) ms
        weft-control CPU: idle \(f(idleControl))% of a core, during changes \(f(busyControl))%; memory RSS \(mib(end.rssKiB)), peak \(mib(end.peakKiB))
        etcd (3 members together) CPU: idle \(f(idleEtcd))%, during changes \(f(busyEtcd))%; memory RSS \(mib(etcdEnd.rssKiB))
        status reports \(reports.value), failed requests \(failures.value)
        | \(o.store) | \(o.agents) | \(f(percentile(latencies, 0.5))) ms | \(f(percentile(latencies, 0.99))) ms | \(f(percentile(toAll, 0.5))) ms | \(f(idleControl))% / \(f(busyControl))% | \(mib(end.rssKiB)) (peak \(mib(end.peakKiB))) | \(o.store == "etcd" ? "\(f(idleEtcd))% / \(f(busyEtcd))%, \(mib(etcdEnd.rssKiB))" : "–") |
        """)
    for t in agentTasks { t.cancel() }
    for t in agentTasks { _ = await t.result }
}

do {
    try await run(try Options(Array(CommandLine.arguments.dropFirst())))
} catch {
    FileHandle.standardError.write(Data("weft-control-bench: \(error)\n".utf8))
    exit(1)
}
