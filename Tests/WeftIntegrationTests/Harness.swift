import Foundation
import Testing
import WeftCore
#if canImport(Glibc)
import Glibc
#endif

/// Where things are on this machine. Nothing here is hard-coded that the
/// machine can tell us (the cgroup2 mount moves between hybrid and unified
/// layouts).
enum TestEnvironment {
    static let isRoot = geteuid() == 0
    static let skipPrivileged = ProcessInfo.processInfo.environment["WEFT_SKIP_PRIVILEGED"] == "1"
    /// Skipping is opt-in: a non-root run without the variable fails loudly
    /// instead of passing vacuously.
    static let shouldRun = isRoot || !skipPrivileged

    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let weftd: String = ProcessInfo.processInfo.environment["WEFTD_BIN"]
        ?? packageRoot.appendingPathComponent(".build/debug/weftd").path

    static let netprobe: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/netprobe.py").path

    /// The real interpreter, not a shim (pyenv's shims cost tens of ms per
    /// start and look at the working directory).
    static let python: String = {
        let found = Command.run(["python3", "-c", "import sys; print(sys.executable)"])
        let path = found.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return found.succeeded && !path.isEmpty ? path : "python3"
    }()

    static let bpfRoot = "/sys/fs/bpf/weft"

    static func requireRoot() throws {
        guard isRoot else {
            throw HarnessError("""
                Weft's integration tests must run as root: they create network namespaces, cgroups \
                and eBPF links. Run them as root, or set WEFT_SKIP_PRIVILEGED=1 to skip them.
                """)
        }
    }

    /// The first cgroup2 mount in /proc/self/mountinfo.
    static let cgroup2Mount: String? = {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].split(separator: " ").first == "cgroup2" else { continue }
            let fields = halves[0].split(separator: " ")
            guard fields.count >= 5 else { continue }
            return String(fields[4]).replacingOccurrences(of: "\\040", with: " ")
        }
        return nil
    }()
}

/// Counts failing issues so that teardown knows when to print weftd's log.
/// Installed on the suite with `.compactMapIssues`; the suite is serialized,
/// so "more issues than when this test began" means "this test failed".
final class FailureTracker: @unchecked Sendable {
    static let shared = FailureTracker()
    private let lock = NSLock()
    private var failures = 0

    func note(_ issue: Issue) -> Issue {
        if issue.isFailure {
            lock.lock()
            failures += 1
            lock.unlock()
        }
        return issue
    }

    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return failures
    }
}

struct MeshNamespace: Sendable {
    var name: String
    var mesh: Bool

    static func meshed(_ name: String) -> MeshNamespace { MeshNamespace(name: name, mesh: true) }
    static func unmeshed(_ name: String) -> MeshNamespace { MeshNamespace(name: name, mesh: false) }
}

/// Runs `body` against a fresh node: its own network namespace, cgroup tree,
/// pin folder and weftd, ready before `body` starts. Everything is torn down
/// afterwards whether `body` returns, throws or records failures.
func withTestNode(
    namespaces: [MeshNamespace],
    excludePorts: [Int] = [],
    reconcileIntervalMs: Int = 200,
    configure: (TestNode) throws -> Void = { _ in },
    _ body: (TestNode) async throws -> Void
) async throws {
    try TestEnvironment.requireRoot()
    await NodeGate.shared.acquire()
    defer { NodeGate.shared.release() }
    let failuresBefore = FailureTracker.shared.count
    let node = TestNode(namespaces: namespaces, excludePorts: excludePorts, reconcileIntervalMs: reconcileIntervalMs)
    var thrown: (any Error)?
    defer { node.teardown(printLogs: thrown != nil || FailureTracker.shared.count > failuresBefore) }
    do {
        try configure(node)
        try node.setUp()
        try node.startWeftd()
        try await node.waitReady()
        try await body(node)
    } catch {
        thrown = error
        throw error
    }
}

extension Trait where Self == TimeLimitTrait {
    /// The time limit of every privileged suite. Swift Testing counts a test's
    /// wait at ``NodeGate`` too, and every suite's tests queue there: a test
    /// may wait for most of the integration phase (about 4 minutes here)
    /// before its own node starts. So this is a backstop against a hang, not
    /// a timing assertion; each wait inside a test has its own deadline.
    static var nodeGateTimeLimit: Self { .timeLimit(.minutes(10)) }
}

/// One test node at a time, across suites: each suite is serialized, but
/// suites run in parallel, and two debug weftds (plus probes) on a small VM
/// make each other's timing assertions flaky.
final class NodeGate: @unchecked Sendable {
    static let shared = NodeGate()
    private let lock = NSLock()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            lock.lock()
            if busy {
                waiting.append(continuation)
                lock.unlock()
            } else {
                busy = true
                lock.unlock()
                continuation.resume()
            }
        }
    }

    /// Synchronous, so that it can run from a `defer`.
    func release() {
        lock.lock()
        if waiting.isEmpty {
            busy = false
            lock.unlock()
        } else {
            let next = waiting.removeFirst()
            lock.unlock()
            next.resume()
        }
    }
}

/// One Weft node in a private network namespace. All names carry a random
/// id so that runs cannot collide with each other or with a real node.
final class TestNode: @unchecked Sendable {
    static let nodeAddress4 = "198.18.0.1"
    static let nodeAddress6 = "fd00:77::1"
    static let podGateway4 = "198.19.0.1"
    static let podAddress4 = "198.19.0.2"
    static let adminURL = "http://127.0.0.1:15021"

    let id: String
    /// weftd's node name, which names its pin folder.
    let name: String
    let netns: String
    let cgroupRoot: String
    let dir: URL
    let configURL: URL
    let logURL: URL
    private(set) var namespaces: [MeshNamespace]
    private(set) var excludePorts: [Int]
    let reconcileIntervalMs: Int
    /// Top-level YAML appended to the generated config (a `control:` section).
    var extraConfig = ""
    /// The node's IPv4 address: on its stand-in interface, or on the fabric.
    let address4: String
    /// A mesh's fabric: the network namespace holding the bridge `br0` this
    /// node is plugged into (nil: a node on its own).
    let fabric: String?

    private(set) var weftd: Spawned?
    private var children: [Spawned] = []
    private var createdNetns: [String] = []
    private var cgroupRootCreated = false
    private var counter = 0

    init(namespaces: [MeshNamespace], excludePorts: [Int], reconcileIntervalMs: Int,
         address4: String = TestNode.nodeAddress4, fabric: String? = nil) {
        self.address4 = address4
        self.fabric = fabric
        id = String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
        name = "t-\(id)"
        netns = "wt-\(id)"
        cgroupRoot = "\(TestEnvironment.cgroup2Mount ?? "/sys/fs/cgroup")/wt-\(id)"
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-it-\(id)")
        configURL = dir.appendingPathComponent("weftd.yaml")
        logURL = dir.appendingPathComponent("weftd.log")
        self.namespaces = namespaces
        self.excludePorts = excludePorts
        self.reconcileIntervalMs = reconcileIntervalMs
    }

    /// Where weftd pins (its `bpfRoot`); the node's pins are in `<bpfRoot>/<name>`.
    var bpfRoot = TestEnvironment.bpfRoot
    /// The weftd binary this node runs (an installed copy, in the install test).
    var weftdBinary = TestEnvironment.weftd

    var pinDir: String { "\(bpfRoot)/\(name)" }

    private func nextNumber() -> Int {
        counter += 1
        return counter
    }

    // MARK: Setup

    func setUp() throws {
        guard TestEnvironment.cgroup2Mount != nil else {
            throw HarnessError("no cgroup2 mount in /proc/self/mountinfo: Weft needs the unified hierarchy")
        }
        guard FileManager.default.isExecutableFile(atPath: TestEnvironment.weftd) else {
            throw HarnessError("weftd not found at \(TestEnvironment.weftd): run `swift build` or set WEFTD_BIN")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)

        try Command.check(["ip", "netns", "add", netns])
        createdNetns.append(netns)
        try ip(netns, "link", "set", "lo", "up")
        if let fabric {
            // The node's "NIC": a veth whose other end is a port of the fabric's bridge.
            let port = "wn\(id)"
            try ip(netns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", fabric)
            try ip(fabric, "link", "set", port, "master", "br0")
            try ip(fabric, "link", "set", port, "up")
            try ip(netns, "addr", "add", "\(address4)/24", "dev", "eth0")
            try ip(netns, "link", "set", "eth0", "up")
        } else {
            // A stand-in for the node's real interface, so that destinations are
            // not loopback (which capture excludes by default). Kernels built
            // without CONFIG_DUMMY get a veth pair with both ends in the node.
            if !Command.run(["ip", "-n", netns, "link", "add", "weft0", "type", "dummy"]).succeeded {
                try ip(netns, "link", "add", "weft0", "type", "veth", "peer", "name", "weft0-peer")
                try ip(netns, "link", "set", "weft0-peer", "up")
            }
            try ip(netns, "addr", "add", "\(address4)/24", "dev", "weft0")
            try ip(netns, "addr", "add", "\(Self.nodeAddress6)/64", "dev", "weft0", "nodad")
            try ip(netns, "link", "set", "weft0", "up")
        }

        try FileManager.default.createDirectory(atPath: cgroupRoot, withIntermediateDirectories: false)
        cgroupRootCreated = true
        for ns in namespaces { _ = try slice(ns.name) }
        try writeConfig()
    }

    private func ip(_ ns: String, _ arguments: String...) throws {
        try Command.check(["ip", "-n", ns] + arguments)
    }

    func configYAML() -> String {
        var yaml = """
            node: \(name)
            cgroupRoot: \(cgroupRoot)
            bpfRoot: \(bpfRoot)
            reconcileIntervalMs: \(reconcileIntervalMs)
            admin:
              address: 127.0.0.1:15021

            """
        if !excludePorts.isEmpty {
            yaml += "capture:\n  excludePorts: [\(excludePorts.map(String.init).joined(separator: ", "))]\n"
        }
        yaml += namespaces.isEmpty ? "namespaces: []\n" : "namespaces:\n"
        for ns in namespaces {
            yaml += "  - name: \(ns.name)\n    mesh: \(ns.mesh)\n"
        }
        return yaml + extraConfig
    }

    private func writeConfig() throws {
        // Atomic, so that weftd's mtime check never reads half a file.
        try configYAML().write(to: configURL, atomically: true, encoding: .utf8)
    }

    /// Changes the config file in place. weftd must notice the new mtime on
    /// its own; with `hangUp` it is also sent SIGHUP.
    func rewriteConfig(namespaces: [MeshNamespace]? = nil, excludePorts: [Int]? = nil, hangUp: Bool = false) throws {
        if let namespaces { self.namespaces = namespaces }
        if let excludePorts { self.excludePorts = excludePorts }
        for ns in self.namespaces { _ = try slice(ns.name) }
        try writeConfig()
        if hangUp { weftd?.signal(SIGHUP) }
    }

    // MARK: weftd

    func startWeftd() throws {
        let level = ProcessInfo.processInfo.environment["WEFTD_LOG_LEVEL"] ?? "info"
        if let log = try? FileHandle(forWritingTo: logURL) {
            defer { try? log.close() }
            _ = try? log.seekToEnd()
            try? log.write(contentsOf: Data("\n----- weftd restarted by the test -----\n".utf8))
        }
        // nsenter rather than `ip netns exec`, which remounts /sys and would
        // hide the cgroup2 and bpf mounts from weftd.
        // In a unit cgroup of its own, as systemd runs it: the kernel's
        // PeerAuthentication check names the proxy by its cgroup.
        let unitCgroup = try cgroup("system.slice/weftd.service")
        weftd = try Spawned(
            label: "weftd",
            arguments: ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, unitCgroup,
                        "nsenter", "--net=/run/netns/\(netns)", weftdBinary,
                        "--config", configURL.path, "--log-level", level],
            outputURL: logURL, append: true)
    }

    /// Sends `sig`; for SIGKILL and SIGTERM also waits until weftd is gone.
    func kill(_ sig: Int32) {
        guard let weftd else { return }
        weftd.signal(sig)
        if sig == SIGKILL || sig == SIGTERM { _ = weftd.waitExitSync(timeout: 10) }
    }

    func restart() throws {
        if weftd?.isRunning == true { kill(SIGKILL) }
        try startWeftd()
    }

    var weftdLog: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    private func weftdLogTail(_ n: Int = 60) -> String {
        weftdLog.split(separator: "\n", omittingEmptySubsequences: false).suffix(n).joined(separator: "\n")
    }

    func waitReady(timeout: Double = 20) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = "no answer yet"
        while Date() < deadline {
            if let weftd, !weftd.isRunning {
                throw HarnessError("""
                    weftd exited (status \(weftd.terminationStatus ?? -1)) before /healthz/ready said ready; \
                    its log:\n\(weftdLogTail())
                    """)
            }
            let (status, body) = try await admin("/healthz/ready")
            if status == 200 { return }
            last = "HTTP \(status) \(body)"
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("weftd not ready after \(timeout) s (last: \(last)); its log:\n\(weftdLogTail())")
    }

    /// GET on the admin address inside the node's netns. Status 0 means no
    /// HTTP answer at all (refused, timeout).
    func admin(_ path: String) async throws -> (status: Int, body: String) {
        let output = try await runPython(in: nil, netns: netns, ["http", "--url", Self.adminURL + path], timeout: 10)
        guard let line = output.last,
              let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw HarnessError("netprobe http printed nothing useful for \(path): \(output)")
        }
        return (object["status"] as? Int ?? 0, object["body"] as? String ?? "")
    }

    func capture() async throws -> CaptureState {
        let (status, body) = try await admin("/debug/capture")
        guard status == 200 else { throw HarnessError("/debug/capture answered HTTP \(status): \(body)") }
        return try CaptureState.parse(body)
    }

    /// Polls /debug/capture until `condition` holds; the error shows the last state.
    @discardableResult
    func waitForCapture(_ what: String, timeout: Double = 5,
                        until condition: (CaptureState) -> Bool) async throws -> CaptureState {
        try await poll(what, timeout: timeout, every: .milliseconds(100), source: "/debug/capture",
                       fetch: { try await self.capture() }, raw: \.raw, until: condition)
    }

    // MARK: Cgroups

    /// `<root>/weft.slice/weft-<ns>.slice`, created as systemd would.
    func slice(_ namespace: String) throws -> String {
        let path = "\(cgroupRoot)/\(SystemdNames.slicePath(for: try NamespaceName(namespace)))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A unit's cgroup in a namespace's slice (a workload by the systemd convention).
    func unit(_ namespace: String, _ unit: String) throws -> String {
        let path = "\(try slice(namespace))/\(unit)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A unit's cgroup, once /debug/capture lists it as a workload: for tests
    /// about traffic rather than about discovery.
    func discoveredUnit(_ namespace: String, _ name: String) async throws -> String {
        let path = try unit(namespace, name)
        try await waitForCapture("weftd lists workload \(namespace)/\(name)") { $0.workload(namespace, name) != nil }
        return path
    }

    /// A cgroup anywhere under the node's root, e.g. outside weft.slice.
    func cgroup(_ relative: String) throws -> String {
        let path = "\(cgroupRoot)/\(relative)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    // MARK: Workloads

    /// Starts netprobe.py with `arguments`. With a cgroup, the process joins
    /// it before it runs anything (the shell writes its own pid, then execs),
    /// so even its first connect() is made from inside the workload.
    func start(_ label: String, cgroup: String?, netns: String? = nil, _ arguments: [String]) throws -> Spawned {
        let inNetns = ["nsenter", "--net=/run/netns/\(netns ?? self.netns)",
                       TestEnvironment.python, TestEnvironment.netprobe] + arguments
        let command = cgroup.map { ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, $0] + inNetns } ?? inNetns
        let child = try Spawned(
            label: label, arguments: command,
            environment: ["PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"],
            outputURL: dir.appendingPathComponent("\(label)-\(nextNumber()).log"))
        children.append(child)
        return child
    }

    /// Any program in the node's netns, outside every workload cgroup, stopped at teardown.
    func spawnTool(_ label: String, _ arguments: [String]) throws -> Spawned {
        let child = try Spawned(label: label, arguments: ["nsenter", "--net=/run/netns/\(netns)"] + arguments,
                                outputURL: dir.appendingPathComponent("\(label)-\(nextNumber()).log"))
        children.append(child)
        return child
    }

    /// Runs a command to completion inside `cgroup` (joined before it runs)
    /// and the node's netns; with `resolvConf`, in a mount namespace of its
    /// own where that file is /etc/resolv.conf.
    func run(_ arguments: [String], in cgroup: String, resolvConf: String? = nil, timeout: Double = 20) async throws -> CommandResult {
        var command = ["nsenter", "--net=/run/netns/\(netns)"] + arguments
        if let resolvConf {
            command = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                       #"mount --bind "$0" /etc/resolv.conf && exec "$@""#, resolvConf] + command
        }
        return await Command.runAsync(["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, cgroup] + command,
                                      timeout: timeout)
    }

    /// A counter of /debug/capture's `dns` object (-1 when DNS is off).
    func dnsCounter(_ name: String) async throws -> Int {
        let state = try await capture()
        guard let object = try JSONSerialization.jsonObject(with: Data(state.raw.utf8)) as? [String: Any],
              let dns = object["dns"] as? [String: Any] else { return -1 }
        return dns[name] as? Int ?? -1
    }

    /// Runs netprobe.py to completion and returns its JSON lines.
    private func runPython(in cgroup: String?, netns: String?, _ arguments: [String], timeout: Double) async throws -> [String] {
        let child = try start(arguments[0], cgroup: cgroup, netns: netns, arguments)
        defer {
            child.stop()
            children.removeAll { $0 === child }
            try? FileManager.default.removeItem(at: child.outputURL)
        }
        guard await child.waitExit(timeout: timeout) else {
            throw HarnessError("netprobe \(arguments.joined(separator: " ")) still running after \(timeout) s:\n\(child.tail())")
        }
        let lines = child.jsonLines
        guard !lines.isEmpty else {
            throw HarnessError("netprobe \(arguments.joined(separator: " ")) printed no result (exit \(child.terminationStatus ?? -1)):\n\(child.tail())")
        }
        return lines
    }

    /// One connection attempt from inside `cgroup` (and `netns`, default the node's).
    func probe(from cgroup: String?, netns: String? = nil, host: String, port: Int,
               _ options: [String] = [], timeout: Double = 15) async throws -> ProbeResult {
        let lines = try await runPython(in: cgroup, netns: netns,
                                        ["probe", "--host", host, "--port", String(port)] + options, timeout: timeout)
        return try ProbeResult.parse(lines[lines.count - 1])
    }

    /// Writes from inside `cgroup` at host:port for `seconds` without reading:
    /// bytes the connection took, and how often a write had to wait.
    func flood(from cgroup: String, host: String, port: Int, seconds: Double) async throws -> (sent: Int, blocked: Int, error: String?) {
        let lines = try await runPython(in: cgroup, netns: nil,
                                        ["flood", "--host", host, "--port", String(port), "--seconds", String(seconds)],
                                        timeout: seconds + 15)
        guard let data = lines[lines.count - 1].data(using: .utf8),
              let o = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let sent = o["sent"] as? Int, let blocked = o["blocked"] as? Int else {
            throw HarnessError("netprobe flood printed no result: \(lines)")
        }
        return (sent, blocked, o["error"] as? String)
    }

    /// `count` connections from inside `cgroup`, each of `workers` threads
    /// opening its share one after the other.
    func many(from cgroup: String, host: String, port: Int, count: Int, workers: Int = 1,
              timeout: Double) async throws -> ManySummary {
        let lines = try await runPython(in: cgroup, netns: nil,
                                        ["many", "--host", host, "--port", String(port), "--count", String(count),
                                         "--workers", String(workers)],
                                        timeout: timeout)
        return try ManySummary.parse(lines[lines.count - 1])
    }

    /// A long-running probe loop (one JSON line per connection).
    func startLoop(in cgroup: String, netns: String? = nil, host: String, port: Int, interval: Double = 0.2) throws -> ProbeLoop {
        ProbeLoop(try start("loop", cgroup: cgroup, netns: netns,
                            ["loop", "--host", host, "--port", String(port), "--interval", String(interval), "--timeout", "2"]))
    }

    /// An echo server in the node's netns, outside every workload cgroup.
    /// "::" serves IPv4 too.
    func startServer(port: Int, host: String = "::") async throws -> EchoServer {
        let child = try start("server-\(port)", cgroup: nil, ["serve", "--host", host, "--port", String(port)])
        let deadline = Date().addingTimeInterval(10)
        while !child.jsonLines.contains(where: { $0.contains("\"listening\"") }) {
            guard child.isRunning, Date() < deadline else {
                throw HarnessError("echo server on port \(port) did not start:\n\(child.tail())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return EchoServer(child)
    }

    /// Bytes sent on the node's loopback interface so far: where a same-node
    /// TCP leg travels, and where a redirected one does not.
    func loopbackBytes() throws -> Int {
        let out = try Command.check(["ip", "-n", netns, "-s", "-j", "link", "show", "dev", "lo"]).stdout
        guard let data = out.data(using: .utf8),
              let links = try JSONSerialization.jsonObject(with: data) as? [[String: Any]],
              let stats = links.first?["stats64"] as? [String: Any], let tx = stats["tx"] as? [String: Any],
              let bytes = (tx["bytes"] as? NSNumber)?.intValue else {
            throw HarnessError("no tx bytes for lo in `ip -s -j link show dev lo`: \(out)")
        }
        return bytes
    }

    /// An echo server (or, with `mode` "sink", one that never reads) inside
    /// `cgroup` (a meshed workload's), on the node's netns.
    func startServer(port: Int, in cgroup: String, mode: String = "serve") async throws -> EchoServer {
        let child = try start("\(mode)-\(port)", cgroup: cgroup, [mode, "--host", "::", "--port", String(port)])
        let deadline = Date().addingTimeInterval(10)
        while !child.jsonLines.contains(where: { $0.contains("\"listening\"") }) {
            guard child.isRunning, Date() < deadline else {
                throw HarnessError("echo server on port \(port) did not start:\n\(child.tail())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return EchoServer(child)
    }

    // MARK: Pods

    /// A second network namespace joined to the node by a veth pair, as a
    /// container runtime would make one: returns its name.
    func addPod() throws -> String {
        let pod = "\(netns)-p\(nextNumber())"
        let veth = "wv\(id)"
        try Command.check(["ip", "netns", "add", pod])
        createdNetns.append(pod)
        try ip(netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", pod)
        try ip(netns, "addr", "add", "\(Self.podGateway4)/24", "dev", veth)
        try ip(netns, "link", "set", veth, "up")
        try ip(pod, "link", "set", "lo", "up")
        try ip(pod, "addr", "add", "\(Self.podAddress4)/24", "dev", "eth0")
        try ip(pod, "link", "set", "eth0", "up")
        try ip(pod, "route", "add", "default", "via", Self.podGateway4)
        return pod
    }

    // MARK: bpffs and bpftool

    /// Pinned link files named `program` under this node's links folder.
    func pinnedLinks(named program: String) -> [String] {
        let links = "\(pinDir)/links"
        guard let walker = FileManager.default.enumerator(atPath: links) else { return [] }
        return walker.compactMap { $0 as? String }
            .filter { ($0 as NSString).lastPathComponent == program }
            .map { "\(links)/\($0)" }
            .sorted()
    }

    /// Programs attached directly to `cgroup`, counted by hook
    /// (connect4, connect6, getpeername4, getpeername6, sock_ops, ...).
    func attachedHooks(on cgroup: String) throws -> [String: Int] {
        let result = try Command.check(["bpftool", "-j", "cgroup", "show", cgroup])
        let text = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { return [:] }
        guard let programs = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
            throw HarnessError("unexpected bpftool output: \(text)")
        }
        var counts: [String: Int] = [:]
        for program in programs {
            counts[Self.hookName(program["attach_type"] as? String ?? "?"), default: 0] += 1
        }
        return counts
    }

    /// bpftool prints libbpf's names (cgroup_inet4_connect) or, when older,
    /// its own (connect4); the tests speak the short form.
    static func hookName(_ attachType: String) -> String {
        let known = [
            "cgroup_inet4_connect": "connect4", "cgroup_inet6_connect": "connect6",
            "cgroup_inet4_getpeername": "getpeername4", "cgroup_inet6_getpeername": "getpeername6",
            "cgroup_sock_ops": "sock_ops",
            "cgroup_udp4_sendmsg": "sendmsg4", "cgroup_udp6_sendmsg": "sendmsg6",
            "cgroup_udp4_recvmsg": "recvmsg4", "cgroup_udp6_recvmsg": "recvmsg6",
        ]
        return known[attachType] ?? attachType
    }

    // MARK: Teardown

    /// Stops everything this node started and removes everything it created.
    /// Synchronous and cancellation-proof: it runs from a `defer`.
    func teardown(printLogs: Bool) {
        if printLogs { printDiagnostics() }

        for child in children { child.stop() }
        children.removeAll()
        if let weftd {
            weftd.stop()
            self.weftd = nil
        }
        // Anything else still inside our namespaces is ours by construction.
        for ns in createdNetns {
            let pids = Command.run(["ip", "netns", "pids", ns]).stdout.split(separator: "\n")
            for pid in pids.compactMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }) { Glibc.kill(pid, SIGKILL) }
        }

        if FileManager.default.isExecutableFile(atPath: TestEnvironment.weftd) {
            let cleanup = Command.run([TestEnvironment.weftd, "cleanup", "--node", name, "--bpf-root", bpfRoot],
                                      timeout: 30)
            if !cleanup.succeeded {
                Issue.record("weftd cleanup failed: \(cleanup)")
            }
        }
        if FileManager.default.fileExists(atPath: pinDir) {
            let left = (FileManager.default.enumerator(atPath: pinDir)?.allObjects as? [String]) ?? []
            if !left.isEmpty {
                Issue.record("`weftd cleanup --node \(name)` left pins behind: \(left.sorted())")
            }
            Command.run(["rm", "-rf", pinDir])
        }

        if cgroupRootCreated { removeCgroupTree(cgroupRoot) }
        for ns in createdNetns.reversed() {
            let deleted = Command.run(["ip", "netns", "del", ns])
            if !deleted.succeeded { Issue.record("cannot delete netns \(ns): \(deleted)") }
        }
        createdNetns.removeAll()
        try? FileManager.default.removeItem(at: dir)
    }

    private func removeCgroupTree(_ root: String) {
        guard FileManager.default.fileExists(atPath: root) else { return }
        // cgroup.kill reaches every process in the subtree, even ones we did not start.
        if (try? "1".write(toFile: "\(root)/cgroup.kill", atomically: false, encoding: .utf8)) != nil {
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline,
                  let events = try? String(contentsOfFile: "\(root)/cgroup.events", encoding: .utf8),
                  events.contains("populated 1") {
                usleep(10_000)
            }
        }
        let below = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? [])
            .map { "\(root)/\($0)" }
            .filter { path in
                var isDir: ObjCBool = false
                return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            }
        // Deepest first: a cgroup with children cannot be removed.
        for path in (below + [root]).sorted(by: { $0.split(separator: "/").count > $1.split(separator: "/").count }) {
            if rmdir(path) != 0 && errno != ENOENT {
                Issue.record("cannot remove cgroup \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    private func printDiagnostics() {
        print("""
            ===== node \(name): netns \(netns), cgroups \(cgroupRoot) =====
            ----- weftd config -----
            \(configYAML())
            ----- weftd log (\(logURL.path)) -----
            \(weftdLog)
            """)
        for child in children where child.label != "weftd" {
            print("----- \(child.label) (pid \(child.pid)), last lines -----\n\(child.tail(30))")
        }
        print("===== end of node \(name) =====")
    }
}

/// A running `netprobe.py loop`.
struct ProbeLoop {
    let child: Spawned
    init(_ child: Spawned) { self.child = child }

    var results: [ProbeResult] { child.jsonLines.compactMap { try? ProbeResult.parse($0) } }

    /// Polls until `condition` holds for the results so far; the error shows them.
    @discardableResult
    func waitFor(_ what: String, timeout: Double = 5, until condition: ([ProbeResult]) -> Bool) async throws -> [ProbeResult] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let all = results
            if condition(all) { return all }
            guard child.isRunning else {
                throw HarnessError("probe loop exited (\(child.terminationStatus ?? -1)) before: \(what)\n\(child.tail(20))")
            }
            if Date() > deadline {
                throw HarnessError("after \(timeout) s, still not: \(what)\nlast probes:\n\(child.tail(10))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// A running `netprobe.py serve`: every accepted connection is a log line.
struct EchoServer {
    let child: Spawned
    init(_ child: Spawned) { self.child = child }

    /// Peers of every connection accepted so far.
    var acceptedPeers: [Endpoint] {
        child.jsonLines.compactMap { line in
            guard line.contains("\"accept\""),
                  let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let peer = object["peer"] as? [Any], peer.count == 2,
                  let ip = peer[0] as? String, let port = peer[1] as? Int else { return nil }
            return Endpoint(ip, port)
        }
    }
}

/// Fetches until `condition` holds or `timeout` passes; the failure names
/// what was awaited and shows the last answer.
func poll<State>(_ what: String, timeout: Double, every interval: Duration, source: String,
                 fetch: () async throws -> State, raw: (State) -> String,
                 until condition: (State) -> Bool) async throws -> State {
    let deadline = Date().addingTimeInterval(timeout)
    var last: State?
    while true {
        let state = try await fetch()
        if condition(state) { return state }
        last = state
        if Date() > deadline { break }
        try await Task.sleep(for: interval)
    }
    throw HarnessError("after \(timeout) s, still not: \(what)\nlast \(source):\n\(last.map(raw) ?? "-")")
}
