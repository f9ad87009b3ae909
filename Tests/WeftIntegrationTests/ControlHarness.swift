import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// The harness for weftd run by weft-control: a TestNode whose config has a
// `control:` section instead of namespaces, and a weft-control serving inside
// the node's network namespace (127.0.0.1:15443 there), which is where weftd,
// weftctl and curl reach it. See docs/control-api.md.

extension TestEnvironment {
    static let weftControl: String = ProcessInfo.processInfo.environment["WEFT_CONTROL_BIN"]
        ?? packageRoot.appendingPathComponent(".build/debug/weft-control").path

    static let weftctl: String = ProcessInfo.processInfo.environment["WEFTCTL_BIN"]
        ?? packageRoot.appendingPathComponent(".build/debug/weftctl").path
}

extension TestNode {
    /// weftd's `control.stateDir`: node credential and the persisted snapshot.
    var stateDir: URL { dir.appendingPathComponent("state") }
    var bootstrapTokenURL: URL { dir.appendingPathComponent("bootstrap.token") }

    /// weftd has its node credential (it joined).
    var hasJoined: Bool {
        FileManager.default.fileExists(atPath: stateDir.appendingPathComponent("node.crt").path)
    }

    /// The snapshot weftd persisted, as JSON.
    func persistedSnapshot() throws -> [String: Any] {
        let url = stateDir.appendingPathComponent("snapshot.json")
        guard let data = FileManager.default.contents(atPath: url.path),
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw HarnessError("weftd persisted no readable snapshot at \(url.path)")
        }
        return object
    }

    /// `GET /healthz/ready`'s status code (0: no answer).
    func readiness() async throws -> Int { try await admin("/healthz/ready").status }
}

/// `GET /v1/status` (docs/control-api.md), read leniently.
struct MeshStatus: Decodable, CustomStringConvertible {
    struct Certificate: Decodable {
        var spiffeID: String
        var notAfter: String
    }

    struct Node: Decodable {
        var name: String
        var appliedVersion: Int64?
        var upToDate: Bool?
        var lastSeen: String?
        var certificates: [Certificate]?
    }

    struct Workload: Decodable {
        var namespace: String
        var name: String
        var node: String?
        var captured: Bool?
        var reason: String?
        var hooks: String?
    }

    var revision: Int64
    var version: Int64
    var nodes: [Node]
    var workloads: [Workload]
    var raw = ""

    private enum CodingKeys: String, CodingKey { case revision, version, nodes, workloads }

    static func parse(_ text: String) throws -> MeshStatus {
        do {
            var status = try JSONDecoder().decode(MeshStatus.self, from: Data(text.utf8))
            status.raw = text
            return status
        } catch {
            throw HarnessError("`weftctl status -o json` is not the documented JSON (\(error)):\n\(text)")
        }
    }

    func node(_ name: String) -> Node? { nodes.first { $0.name == name } }

    func workload(_ namespace: String, _ name: String) -> Workload? {
        workloads.first { $0.namespace == namespace && $0.name == name }
    }

    var description: String { raw }
}

/// weft-control, run inside a node's network namespace with its own data dir.
final class ControlPlane: @unchecked Sendable {
    static let listen = "127.0.0.1:15443"
    static let server = "https://\(listen)"

    let listen: String
    var server: String { "https://\(listen)" }
    /// More weft-control flags (e.g. a short workload certificate lifetime).
    let extraArguments: [String]
    let netns: String
    /// Removed at teardown; `data` inside it is weft-control's `--data-dir`.
    let dir: URL
    let dataDir: URL
    let logURL: URL
    private(set) var process: Spawned?

    var caFile: String { dataDir.appendingPathComponent("ca/ca.crt").path }
    var adminTokenFile: String { dataDir.appendingPathComponent("admin.token").path }

    convenience init(node: TestNode) {
        self.init(netns: node.netns, id: node.id)
    }

    init(netns: String, id: String, listen: String = ControlPlane.listen, extraArguments: [String] = []) {
        self.netns = netns
        self.listen = listen
        self.extraArguments = extraArguments
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-it-control-\(id)")
        dataDir = dir.appendingPathComponent("data")
        logURL = dir.appendingPathComponent("weft-control.log")
    }

    var isRunning: Bool { process?.isRunning == true }

    /// Starts weft-control (the same data dir every time) and waits until
    /// weftctl gets an answer from it.
    func start(timeout: Double = 20) async throws {
        guard FileManager.default.isExecutableFile(atPath: TestEnvironment.weftControl) else {
            throw HarnessError("weft-control not found at \(TestEnvironment.weftControl): run `swift build` or set WEFT_CONTROL_BIN")
        }
        guard FileManager.default.isExecutableFile(atPath: TestEnvironment.weftctl) else {
            throw HarnessError("weftctl not found at \(TestEnvironment.weftctl): run `swift build` or set WEFTCTL_BIN")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: logURL.path), let log = try? FileHandle(forWritingTo: logURL) {
            _ = try? log.seekToEnd()
            try? log.write(contentsOf: Data("\n----- weft-control restarted by the test -----\n".utf8))
            try? log.close()
        }
        let child = try Spawned(
            label: "weft-control",
            arguments: ["nsenter", "--net=/run/netns/\(netns)", TestEnvironment.weftControl,
                        "--data-dir", dataDir.path, "--listen", listen] + extraArguments,
            outputURL: logURL, append: true)
        process = child
        let deadline = Date().addingTimeInterval(timeout)
        var last: CommandResult?
        while Date() < deadline {
            guard child.isRunning else {
                throw HarnessError("weft-control exited (status \(child.terminationStatus ?? -1)) at start; its log:\n\(log)")
            }
            if FileManager.default.fileExists(atPath: adminTokenFile) {
                let version = await weftctl(["version"])
                if version.succeeded { return }
                last = version
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError("weft-control not answering after \(timeout) s (last: \(last.map { "\($0)" } ?? "no admin.token yet")); its log:\n\(log)")
    }

    /// SIGKILL, and wait until it is gone.
    func kill() {
        process?.stop()
    }

    var log: String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    /// weftctl inside the netns, with this control plane's address and
    /// credentials (as flags, so that no ~/.weft/config can interfere).
    func weftctl(_ arguments: [String]) async -> CommandResult {
        await Command.runAsync(["nsenter", "--net=/run/netns/\(netns)", TestEnvironment.weftctl] + arguments
            + ["--server", server, "--ca-file", caFile, "--token-file", adminTokenFile])
    }

    /// `weftctl apply -f` of `manifest` (YAML).
    @discardableResult
    func apply(_ manifest: String) async throws -> String {
        let file = dir.appendingPathComponent("manifest-\(UUID().uuidString).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try manifest.write(to: file, atomically: true, encoding: .utf8)
        return try await checkWeftctl(["apply", "-f", file.path])
    }

    /// weftctl that must succeed; returns its stdout.
    @discardableResult
    func checkWeftctl(_ arguments: [String]) async throws -> String {
        let result = await weftctl(arguments)
        guard result.succeeded else { throw HarnessError(result.description) }
        return result.stdout
    }

    func status() async throws -> MeshStatus {
        try MeshStatus.parse(try await checkWeftctl(["status", "-o", "json"]))
    }

    /// Polls `weftctl status` until `condition` holds; the error shows the last report.
    @discardableResult
    func waitForStatus(_ what: String, timeout: Double = 8,
                       until condition: (MeshStatus) -> Bool) async throws -> MeshStatus {
        try await poll(what, timeout: timeout, every: .milliseconds(150), source: "weftctl status -o json",
                       fetch: { try await self.status() }, raw: \.raw, until: condition)
    }

    /// An HTTPS request to weft-control with curl inside the netns, with a
    /// client certificate when given: returns the status (0: no HTTP answer) and body.
    func request(_ method: String, _ path: String, json body: [String: Any]? = nil,
                 certificate: String? = nil, key: String? = nil) async throws -> (status: Int, body: String) {
        let id = UUID().uuidString
        let bodyURL = dir.appendingPathComponent("request-\(id).json")
        let answerURL = dir.appendingPathComponent("answer-\(id)")
        defer {
            try? FileManager.default.removeItem(at: bodyURL)
            try? FileManager.default.removeItem(at: answerURL)
        }
        var command = ["nsenter", "--net=/run/netns/\(netns)", "curl", "-sS", "--max-time", "10",
                       "-X", method, "--cacert", caFile, "-o", answerURL.path, "-w", "%{http_code}"]
        if let certificate, let key { command += ["--cert", certificate, "--key", key] }
        if let body {
            try JSONSerialization.data(withJSONObject: body).write(to: bodyURL)
            command += ["-H", "Content-Type: application/json", "--data-binary", "@\(bodyURL.path)"]
        }
        command.append(server + path)
        let result = await Command.runAsync(command)
        let answer = (try? String(contentsOf: answerURL, encoding: .utf8)) ?? ""
        return (Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, answer + result.stderr)
    }

    func printLog() {
        print("""
            ===== weft-control in \(netns) (\(dataDir.path)) =====
            \(log)
            ===== end of weft-control =====
            """)
    }

    /// Stops weft-control and removes its data dir. Synchronous: runs from a `defer`.
    func teardown() {
        process?.stop()
        process = nil
        try? FileManager.default.removeItem(at: dir)
    }
}

/// Runs `body` against a fresh node whose weftd is run by a fresh
/// weft-control: the control plane is up, a bootstrap token is in
/// `node.bootstrapTokenURL`, and (with `startWeftd`) weftd has joined. weftd
/// need not be ready: a node is ready once it applied a snapshot. Everything,
/// weft-control and its data dir included, is torn down afterwards whatever
/// `body` does.
func withControlNode(
    reconcileIntervalMs: Int = 200,
    startWeftd: Bool = true,
    extraConfig: String = "",
    _ body: (TestNode, ControlPlane) async throws -> Void
) async throws {
    try TestEnvironment.requireRoot()
    await NodeGate.shared.acquire()
    defer { NodeGate.shared.release() }
    let failuresBefore = FailureTracker.shared.count
    let node = TestNode(namespaces: [], excludePorts: [], reconcileIntervalMs: reconcileIntervalMs)
    let control = ControlPlane(node: node)
    var thrown: (any Error)?
    defer {
        let failed = thrown != nil || FailureTracker.shared.count > failuresBefore
        // Both logs before anything is stopped (weftd would only log that
        // weft-control went away); the node's teardown kills whatever runs
        // in its netns, weft-control included, and the control plane's own
        // teardown reaps it and removes its data dir.
        if failed { control.printLog() }
        node.teardown(printLogs: failed)
        control.teardown()
    }
    do {
        try node.setUp()
        try await control.start()
        try await node.configureJoin(control, extraConfig: extraConfig)
        if startWeftd {
            try node.startWeftd()
            try await waitJoined(node)
        }
        try await body(node, control)
    } catch {
        thrown = error
        throw error
    }
}

extension TestNode {
    /// A one-time token from `control` in the node's token file, and a
    /// `control:` section (plus `extraConfig`) in its config: weftd joins at start.
    func configureJoin(_ control: ControlPlane, extraConfig: String = "") async throws {
        let token = try await control.checkWeftctl(["node", "token", "create"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard !token.isEmpty else { throw HarnessError("`weftctl node token create` printed no token") }
        FileManager.default.createFile(atPath: bootstrapTokenURL.path, contents: Data((token + "\n").utf8),
                                       attributes: [.posixPermissions: 0o600])
        self.extraConfig = """
            control:
              server: \(control.server)
              caFile: \(control.caFile)
              tokenFile: \(bootstrapTokenURL.path)
              stateDir: \(stateDir.path)

            """ + extraConfig
        try rewriteConfig()
    }
}

/// Waits until weftd holds its node credential and /debug/capture answers.
func waitJoined(_ node: TestNode, timeout: Double = 15) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if let weftd = node.weftd, !weftd.isRunning {
            throw HarnessError("weftd exited (status \(weftd.terminationStatus ?? -1)) before joining; its log:\n\(node.weftdLog)")
        }
        if node.hasJoined, (try? await node.admin("/debug/capture").status) == 200 { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw HarnessError("weftd did not join weft-control within \(timeout) s; its log:\n\(node.weftdLog)")
}
