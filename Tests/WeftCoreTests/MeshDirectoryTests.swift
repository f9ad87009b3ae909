import Foundation
import Testing
@testable import WeftCore

@Suite struct MeshDirectoryLookup {
    static func peer(_ ns: String, _ name: String, node: String, sa: String, mesh: Bool = true,
                     addresses: [String], ports: [Int] = []) -> NodeSnapshot.Peer {
        .init(namespace: ns, name: name, node: node, serviceAccount: sa, mesh: mesh, addresses: addresses, ports: ports)
    }

    let directory = MeshDirectory(snapshot: NodeSnapshot(
        version: 1, node: "a", trustDomain: "cluster.local", namespaces: [], workloads: [], services: [],
        peers: [
            peer("shop", "frontend", node: "a", sa: "frontend", addresses: ["198.18.1.1"]),
            peer("shop", "catalog", node: "b", sa: "catalog", addresses: ["198.18.1.2"], ports: [8080]),
            peer("billing", "ledger", node: "b", sa: "ledger", addresses: ["198.18.1.2"], ports: [9090]),
            peer("legacy", "db", node: "c", sa: "default", mesh: false, addresses: ["198.18.1.3"]),
            peer("shop", "x", node: "d", sa: "x", addresses: ["198.18.1.4"]),
            peer("shop", "y", node: "d", sa: "y", addresses: ["198.18.1.4"]),
            peer("shop", "bad name!", node: "d", sa: "z", addresses: ["198.18.1.5"]),
        ]))

    @Test func aDeclaredPortPicksTheWorkloadAmongThoseSharingAnAddress() {
        guard case .workload(let e) = directory.lookup(IPAddress("198.18.1.2")!, port: 9090) else {
            Issue.record("not found")
            return
        }
        #expect(e.identity == "spiffe://cluster.local/ns/billing/sa/ledger" && e.node == "b" && e.mesh)
    }

    @Test func workloadsWithDifferentIdentitiesOnOneAddressAndNoDeclaredPortAreAmbiguous() {
        guard case .ambiguous(let all) = directory.lookup(IPAddress("198.18.1.4")!, port: 80) else {
            Issue.record("expected ambiguity")
            return
        }
        #expect(all.count == 2)
        // Two identities on 198.18.1.2, neither declaring 7000: ambiguous too.
        if case .workload = directory.lookup(IPAddress("198.18.1.2")!, port: 7000) { Issue.record("guessed an identity") }
    }

    @Test func anAddressOfOneWorkloadMatchesAnyPort() {
        guard case .workload(let e) = directory.lookup(IPAddress("198.18.1.1")!, port: 1234) else {
            Issue.record("not found")
            return
        }
        #expect(e.ref.description == "shop/frontend")
    }

    @Test func unknownAddressesAreExternalAndUnmeshedWorkloadsSaySo() {
        #expect(directory.lookup(IPAddress("10.0.0.1")!, port: 80) == .external)
        #expect(directory.lookup(IPAddress("198.18.1.5")!, port: 80) == .external, "an unparsable name is left out")
        guard case .workload(let db) = directory.lookup(IPAddress("198.18.1.3")!, port: 5432) else {
            Issue.record("not found")
            return
        }
        #expect(!db.mesh)
    }

    @Test func localIdentitiesAreTheMeshedWorkloadsOfThisNode() {
        #expect(directory.localIdentities == ["spiffe://cluster.local/ns/shop/sa/frontend"])
    }

    @Test func serverNamesRoundTripToTheIdentityTheyAskFor() {
        let name = MeshDirectory.serverName(namespace: "shop", serviceAccount: "catalog")
        #expect(name == "shop.catalog.hbone.weft")
        #expect(directory.identity(forServerName: name) == "spiffe://cluster.local/ns/shop/sa/catalog")
        #expect(directory.identity(forServerName: "shop.my.sa.hbone.weft") == "spiffe://cluster.local/ns/shop/sa/my.sa")
        for other in ["catalog.example.com", "hbone.weft", ".x.hbone.weft", "shop..hbone.weft", "shop.hbone.weft"] {
            #expect(directory.identity(forServerName: other) == nil, "\(other)")
        }
    }

    @Test func aSnapshotFromAnOlderWeftdWithoutPeersDecodesToAnEmptyDirectory() throws {
        let json = #"{"version":1,"node":"a","trustDomain":"td","namespaces":[],"workloads":[],"services":[]}"#
        let snapshot = try JSONDecoder().decode(NodeSnapshot.self, from: Data(json.utf8))
        #expect(snapshot.peers == nil)
        #expect(MeshDirectory(snapshot: snapshot).isEmpty)
    }
}
