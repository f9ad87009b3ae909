import Foundation
import Testing
@testable import WeftControl
import WeftControlClient
import WeftCore
import WeftEtcdTesting

/// weft-control replicas sharing one etcd cluster (three members on loopback,
/// started around each suite and always torn down).
@Suite("Replicas on etcd", .etcdCluster)
struct ReplicaTests {
    static func replicas() async throws -> (InProcessServer, InProcessServer, etcd: (endpoints: [String], prefix: String)) {
        let cluster = try EtcdClusterTrait.required()
        let etcd = (endpoints: cluster.clientURLs, prefix: "/replicas-\(UUID().uuidString)/")
        let a = try await InProcessServer.start(etcd: etcd)
        let b = try await a.replica(etcd: (Array(etcd.endpoints.reversed()), etcd.prefix))
        return (a, b, etcd)
    }

    static func client(_ server: InProcessServer, _ node: JoinedNode) throws -> ControlClient {
        try ControlClient(endpoint: ControlEndpoint(url: "https://127.0.0.1:\(server.port)", caBundlePEM: server.caPEM),
                          credentials: .nodeCertificate(certificatePEM: node.certificatePEM, privateKeyPEM: node.keyPEM))
    }

    @Test func anApplyThroughOneReplicaWakesAnAgentLongPollingAnother() async throws {
        let (a, b, _) = try await Self.replicas()
        defer { Task { await a.stop(); await b.stop() } }
        _ = try await a.apply([ServerManifests.namespace("shop")])
        // A token made on one replica is spent on the other: tokens live in the shared store.
        let node = try await b.join("node-a")
        let agent = try Self.client(b, node)
        defer { Task { try? await agent.shutdown() } }
        let first = try await agent.snapshot(node: "node-a")

        let clock = ContinuousClock()
        let poll = Task { try await agent.snapshot(node: "node-a", after: first.version, timeoutSeconds: 20) }
        try await Task.sleep(for: .milliseconds(300))
        let applied = clock.now
        let reply = try await a.apply([ServerManifests.workload("catalog-v1", node: "node-a"), ServerManifests.service("catalog")])
        #expect(reply.status == 200, "\(reply)")
        let next = try await poll.value
        let waited = clock.now - applied
        #expect(waited < .seconds(3), "the poll on the other replica answered \(waited) after the apply")
        #expect(next.version == reply.revision, "versions are etcd revisions, the same on every replica")
        #expect(next.workloads.map(\.name) == ["catalog-v1"])
        #expect(next.services.first?.endpoints.map(\.workload) == ["catalog-v1"])
    }

    @Test func anAgentMovingToAnotherReplicaKeepsItsPlace() async throws {
        let (a, b, _) = try await Self.replicas()
        defer { Task { await a.stop(); await b.stop() } }
        _ = try await a.apply([ServerManifests.namespace("shop"), ServerManifests.workload("catalog-v1", node: "node-a")])
        let node = try await a.join("node-a")
        let onA = try Self.client(a, node)
        let onB = try Self.client(b, node)
        defer { Task { try? await onA.shutdown(); try? await onB.shutdown() } }
        let fromA = try await onA.snapshot(node: "node-a")
        // B knows A's version: it waits for a change instead of answering at once.
        let clock = ContinuousClock()
        let started = clock.now
        let same = try await onB.snapshot(node: "node-a", after: fromA.version, timeoutSeconds: 1)
        #expect(clock.now - started >= .milliseconds(900), "the other replica must treat the version as current")
        #expect(same == fromA)
        // A node report through A moves the store's revision but not the version.
        let report = try await a.request(.PUT, "/v1/nodes/node-a/status", body: IdentityTests.status(applied: fromA.version), as: .node(node))
        #expect(report.status == 200, "\(report)")
        #expect(try await onB.snapshot(node: "node-a", after: fromA.version, timeoutSeconds: 1).version == fromA.version)
        // A change through A wakes the poll on B.
        let poll = Task { try await onB.snapshot(node: "node-a", after: fromA.version, timeoutSeconds: 20) }
        try await Task.sleep(for: .milliseconds(200))
        let reply = try await a.apply([ServerManifests.workload("catalog-v2", node: "node-a", address: "198.18.0.2")])
        #expect(try await poll.value.version == reply.revision)
    }

    @Test func racingResourceVersionsThroughTwoReplicasGiveOneWinnerAndOneConflict() async throws {
        let (a, b, _) = try await Self.replicas()
        defer { Task { await a.stop(); await b.stop() } }
        _ = try await a.apply([ServerManifests.namespace("shop"), ServerManifests.workload("w", node: "node-a")])
        for round in 0..<6 {
            let current = try await a.request(.GET, "/v1/workloads/w?namespace=shop")
            let version = try #require(current.json["metadata"]?["resourceVersion"]?.stringValue)
            async let viaA = a.apply([ServerManifests.workload("w", node: "node-a", address: "198.18.1.\(round)", resourceVersion: version)])
            async let viaB = b.apply([ServerManifests.workload("w", node: "node-b", address: "198.18.2.\(round)", resourceVersion: version)])
            let (ra, rb) = try await (viaA, viaB)
            #expect(Set([ra.status, rb.status]) == [200, 409], "round \(round): \(ra) / \(rb)")
            let stored = try await b.request(.GET, "/v1/workloads/w?namespace=shop")
            let winner = ra.status == 200 ? "node-a" : "node-b"
            #expect(stored.json["spec"]?["node"]?.stringValue == winner, "the loser must not overwrite: \(stored)")
        }
        // The other replica's status reports the version of a change it did not make.
        let last = try await a.apply([ServerManifests.workload("x", node: "node-a", address: "198.18.3.1")])
        let status = try await b.request(.GET, "/v1/status")
        #expect(status.json["version"]?.int64 == last.revision, "\(status)")
    }

    @Test func servicesAppliedAtOnceThroughTwoReplicasNeverShareAVirtualIP() async throws {
        let (a, b, _) = try await Self.replicas()
        defer { Task { await a.stop(); await b.stop() } }
        _ = try await a.apply([ServerManifests.namespace("shop")])
        var accepted: [String] = []
        for round in 0..<8 {
            // Both replicas pick the lowest free address for their new Service at the same moment.
            async let viaA = a.apply([ServerManifests.service("a\(round)")])
            async let viaB = b.apply([ServerManifests.service("b\(round)")])
            let (ra, rb) = try await (viaA, viaB)
            for (name, reply) in [("a\(round)", ra), ("b\(round)", rb)] {
                if reply.status == 200 {
                    accepted.append(name)
                } else {
                    #expect(reply.status == 409 && reply.field == "spec.virtualIP", "\(reply)")
                }
            }
        }
        let services = try await b.request(.GET, "/v1/services?namespace=shop").json["items"]?.arrayValue ?? []
        #expect(Set(services.compactMap { $0["metadata"]?["name"]?.stringValue }) == Set(accepted))
        let vips = services.compactMap { $0["spec"]?["virtualIP"]?.stringValue }
        #expect(vips.count == services.count && Set(vips).count == vips.count, "duplicate virtual IPs: \(vips.sorted())")
        // A deleted Service's address is free again, through either replica.
        let first = try #require(services.first)
        let name = try #require(first["metadata"]?["name"]?.stringValue)
        #expect(try await a.request(.DELETE, "/v1/services/\(name)?namespace=shop").status == 200)
        let again = try await b.apply([ServerManifests.service("again", virtualIP: first["spec"]?["virtualIP"]?.stringValue)])
        #expect(again.status == 200, "\(again)")
    }

    @Test func anApplyLargerThanOneEtcdTransactionIs413AndWritesNothing() async throws {
        let (a, b, _) = try await Self.replicas()
        defer { Task { await a.stop(); await b.stop() } }
        _ = try await a.apply([ServerManifests.namespace("shop")])
        let many = (0..<130).map { ServerManifests.workload("w\($0)", address: "198.18.0.\($0 + 1)") }
        let reply = try await a.apply(many)
        #expect(reply.status == 413 && reply.code == "TooLarge" && reply.message.contains("127"), "\(reply)")
        #expect(try await b.request(.GET, "/v1/workloads?namespace=shop").json["items"]?.arrayValue?.isEmpty == true)
        #expect(try await a.apply(Array(many.prefix(100))).status == 200, "smaller batches go through")
    }

    @Test func aReplicaWithAnotherMeshCARefusesToStart() async throws {
        let cluster = try EtcdClusterTrait.required()
        let etcd = (endpoints: cluster.clientURLs, prefix: "/ca-\(UUID().uuidString)/")
        let a = try await InProcessServer.start(etcd: etcd)
        defer { Task { await a.stop() } }
        // A data dir of its own, with no CA: it would make a fresh one and split the mesh.
        let dir = InProcessServer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let b = try await InProcessServer.start(directory: dir, etcd: etcd)
            await b.stop()
            Issue.record("a replica without the shared CA started")
        } catch let e as BootstrapError {
            #expect(e.message.contains("copy ca/ca.crt and ca/ca.key"), "\(e)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/ca/ca.key"), "no CA of its own was made")
        // Another CA placed there is refused as well.
        let other = try await InProcessServer.start()
        defer { Task { await other.stop() } }
        let dir2 = InProcessServer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir2) }
        try FileManager.default.createDirectory(atPath: dir2 + "/ca", withIntermediateDirectories: true)
        for f in ["ca/ca.crt", "ca/ca.key"] { try FileManager.default.copyItem(atPath: other.directory + "/" + f, toPath: dir2 + "/" + f) }
        await #expect(throws: BootstrapError.self) { let c = try await InProcessServer.start(directory: dir2, etcd: etcd); await c.stop() }
    }

    @Test func storeFlagsAreCheckedTogetherAndNamed() throws {
        func refused(_ store: String, _ endpoints: String?, _ prefix: String? = nil, naming flag: String) {
            do {
                _ = try ControlServerConfiguration(dataDirectory: "/tmp/x", store: store, etcdEndpoints: endpoints, etcdPrefix: prefix)
                Issue.record("accepted --store \(store) --etcd-endpoints \(endpoints ?? "-")")
            } catch let e as BootstrapError {
                #expect(e.message.hasPrefix(flag), "\(e)")
            } catch {
                Issue.record("\(error)")
            }
        }
        refused("etcd", nil, naming: "--etcd-endpoints")
        refused("etcd", "127.0.0.1:2379", naming: "--etcd-endpoints")
        refused("etcd", "http://127.0.0.1:2379,", naming: "--etcd-endpoints")
        refused("etcd", "https://127.0.0.1:2379", naming: "--etcd-endpoints")
        refused("etcd", "http://a:1,http://a:1", naming: "--etcd-endpoints")
        refused("etcd", "http://a:1", "weft", naming: "--etcd-prefix")
        refused("sqlite", "http://a:1", naming: "--etcd-endpoints")
        refused("mysql", nil, naming: "--store")
        let ok = try ControlServerConfiguration(dataDirectory: "/tmp/x", store: "etcd", etcdEndpoints: "http://10.0.0.1:2379, http://10.0.0.2:2379")
        #expect(ok.store == .etcd(endpoints: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"], prefix: "/weft/"))
        #expect(try ControlServerConfiguration(dataDirectory: "/tmp/x").store == .sqlite)
    }
}

/// Its own cluster: a member is killed.
@Suite("Replica failover on etcd", .dedicatedEtcdCluster)
struct ReplicaFailoverTests {
    @Test func killingAnEtcdMemberAndAReplicaLosesNoAcknowledgedChange() async throws {
        let cluster = try EtcdClusterTrait.required()
        let urls = cluster.clientURLs
        let prefix = "/failover-\(UUID().uuidString)/"
        // Each replica prefers another member.
        let a = try await InProcessServer.start(etcd: (urls, prefix))
        let b = try await a.replica(etcd: ([urls[1], urls[2], urls[0]], prefix))
        defer { Task { await b.stop() } }
        _ = try await a.apply([ServerManifests.namespace("shop")])
        let node = try await a.join("node-a")
        let agents = [try ReplicaTests.client(a, node), try ReplicaTests.client(b, node)]
        defer { Task { for c in agents { try? await c.shutdown() } } }

        // The agent, as weftd's ControlSync: long-polls the replica in use and
        // moves to the next when a request fails, keeping its version.
        let latest = LockedSnapshot()
        let watching = Task { () -> Int in
            var applied: NodeSnapshot?
            var index = 0
            var switches = 0
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline, !Task.isCancelled {
                do {
                    applied = try await agents[index].snapshot(node: "node-a", after: applied?.version, timeoutSeconds: 2)
                    latest.set(applied!)
                } catch {
                    index = (index + 1) % agents.count
                    switches += 1
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            return switches
        }

        // Writes alternate between the replicas; a failed one goes to the other.
        let replicas = [a, b]
        var acknowledged: [String] = []
        var next = 0
        for i in 0..<40 {
            if i == 15 {
                cluster.kill(member: 0)
            }
            if i == 25 {
                await a.stop()
            }
            let name = "svc-\(i)"
            for attempt in 0..<20 {
                let replica = replicas[(next + attempt) % 2]
                if replica === a && i >= 25 { continue }
                if let reply = try? await replica.apply([ServerManifests.service(name)]), reply.status == 200 {
                    acknowledged.append(name)
                    break
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            next += 1
        }
        #expect(acknowledged.count >= 35, "most writes must get through the failover: \(acknowledged.count) of 40")

        let listed = try await b.request(.GET, "/v1/services?namespace=shop")
        let stored = Set((listed.json["items"]?.arrayValue ?? []).compactMap { $0["metadata"]?["name"]?.stringValue })
        #expect(Set(acknowledged).isSubset(of: stored), "acknowledged but lost: \(Set(acknowledged).subtracting(stored).sorted())")
        let vips = (listed.json["items"]?.arrayValue ?? []).compactMap { $0["spec"]?["virtualIP"]?.stringValue }
        #expect(Set(vips).count == vips.count)

        // The watching agent ends on the surviving replica with everything acknowledged.
        let want = try #require(listed.revision)
        let until = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < until, (latest.value?.version ?? 0) < want {
            try await Task.sleep(for: .milliseconds(100))
        }
        watching.cancel()
        let switches = await watching.value
        #expect(switches >= 1, "the agent must have moved off the stopped replica")
        let last = try #require(latest.value)
        #expect(last.version == want, "the agent's version \(last.version) must reach the store's \(want)")
        #expect(Set(acknowledged).isSubset(of: Set(last.services.map(\.name))),
                "the watching agent missed: \(Set(acknowledged).subtracting(last.services.map(\.name)).sorted())")
    }
}

/// The latest snapshot an agent task applied, read by the test.
final class LockedSnapshot: @unchecked Sendable {
    private let lock = NSLock()
    private var snapshot: NodeSnapshot?
    func set(_ s: NodeSnapshot) { lock.lock(); snapshot = s; lock.unlock() }
    var value: NodeSnapshot? { lock.lock(); defer { lock.unlock() }; return snapshot }
}
