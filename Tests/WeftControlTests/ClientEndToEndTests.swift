// ControlClient against a real weft-control binary: the calls weftctl and
// weftd make, including the node side (join, snapshot, status, certificates).
import Foundation
import Testing
import WeftControlClient
import WeftCore
import WeftIdentity

@Suite("Client end to end", .serialized)
struct ClientEndToEndTests {
    /// A server, and an admin client to it; both gone afterwards whatever happens.
    static func withAdmin(_ body: (WeftControlProcess, ControlClient) async throws -> Void) async throws {
        let server = try WeftControlProcess()
        defer { server.stop() }
        let endpoint = ControlEndpoint(url: server.url, caBundlePEM: try String(contentsOfFile: server.caFile, encoding: .utf8))
        let token = try String(contentsOfFile: server.tokenFile, encoding: .utf8)
        let client = try ControlClient(endpoint: endpoint, credentials: .adminToken(token))
        do {
            try await body(server, client)
        } catch {
            try? await client.shutdown()
            throw WeftctlTestError("\(error)\n--- weft-control log\n\(server.log)")
        }
        try await client.shutdown()
    }

    static let items: [JSONValue] = [
        ["apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": ["name": "shop"], "spec": ["mesh": ["enabled": true]]],
        ["apiVersion": "weft.dev/v1alpha1", "kind": "Workload",
         "metadata": ["name": "catalog-v1", "namespace": "shop", "labels": ["app": "catalog"]],
         "spec": ["node": "node-a", "unit": "catalog-v1.service", "serviceAccount": "catalog",
                  "ports": [["name": "http", "port": 8080, "protocol": "http"]]]],
        ["apiVersion": "weft.dev/v1alpha1", "kind": "Service", "metadata": ["name": "catalog", "namespace": "shop"],
         "spec": ["selector": ["app": "catalog"], "ports": [["name": "http", "port": 80, "targetPort": 8080, "protocol": "http"]]]],
    ]

    @Test("apply, list, get and delete round-trip through the API")
    func resourceCalls() async throws {
        try await Self.withAdmin { _, client in
            let dry = try await client.apply(Self.items, dryRun: true)
            #expect(dry.items.count == 3)
            #expect(try await client.list(plural: "namespaces").items.isEmpty)

            let applied = try await client.apply(Self.items)
            #expect(applied.revision > 0)
            #expect(applied.items[1]["metadata"]?["resourceVersion"] == .string(String(applied.revision)))

            let list = try await client.list(plural: ResourceKind.workload.plural, namespace: "shop")
            #expect(list.items.map { $0["metadata"]?["name"] } == ["catalog-v1"])
            #expect(list.revision >= applied.revision)

            let service = try await client.get(plural: "services", name: "catalog", namespace: "shop")
            #expect(service["spec"]?["virtualIP"]?.stringValue != nil)

            let stale = await controlError {
                try await client.delete(plural: "services", name: "catalog", namespace: "shop", resourceVersion: "999")
            }
            #expect(stale?.status == 409)
            #expect(stale?.code == "Conflict")
            let revision = try await client.delete(plural: "services", name: "catalog", namespace: "shop")
            #expect(revision > applied.revision)
            let gone = await controlError { _ = try await client.get(plural: "services", name: "catalog", namespace: "shop") }
            #expect(gone?.isNotFound == true)
        }
    }

    @Test("a refused apply carries the server's code, field and document")
    func refusedApply() async throws {
        try await Self.withAdmin { _, client in
            var bad = Self.items
            bad.removeFirst()  // no Namespace: the Workload's namespace does not exist
            let error = await controlError { _ = try await client.apply(bad) }
            #expect(error?.kind == .rejected)
            #expect(error?.status == 422)
            #expect(error?.code == "Invalid")
            #expect(error?.field == "metadata.namespace")
            #expect(error?.document == 0)
        }
    }

    @Test("a node joins with a bootstrap token, then long-polls its snapshot, reports status and gets a workload certificate")
    func nodeLifecycle() async throws {
        try await Self.withAdmin { server, admin in
            let applied = try await admin.apply(Self.items)
            let (token, expiresAt) = try await admin.createToken(ttlSeconds: 3600)
            #expect(token.hasPrefix("weft."))
            #expect(ResourceTable.parseTimestamp(expiresAt) != nil)

            let trustDomain = try TrustDomain("cluster.local")
            let (nodeKey, csr) = try SpiffeID.node(trustDomain: trustDomain, name: "node-a").makeKeyAndCSR()
            let joined = try await ControlClient.join(endpoint: admin.endpoint, token: token, node: "node-a", csrPEM: try PEM.encode(csr))
            #expect(joined.trustDomain == "cluster.local")
            #expect(joined.caBundlePEM.contains("BEGIN CERTIFICATE"))
            #expect(try PEM.decodeCertificate(joined.certificatePEM).spiffeID().uri == "spiffe://cluster.local/node/node-a")

            // The token is spent.
            let csrPEM = try PEM.encode(csr)
            let spent = await controlError {
                _ = try await ControlClient.join(endpoint: admin.endpoint, token: token, node: "node-b", csrPEM: csrPEM)
            }
            #expect(spent?.status == 401)

            let endpoint = ControlEndpoint(url: server.url, caBundlePEM: joined.caBundlePEM)
            let node = try ControlClient(endpoint: endpoint, credentials: .nodeCertificate(
                certificatePEM: joined.certificatePEM, privateKeyPEM: PEM.encode(nodeKey)))
            do {
                let snapshot = try await node.snapshot(node: "node-a")
                #expect(snapshot.node == "node-a")
                #expect(snapshot.workloads.map(\.name) == ["catalog-v1"])
                #expect(snapshot.services.first?.ports.first?.targetPort == 8080)
                #expect(snapshot.namespaces == [NodeSnapshot.Namespace(name: "shop", mesh: true)])
                #expect(snapshot.version >= applied.revision)

                // A long poll at the current version answers after its timeout with the same version.
                let started = Date()
                let same = try await node.snapshot(node: "node-a", after: snapshot.version, timeoutSeconds: 1)
                #expect(same.version == snapshot.version)
                #expect(Date().timeIntervalSince(started) >= 0.9)

                try await node.putStatus(node: "node-a", NodeStatus(
                    appliedVersion: snapshot.version, weftdVersion: "0.1.0",
                    workloads: [.init(namespace: "shop", name: "catalog-v1.service", cgroup: "/weft.slice/catalog-v1.service",
                                      captured: true, reason: nil, netns: "node")],
                    certificates: []))

                let (workloadKey, workloadCSR) = try SpiffeID.workload(
                    trustDomain: trustDomain, namespace: try NamespaceName("shop"),
                    serviceAccount: try ServiceAccountName("catalog")).makeKeyAndCSR()
                _ = workloadKey
                let issued = try await node.requestCertificate(node: "node-a", namespace: "shop", workload: "catalog-v1",
                                                               csrPEM: try PEM.encode(workloadCSR))
                #expect(try PEM.decodeCertificate(issued.certificatePEM).spiffeID().uri == "spiffe://cluster.local/ns/shop/sa/catalog")

                // A node acts for itself only.
                let other = await controlError { _ = try await node.snapshot(node: "node-b") }
                #expect(other?.status == 403)
            } catch {
                try? await node.shutdown()
                throw error
            }
            try await node.shutdown()

            let status = try await admin.status()
            let nodes = status["nodes"]?.arrayValue ?? []
            #expect(nodes.first?["name"] == "node-a")
            #expect(nodes.first?["weftdVersion"] == "0.1.0")
        }
    }

    @Test("node endpoints without the node certificate are refused with 401 and a hint")
    func nodeEndpointsNeedTheCertificate() async throws {
        try await Self.withAdmin { _, admin in
            let error = await controlError { _ = try await admin.snapshot(node: "node-a") }
            #expect(error?.status == 401)
            #expect(error?.hint == "node endpoints take the node's certificate from /v1/nodes/join, not the admin token")
        }
    }
}
