import Foundation
import Testing
@testable import WeftControl
import WeftCore
import WeftIdentity

@Suite("Node sync", .serialized)
struct NodeSyncTests {
    @Test("a snapshot holds every namespace, the node's own workloads, and every service with endpoints on any node")
    func snapshotContents() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([
            ServerManifests.namespace("shop"), ServerManifests.namespace("blog", mesh: false),
            ServerManifests.workload("catalog-v1", node: "node-a", address: "198.18.0.1"),
            ServerManifests.workload("catalog-v2", node: "node-b", address: "198.18.0.2"),
            ServerManifests.workload("cart", node: "node-a", labels: #"{"app": "cart"}"#, address: "198.18.0.3"),
            ServerManifests.service("catalog", virtualIP: "10.96.0.10"),
        ])
        let a = try await server.join("node-a")
        let reply = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a))
        let snapshot = try JSONDecoder().decode(NodeSnapshot.self, from: Data(reply.text.utf8))
        #expect(snapshot.version == 1)
        #expect(snapshot.trustDomain == "cluster.local")
        #expect(snapshot.namespaces == [.init(name: "blog", mesh: false), .init(name: "shop", mesh: true)])
        #expect(snapshot.workloads.map(\.name) == ["cart", "catalog-v1"])
        #expect(snapshot.workloads.first?.unit == "cart.service")
        #expect(snapshot.workloads.last?.ports == [.init(name: "http", port: 8080, protocol_: "http")])
        let catalog = try #require(snapshot.services.first)
        #expect(catalog.virtualIP == "10.96.0.10")
        #expect(catalog.ports == [.init(name: "http", port: 80, targetPort: 8080, protocol_: "http")])
        #expect(catalog.endpoints == [
            .init(workload: "catalog-v1", node: "node-a", addresses: ["198.18.0.1"]),
            .init(workload: "catalog-v2", node: "node-b", addresses: ["198.18.0.2"]),
        ])
    }

    @Test("a long-poll snapshot wakes within a second of an apply")
    func longPollWakesOnApply() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop")])
        let a = try await server.join("node-a")
        let current = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a)).json["version"]?.int64 ?? -1

        let clock = ContinuousClock()
        let poll = Task {
            let reply = try await server.request(.GET, "/v1/nodes/node-a/snapshot?after=\(current)&timeoutSeconds=20", as: .node(a))
            return (reply, clock.now)
        }
        try await Task.sleep(for: .milliseconds(300))
        let applying = clock.now
        _ = try await server.apply([ServerManifests.workload("catalog-v1")])
        // From the moment the apply is acknowledged (committed), not from its
        // start: on a loaded machine the apply itself may take a while.
        let acknowledged = clock.now
        let (reply, answered) = try await poll.value
        #expect(answered > applying, "the poll answered before anything was applied")
        let waited = answered - acknowledged
        #expect(waited < .seconds(1), "the poll answered \(waited) after the apply was acknowledged")
        #expect((reply.json["version"]?.int64 ?? 0) > current)
        #expect(reply.json["workloads"]?.arrayValue?.count == 1)
    }

    @Test("a long poll answers after timeoutSeconds when nothing changes, and node reports do not wake it")
    func nodeReportsDoNotWakePolls() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop")])
        let a = try await server.join("node-a")
        let version = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a)).json["version"]?.int64 ?? -1
        let clock = ContinuousClock()
        let started = clock.now
        let poll = Task { try await server.request(.GET, "/v1/nodes/node-a/snapshot?after=\(version)&timeoutSeconds=1", as: .node(a)) }
        try await Task.sleep(for: .milliseconds(200))
        let report = try await server.request(.PUT, "/v1/nodes/node-a/status", body: IdentityTests.status(applied: version), as: .node(a))
        #expect(report.status == 200, "\(report)")
        let reply = try await poll.value
        #expect(clock.now - started >= .milliseconds(950), "the report must not answer the poll")
        #expect(reply.json["version"]?.int64 == version)

        // An agent that is behind is answered at once.
        let behind = try await server.request(.GET, "/v1/nodes/node-a/snapshot?after=0&timeoutSeconds=30", as: .node(a))
        #expect(behind.json["version"]?.int64 == version)
    }

    @Test("a node's report registers the workloads it discovered, never replacing declared ones, and shows in /v1/status")
    func statusRegistersDiscoveredWorkloads() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.workload("catalog-v1", node: "node-a")])
        let a = try await server.join("node-a")
        let reported = #"""
        [{"namespace": "shop", "name": "catalog-v1.service", "cgroup": "/sys/fs/cgroup/weft.slice/weft-shop.slice/catalog-v1.service", "captured": true, "reason": null, "netns": "node"},
         {"namespace": "shop", "name": "cart.service", "cgroup": "/sys/fs/cgroup/weft.slice/weft-shop.slice/cart.service", "captured": false, "reason": "no hooks attached", "netns": "node"},
         {"namespace": "ghost", "name": "x.service", "cgroup": "/sys/fs/cgroup/weft.slice/weft-ghost.slice/x.service", "captured": true, "reason": null, "netns": "node"}]
        """#
        let reply = try await server.request(.PUT, "/v1/nodes/node-a/status", body: IdentityTests.status(applied: 1, workloads: reported), as: .node(a))
        #expect(reply.status == 200, "\(reply)")
        #expect(reply.json["registered"] == ["shop/cart.service"])

        let cart = try await server.request(.GET, "/v1/workloads/cart.service?namespace=shop")
        #expect(cart.status == 200, "\(cart)")
        #expect(cart.json["spec"]?["node"] == "node-a")
        #expect(cart.json["spec"]?["cgroup"] == "weft.slice/weft-shop.slice/cart.service")
        #expect(cart.json["metadata"]?["labels"] == nil)
        let declared = try await server.request(.GET, "/v1/workloads/catalog-v1?namespace=shop")
        #expect(declared.json["spec"]?["unit"] == "catalog-v1.service", "the declared workload is left as declared")
        #expect(try await server.request(.GET, "/v1/workloads/catalog-v1.service?namespace=shop").status == 404)

        // The registration is a change nodes must see; once the node has applied
        // it and reports the same workloads again, nothing more is registered.
        let version = try #require(try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a)).json["version"]?.int64)
        #expect(version > 1)
        let again = try await server.request(.PUT, "/v1/nodes/node-a/status", body: IdentityTests.status(applied: version, workloads: reported), as: .node(a))
        #expect(again.json["registered"] == [])

        let status = try await server.request(.GET, "/v1/status")
        #expect(status.status == 200, "\(status)")
        let node = try #require(status.json["nodes"]?.arrayValue?.first)
        #expect(node["name"] == "node-a" && node["appliedVersion"]?.int64 == version && node["upToDate"] == true, "\(status)")
        #expect(node["certificates"]?.arrayValue?.first?["spiffeID"] == "spiffe://cluster.local/ns/shop/sa/catalog")
        let workloads = try #require(status.json["workloads"]?.arrayValue)
        let byName = Dictionary(uniqueKeysWithValues: workloads.map { ($0["name"]?.stringValue ?? "", $0) })
        #expect(byName["catalog-v1"]?["captured"] == true)
        #expect(byName["cart.service"]?["captured"] == false)
        #expect(byName["cart.service"]?["reason"] == "no hooks attached")
        #expect(byName["x.service"]?["node"] == "node-a", "reported but unregistered workloads still show")

        let bad = try await server.request(.PUT, "/v1/nodes/node-a/status", body: #"{"appliedVersion": "x"}"#, as: .node(a))
        #expect(bad.status == 422 && bad.field == "appliedVersion", "\(bad)")
        let notJSON = try await server.request(.PUT, "/v1/nodes/node-a/status", body: "{", as: .node(a))
        #expect(notJSON.status == 400, "\(notJSON)")
    }

    @Test("resources, revision, CA, server certificate and admin token survive a restart on the same data dir")
    func stateSurvivesRestart() async throws {
        let first = try await InProcessServer.start()
        let applied = try await first.apply([ServerManifests.namespace("shop"), ServerManifests.service("catalog")])
        let a = try await first.join("node-a")
        let token = first.adminToken
        let ca = first.caPEM
        let serverCert = try String(contentsOfFile: first.directory + "/server.crt", encoding: .utf8)
        let revision = try await first.currentRevision()
        await first.stop(keepingData: true)

        let second = try await InProcessServer.start(directory: first.directory)
        defer { Task { await second.stop() } }
        #expect(second.adminToken == token)
        #expect(second.caPEM == ca)
        #expect(try String(contentsOfFile: first.directory + "/server.crt", encoding: .utf8) == serverCert)
        #expect(try await second.currentRevision() == revision)
        let catalog = try await second.request(.GET, "/v1/services/catalog?namespace=shop")
        #expect(catalog.json == applied.json["items"]?.arrayValue?[1])
        // The node credential from before the restart still works.
        let snapshot = try await second.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a))
        #expect(snapshot.status == 200 && snapshot.json["version"]?.int64 == applied.revision, "\(snapshot)")

        let attributes = try FileManager.default.attributesOfItem(atPath: first.directory + "/admin.token")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(token.count >= 32)
    }

    @Test("propagation: 50 agents long-polling over TLS all see an apply; p50 and p99 are printed")
    func propagationToFiftyAgents() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop")])
        let agents = try await withThrowingTaskGroup(of: JoinedNode.self) { group in
            for i in 0..<50 { group.addTask { try await server.join("node-\(i)") } }
            return try await group.reduce(into: [JoinedNode]()) { $0.append($1) }
        }
        // Each agent fetches once (its connection and TLS session are then up), as weftd does at start.
        var version: Int64 = -1
        for agent in agents {
            version = try await server.request(.GET, "/v1/nodes/\(agent.node)/snapshot", as: .node(agent)).json["version"]?.int64 ?? -1
        }
        let clock = ContinuousClock()
        let applyAt = LockedInstant()
        let known = version
        let latencies = try await withThrowingTaskGroup(of: Duration.self) { group in
            for agent in agents {
                group.addTask {
                    let reply = try await server.request(.GET, "/v1/nodes/\(agent.node)/snapshot?after=\(known)&timeoutSeconds=30",
                                                         as: .node(agent), timeout: .seconds(40))
                    let seen = clock.now
                    guard (reply.json["version"]?.int64 ?? 0) > known else { throw InProcessFailure("\(agent.node) got \(reply)") }
                    return seen - (applyAt.value ?? seen)
                }
            }
            try await Task.sleep(for: .milliseconds(500))
            applyAt.set(clock.now)
            _ = try await server.apply([ServerManifests.workload("catalog-v1", node: "node-7")])
            return try await group.reduce(into: [Duration]()) { $0.append($1) }.sorted()
        }
        #expect(latencies.count == 50)
        #expect(latencies.allSatisfy { $0 < .seconds(10) })
        func ms(_ d: Duration) -> String { String(format: "%.1f ms", Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1000) }
        let p50 = latencies[latencies.count / 2]
        let p99 = latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]
        print("weft-control propagation to 50 long-polling agents over TLS: p50 \(ms(p50)), p99 \(ms(p99)), max \(ms(latencies.last!))")
    }
}

/// When the apply was sent, shared with the polling tasks.
final class LockedInstant: @unchecked Sendable {
    private let lock = NSLock()
    private var instant: ContinuousClock.Instant?
    func set(_ i: ContinuousClock.Instant) { lock.lock(); instant = i; lock.unlock() }
    var value: ContinuousClock.Instant? { lock.lock(); defer { lock.unlock() }; return instant }
}
