import Foundation
import Testing
@testable import WeftControl
import WeftCore
import WeftStore

/// The pure parts of the server, without sockets: routing, virtual IP
/// allocation, apply planning, snapshot building, report matching.
@Suite("Control logic")
struct ControlLogicTests {
    @Test("routes match the contract's endpoints; reserved words are not resource types", arguments: [
        ("GET", "/healthz", APIRoute.health),
        ("POST", "/v1/apply", .apply),
        ("GET", "/v1/status", .status),
        ("POST", "/v1/tokens", .createToken),
        ("POST", "/v1/nodes/join", .join),
        ("GET", "/v1/nodes/node-a/snapshot", .snapshot(node: "node-a")),
        ("PUT", "/v1/nodes/node-a/status", .nodeStatus(node: "node-a")),
        ("POST", "/v1/nodes/node-a/certificates", .certificates(node: "node-a")),
        ("GET", "/v1/workloads", .list(plural: "workloads")),
        ("GET", "/v1/workloads/", .list(plural: "workloads")),
        ("GET", "/v1/services/catalog", .get(plural: "services", name: "catalog")),
        ("DELETE", "/v1/services/catalog", .delete(plural: "services", name: "catalog")),
    ])
    func routes(_ method: String, _ path: String, _ route: APIRoute) throws {
        #expect(try APIRoute.match(method: method, path: path) == route)
    }

    @Test("unknown paths are 404 and wrong methods 405", arguments: [
        ("GET", "/", 404), ("GET", "/v2/workloads", 404), ("GET", "/v1/nodes", 404), ("GET", "/v1/nodes/a/b", 404),
        ("GET", "/v1/tokens/x", 404), ("GET", "/v1/a/b/c/d/e", 404),
        ("POST", "/v1/workloads", 405), ("PUT", "/v1/workloads/x", 405), ("GET", "/v1/apply", 405),
        ("POST", "/v1/nodes/a/snapshot", 405), ("GET", "/v1/nodes/join", 405),
    ])
    func routeRefusals(_ method: String, _ path: String, _ status: Int) {
        #expect(throws: APIError.self) { try APIRoute.match(method: method, path: path) }
        do {
            _ = try APIRoute.match(method: method, path: path)
        } catch {
            #expect(error.status == status)
        }
    }

    @Test("virtual IPs: lowest free, never the network or broadcast address, nil when full")
    func allocator() throws {
        let v4 = VirtualIPAllocator(cidr: try CIDR("10.96.0.0/30"))
        #expect(v4.allocate(avoiding: []) == IPAddress("10.96.0.1"))
        #expect(v4.allocate(avoiding: [IPAddress("10.96.0.1")!]) == IPAddress("10.96.0.2"))
        #expect(v4.allocate(avoiding: [IPAddress("10.96.0.1")!, IPAddress("10.96.0.2")!]) == nil)
        let carry = VirtualIPAllocator(cidr: try CIDR("10.96.0.0/16"))
        let taken = Set((1...255).map { IPAddress(ipv4: 10, 96, 0, UInt8($0)) })
        #expect(carry.allocate(avoiding: taken) == IPAddress("10.96.1.0"))
        let v6 = VirtualIPAllocator(cidr: try CIDR("fd00:96::/64"))
        #expect(v6.allocate(avoiding: []) == IPAddress("fd00:96::1"))
        let single = VirtualIPAllocator(cidr: try CIDR("10.1.2.3/32"))
        #expect(single.allocate(avoiding: []) == IPAddress("10.1.2.3"))
    }

    private func stored(_ json: String, version: Int64, generation: Int64 = 1) throws -> StoredResource {
        var r = try ResourceDocument.decode(json: json)
        r.metadata.uid = "uid-\(r.metadata.name)"
        r.metadata.creationTimestamp = "2025-01-01T00:00:00Z"
        return StoredResource(key: r.storeKey, body: r.storedBody, resourceVersion: version, generation: generation, createdRevision: version)
    }

    private func planner() throws -> ApplyPlanner {
        ApplyPlanner(allocator: VirtualIPAllocator(cidr: try CIDR("10.96.0.0/16")), now: "2025-06-01T00:00:00Z", makeUID: { "new-uid" })
    }

    @Test("a Service keeps its address on re-apply; a clash is blamed on the document that asked for the taken address")
    func virtualIPPlanning() throws {
        let existing = try stored(ServerManifests.service("catalog", virtualIP: "10.96.0.5"), version: 3)
        var state = ApplyPlanner.Existing(byKey: [existing.key: existing], namespaces: ["shop"], services: [existing])
        let docs = [ServerManifests.service("other", virtualIP: "10.96.0.5"), ServerManifests.service("catalog")].map { try! JSONValue.parse($0) }
        #expect(throws: APIError(.invalid, "10.96.0.5 is already the virtual IP of Service shop/catalog; two Services cannot share a virtual IP (leave virtualIP out to have a free one allocated)", field: "spec.virtualIP", document: 0)) {
            try planner().plan(docs, existing: state)
        }
        let writes = try planner().plan([try JSONValue.parse(ServerManifests.service("catalog", port: 81)), try JSONValue.parse(ServerManifests.service("fresh"))], existing: state)
        guard case .service(let kept) = writes[0].resource.spec, case .service(let fresh) = writes[1].resource.spec else { Issue.record("not services"); return }
        #expect(kept.virtualIP == IPAddress("10.96.0.5"))
        #expect(fresh.virtualIP == IPAddress("10.96.0.1"))
        #expect(writes[0].expectedVersion == 3 && writes[0].bumpGeneration && !writes[0].unchanged)
        #expect(writes[0].resource.metadata.uid == "uid-catalog", "the uid survives updates")
        #expect(writes[1].expectedVersion == 0 && writes[1].resource.metadata.uid == "new-uid")

        state.services = []
        state.byKey = [:]
        let unchanged = try planner().plan([try JSONValue.parse(ServerManifests.service("catalog", virtualIP: "10.96.0.5"))],
                                           existing: ApplyPlanner.Existing(byKey: [existing.key: existing], namespaces: ["shop"], services: [existing]))
        #expect(unchanged[0].unchanged)
    }

    @Test("snapshots: the node's own workloads, every service with endpoints selected by labels, named target ports resolved")
    func snapshotBuilder() throws {
        func r(_ json: String) throws -> Resource { try ResourceDocument.decode(json: json) }
        var service = try r(ServerManifests.service("catalog", virtualIP: "10.96.0.10"))
        if case .service(var spec) = service.spec {
            spec.ports[0].targetPort = .name("http")
            service.spec = .service(spec)
        }
        let view = ClusterView(
            version: 7, namespaces: [try r(ServerManifests.namespace("shop"))],
            workloads: [try r(ServerManifests.workload("a", node: "n1")), try r(ServerManifests.workload("b", node: "n2")),
                        try r(ServerManifests.workload("c", node: "n1", labels: #"{"app": "other"}"#)),
                        try r(ServerManifests.workload("d", namespace: "blog", node: "n1"))],
            services: [service],
            policies: [try r(#"{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": "default", "namespace": "shop"}, "spec": {"mtls": {"mode": "STRICT"}}}"#),
                       try r(#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "deny-admin", "namespace": "shop"}, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}}"#)])
        let snapshot = NodeSnapshotBuilder.build(view, node: "n1", trustDomain: "td")
        // Security policies travel to every node with their spec as stored.
        #expect(snapshot.policies?.map { "\($0.kind) \($0.namespace)/\($0.name)" } == ["AuthorizationPolicy shop/deny-admin", "PeerAuthentication shop/default"])
        let decoded = SnapshotPolicies(snapshot: snapshot)
        #expect(decoded.undecodable.isEmpty && decoded.authorization.count == 1)
        #expect(decoded.peerAuthentication(namespace: "shop", labels: [:]).mode == .strict)
        #expect(snapshot.version == 7 && snapshot.node == "n1" && snapshot.trustDomain == "td")
        #expect(snapshot.workloads.map { "\($0.namespace)/\($0.name)" } == ["blog/d", "shop/a", "shop/c"])
        #expect(snapshot.services.first?.endpoints.map(\.workload) == ["a", "b"], "same namespace and matching labels only")
        #expect(snapshot.services.first?.ports.first?.targetPort == 8080)
        // Peers: every workload on every node, with what a tunnel needs.
        #expect(snapshot.peers?.map { "\($0.namespace)/\($0.name)@\($0.node)" } == ["blog/d@n1", "shop/a@n1", "shop/b@n2", "shop/c@n1"])
        #expect(snapshot.peers?.first { $0.name == "b" }?.mesh == true)
        #expect(snapshot.peers?.first { $0.name == "d" }?.mesh == false, "blog has no Namespace resource, so it is not meshed")
    }

    @Test("reported cgroups are made relative to the cgroup root", arguments: [
        ("/sys/fs/cgroup/weft.slice/weft-shop.slice/a.service", "weft.slice/weft-shop.slice/a.service"),
        ("/custom/root/weft.slice/weft-shop.slice/a.service", "weft.slice/weft-shop.slice/a.service"),
        ("/sys/fs/cgroup/custom/legacy-db", "custom/legacy-db"),
        ("/custom/legacy-db", "custom/legacy-db"),
    ])
    func relativeCgroups(_ reported: String, _ relative: String) {
        #expect(WorkloadReports.relativeCgroup(reported) == relative)
    }

    @Test("--listen accepts host:port and [IPv6]:port, and names what is wrong otherwise")
    func listenParsing() throws {
        #expect(try ControlServerConfiguration.parseListen("127.0.0.1:15443") == ("127.0.0.1", 15443))
        #expect(try ControlServerConfiguration.parseListen("[::1]:0") == ("::1", 0))
        #expect(try ControlServerConfiguration.parseListen("weft-control:443") == ("weft-control", 443))
        for bad in ["15443", "::1:80", "host:99999", ":80", "[::1]80"] {
            #expect(throws: BootstrapError.self, "\(bad)") { try ControlServerConfiguration.parseListen(bad) }
        }
    }

    @Test("the server certificate names weft-control, localhost and the listen address")
    func serverCertificateNames() {
        #expect(ServerCertificate.names(listenHost: "10.0.0.5") == .init(dns: ["weft-control", "localhost"], ips: [IPAddress("10.0.0.5")!]))
        #expect(ServerCertificate.names(listenHost: "0.0.0.0", hostAddresses: { ([], []) }).ips == [IPAddress("127.0.0.1")!, IPAddress("::1")!])
        // Every address: the host's own addresses and name too, so that nodes may dial any of them.
        let all = ServerCertificate.names(listenHost: "0.0.0.0", hostAddresses: { (["node-1"], [IPAddress("10.0.0.5")!]) })
        #expect(all.ips == [IPAddress("127.0.0.1")!, IPAddress("::1")!, IPAddress("10.0.0.5")!] && all.dns.contains("node-1"))
        #expect(!ServerCertificate.localHost().ips.contains { $0.isLoopback })
        #expect(ServerCertificate.names(listenHost: "control.example").dns == ["weft-control", "localhost", "control.example"])
    }
}
