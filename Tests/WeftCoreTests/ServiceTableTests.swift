import Testing
@testable import WeftCore

@Suite struct ServiceTableLookup {
    let snapshot = NodeSnapshot(
        version: 3, node: "a", trustDomain: "cluster.local", namespaces: [], workloads: [],
        services: [
            .init(namespace: "shop", name: "catalog", virtualIP: "10.96.0.10",
                  ports: [.init(name: "http", port: 80, targetPort: 8080, protocol_: "http"),
                          .init(name: "admin", port: 9000, protocol_: "tcp")],
                  endpoints: [.init(workload: "catalog-v1", node: "a", addresses: ["198.18.0.1"]),
                              .init(workload: "catalog-v2", node: "b", addresses: ["198.18.1.1", "not-an-ip"])]),
            .init(namespace: "shop", name: "broken", virtualIP: "nonsense", ports: [.init(name: nil, port: 1, protocol_: "tcp")], endpoints: []),
        ])

    @Test func aVirtualIPAndPortMapToEveryEndpointAtTheTargetPort() throws {
        let table = ServiceTable(snapshot: snapshot)
        let entry = try #require(table.lookup(IPAddress("10.96.0.10")!, port: 80))
        #expect(entry.service == "shop/catalog")
        #expect(entry.endpoints.map(\.description) == ["198.18.0.1:8080", "198.18.1.1:8080"])
        #expect(entry.endpoints.map(\.node) == ["a", "b"])
    }

    @Test func aPortWithoutTargetPortKeepsItsNumber() throws {
        let table = ServiceTable(snapshot: snapshot)
        #expect(try #require(table.lookup(IPAddress("10.96.0.10")!, port: 9000)).endpoints.first?.port == 9000)
    }

    @Test func unknownDestinationsAndUnparsableEntriesAreNotServices() {
        let table = ServiceTable(snapshot: snapshot)
        #expect(table.lookup(IPAddress("10.96.0.10")!, port: 81) == nil)
        #expect(table.lookup(IPAddress("198.18.0.1")!, port: 8080) == nil)
        #expect(table.entries.count == 2)
    }
}
