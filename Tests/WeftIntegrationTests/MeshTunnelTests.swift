import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Zero trust between nodes, on a real kernel: three nodes (network
/// namespaces on one bridge), each with its own weftd, one weft-control, and
/// workloads of two meshed namespaces spread over them.
@Suite(
    "HBONE mTLS between nodes",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct MeshTunnelTests {
    static let catalogVIP = "10.96.0.20"

    /// shop: frontend and cart on node 0, catalog-v1 on node 1, catalog-v2 on
    /// node 2, Service catalog over both catalogs. billing: payer on node 1,
    /// ledger on node 2.
    static func topology(_ mesh: Mesh) -> String {
        let n = mesh.nodes
        func workload(_ ns: String, _ name: String, sa: String, node: Int, port: Int?, app: String) -> String {
            let ports = port.map { "[{name: tcp, port: \($0), protocol: tcp}]" } ?? "[]"
            return """
                ---
                apiVersion: weft.dev/v1alpha1
                kind: Workload
                metadata: {name: \(name), namespace: \(ns), labels: {app: \(app)}}
                spec: {node: \(n[node].name), unit: \(name).service, serviceAccount: \(sa),
                       addresses: ["\(MeshFabric.address(ofNode: node))"], ports: \(ports)}

                """
        }
        return """
            apiVersion: weft.dev/v1alpha1
            kind: Namespace
            metadata: {name: shop}
            spec: {mesh: {enabled: true}}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Namespace
            metadata: {name: billing}
            spec: {mesh: {enabled: true}}

            """
            + workload("shop", "frontend", sa: "frontend", node: 0, port: nil, app: "frontend")
            + workload("shop", "cart", sa: "cart", node: 0, port: 7070, app: "cart")
            + workload("shop", "catalog-v1", sa: "catalog", node: 1, port: 8080, app: "catalog")
            + workload("shop", "catalog-v2", sa: "catalog", node: 2, port: 8080, app: "catalog")
            + workload("billing", "payer", sa: "payer", node: 1, port: nil, app: "payer")
            + workload("billing", "ledger", sa: "ledger", node: 2, port: 9090, app: "ledger")
            + """
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: catalog, namespace: shop}
            spec: {selector: {app: catalog}, virtualIP: \(catalogVIP),
                   ports: [{name: tcp, port: 80, targetPort: 8080, protocol: tcp}]}
            """
    }

    /// Applies the topology, starts its servers and waits until every node
    /// captures and holds the certificates it needs.
    static func bringUp(_ mesh: Mesh) async throws -> (frontend: String, payer: String) {
        try await mesh.control.apply(topology(mesh))
        let n = mesh.nodes
        _ = try await n[0].startWorkloadServer("shop", "cart.service", port: 7070)
        _ = try await n[1].startWorkloadServer("shop", "catalog-v1.service", port: 8080)
        _ = try await n[2].startWorkloadServer("shop", "catalog-v2.service", port: 8080)
        _ = try await n[2].startWorkloadServer("billing", "ledger.service", port: 9090)
        let frontend = try n[0].unit("shop", "frontend.service")
        let payer = try n[1].unit("billing", "payer.service")
        for node in n {
            try await node.waitForCapture("shop and billing captured", timeout: 15) {
                $0.namespace("shop")?.attached == true && $0.namespace("billing")?.attached == true
            }
        }
        try await mesh.waitForCertificates([
            (n[0], mesh.identity("shop", "frontend")), (n[0], mesh.identity("shop", "cart")),
            (n[1], mesh.identity("shop", "catalog")), (n[1], mesh.identity("billing", "payer")),
            (n[2], mesh.identity("shop", "catalog")), (n[2], mesh.identity("billing", "ledger")),
        ])
        return (frontend, payer)
    }

    /// Retries a probe while the snapshot and certificates settle on a node.
    static func firstSuccess(_ node: TestNode, from cgroup: String, host: String, port: Int,
                             _ options: [String] = [], attempts: Int = 30) async throws -> ProbeResult {
        var last: ProbeResult?
        for _ in 0..<attempts {
            let r = try await node.probe(from: cgroup, host: host, port: port, options, timeout: 10)
            if r.ok { return r }
            last = r
            try await Task.sleep(for: .milliseconds(200))
        }
        throw HarnessError("no probe to \(host):\(port) succeeded; last: \(last.map { "\($0)" } ?? "-")")
    }

    @Test func crossNodeTrafficIsMutualTLSWithTheWorkloadsIdentitiesAndNoPlaintextOnTheWire() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            let (frontend, payer) = try await Self.bringUp(mesh)
            let capture = try await mesh.fabric.startCapture()
            let marker = "WEFT-PLAINTEXT-MARKER-\(mesh.fabric.id)"

            let toCatalog = try await Self.firstSuccess(n[0], from: frontend, host: MeshFabric.address(ofNode: 1), port: 8080,
                                                        ["--payload", marker])
            #expect(toCatalog.viaProxy && toCatalog.echoMatches, "\(toCatalog)")
            let toLedger = try await Self.firstSuccess(n[1], from: payer, host: MeshFabric.address(ofNode: 2), port: 9090,
                                                       ["--payload", marker])
            #expect(toLedger.viaProxy && toLedger.echoMatches, "\(toLedger)")
            // Same node: no tunnel, no wire.
            let toCart = try await Self.firstSuccess(n[0], from: frontend, host: MeshFabric.address(ofNode: 0), port: 7070,
                                                     ["--payload", marker])
            #expect(toCart.viaProxy && toCart.echoMatches, "\(toCart)")

            // Many connections share the tunnels: one per (source identity,
            // destination identity, node) on each of the proxy's event loops.
            let many = try await n[0].many(from: frontend, host: MeshFabric.address(ofNode: 1), port: 8080,
                                           count: 40, workers: 8, timeout: 60)
            #expect(many.failed == 0, "\(many)")
            let tunnels = try await n[0].proxyCounter("tunnelsOpened")
            let streams = try await n[0].proxyCounter("outboundStreams")
            #expect(tunnels >= 1 && tunnels <= 2, "tunnels opened by node 0: \(tunnels)")
            #expect(streams >= 41, "streams: \(streams)")

            let pcap = try await capture.stop()
            #expect(pcap.range(of: Data(marker.utf8)) == nil, "the plaintext marker crossed the bridge")
            // The TLS ClientHellos on the wire, with the server names that
            // ask each destination node for the destination's identity.
            #expect(pcap.range(of: Data("shop.catalog.hbone.weft".utf8)) != nil, "no TLS ClientHello for shop/catalog on the bridge")
            #expect(pcap.range(of: Data("billing.ledger.hbone.weft".utf8)) != nil, "no TLS ClientHello for billing/ledger on the bridge")
            #expect(try capture.count("tcp port 15008") > 0)
            #expect(try capture.count("tcp port 8080 or tcp port 9090 or tcp port 7070") == 0,
                    "workload ports must never appear between nodes")

            // Both ends know both identities: from the certificate across
            // nodes, from the dialling cgroup on one node.
            let frontendID = mesh.identity("shop", "frontend"), catalogID = mesh.identity("shop", "catalog")
            let out0 = try await n[0].identityPairs()
            #expect(out0.contains { $0.direction == "outbound" && $0.path == "hbone" && $0.source == frontendID && $0.destination == catalogID }, "\(out0)")
            #expect(out0.contains { $0.direction == "outbound" && $0.path == "local" && $0.source == frontendID
                    && $0.destination == mesh.identity("shop", "cart") }, "\(out0)")
            let in1 = try await n[1].identityPairs()
            #expect(in1.contains { $0.direction == "inbound" && $0.path == "hbone" && $0.source == frontendID && $0.destination == catalogID }, "\(in1)")
            let in2 = try await n[2].identityPairs()
            #expect(in2.contains { $0.direction == "inbound" && $0.source == mesh.identity("billing", "payer")
                    && $0.destination == mesh.identity("billing", "ledger") }, "\(in2)")
        }
    }

    @Test func theHBONEPortRefusesPlaintextForeignExpiredAndMisusedCertificates() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            _ = try await Self.bringUp(mesh)
            let target = MeshFabric.address(ofNode: 1)
            let sni = ["--sni", "shop.catalog.hbone.weft", "--ca", mesh.control.caFile]
            let frontendID = mesh.identity("shop", "frontend")

            // The positive control: a certificate from the mesh CA is let in
            // and HTTP/2 answers.
            let good = try mesh.makeCertificate(frontendID, name: "good")
            let accepted = try await mesh.tlsProbe(host: target, sni + ["--cert", good.cert, "--key", good.key])
            #expect(accepted.handshake && accepted.h2Settings && accepted.alpn == "h2", "\(accepted)")

            let before = try await n[1].proxyCounter("handshakeFailures") + (try await n[1].proxyCounter("inboundRefused"))
            let plaintext = try await mesh.tlsProbe(host: target, ["--plaintext"])
            #expect(!plaintext.h2Settings, "plaintext HTTP/2 must not be spoken on 15008: \(plaintext)")
            let anonymous = try await mesh.tlsProbe(host: target, sni)
            #expect(!anonymous.h2Settings, "a client without a certificate got in: \(anonymous)")
            let cases: [(String, String, String)] = [
                ("othertd", frontendID, "a certificate from another mesh's CA"),
                ("good", "spiffe://evil.example/ns/shop/sa/frontend", "a SPIFFE ID of another trust domain"),
                ("expired", frontendID, "an expired certificate"),
                ("notyet", frontendID, "a certificate not yet valid"),
                ("serveronly", frontendID, "a certificate without clientAuth"),
                ("selfsigned", frontendID, "a self-signed leaf"),
            ]
            for (kind, spiffe, what) in cases {
                let bad = try mesh.makeCertificate(spiffe, kind: kind, name: "\(kind)-\(what.count)")
                let probe = try await mesh.tlsProbe(host: target, sni + ["--cert", bad.cert, "--key", bad.key])
                #expect(!probe.h2Settings, "\(what) was accepted: \(probe)")
            }
            let after = try await n[1].proxyCounter("handshakeFailures") + (try await n[1].proxyCounter("inboundRefused"))
            #expect(after - before >= 8, "refusals counted: \(before) -> \(after)")

            // A process outside the mesh on a node gets no workload identity:
            // weft-control wants the node's credential, and weftd keeps
            // workload keys in memory only.
            let (status, body) = try await mesh.control.request(
                "POST", "/v1/nodes/\(n[0].name)/certificates",
                json: ["namespace": "shop", "workload": "frontend", "csr": "x"])
            #expect(status == 401, "\(status) \(body)")
            let files = (FileManager.default.enumerator(atPath: n[0].stateDir.path)?.allObjects as? [String]) ?? []
            for file in files {
                let text = (try? String(contentsOfFile: n[0].stateDir.appendingPathComponent(file).path, encoding: .utf8)) ?? ""
                if text.contains("PRIVATE KEY") {
                    #expect(file == "node.key", "a private key other than the node's is on disk: \(file)")
                }
            }
            let outsider = try n[0].cgroup("outside.service")
            let probe = try n[0].start("tls-outsider", cgroup: outsider, [
                "tls", "--host", target, "--port", "15008"] + sni)
            _ = await probe.waitExit(timeout: 15)
            let line = try #require(probe.jsonLines.last, "\(probe.tail())")
            #expect(!(try TLSProbe.parse(line)).h2Settings, "an unmeshed process got through 15008: \(line)")
        }
    }

    @Test func certificatesRotateUnderLoadWithoutAFailedConnection() async throws {
        try await withMesh(nodes: 3, controlArguments: ["--workload-cert-ttl", "16"]) { mesh in
            let n = mesh.nodes
            let (frontend, _) = try await Self.bringUp(mesh)
            _ = try await Self.firstSuccess(n[0], from: frontend, host: MeshFabric.address(ofNode: 1), port: 8080)
            let first = try await mesh.control.status().node(n[0].name)?.certificates?
                .first { $0.spiffeID == mesh.identity("shop", "frontend") }?.notAfter
            let tunnelsBefore = try await n[0].proxyCounter("tunnelsOpened")

            // One connection held open across the renewals, and new ones all along.
            let held = try n[0].start("hold", cgroup: frontend, [
                "hold", "--host", MeshFabric.address(ofNode: 1), "--port", "8080", "--duration", "20"])
            let loop = try n[0].startLoop(in: frontend, host: MeshFabric.address(ofNode: 1), port: 8080, interval: 0.1)
            try await Task.sleep(for: .seconds(20))
            loop.child.stop()
            #expect(await held.waitExit(timeout: 10))
            let heldResult = held.jsonLines.last ?? ""
            #expect(heldResult.contains("\"ok\": true"), "the long-lived connection broke during rotation: \(heldResult)")

            let results = loop.results
            #expect(results.count >= 50, "only \(results.count) probes ran")
            let failed = results.filter { !$0.ok }
            #expect(failed.isEmpty, "failed during rotation: \(failed.prefix(5))")

            let now = try await mesh.control.status().node(n[0].name)?.certificates?
                .first { $0.spiffeID == mesh.identity("shop", "frontend") }?.notAfter
            #expect(first != nil && now != nil && first != now, "the certificate was not renewed: \(first ?? "-") -> \(now ?? "-")")
            let tunnelsAfter = try await n[0].proxyCounter("tunnelsOpened")
            #expect(tunnelsAfter > tunnelsBefore, "new connections must use a tunnel with the new certificate")
        }
    }

    @Test func killingANodesWeftdFailsServiceTrafficOverToEndpointsOnOtherNodes() async throws {
        try await withMesh(nodes: 3) { mesh in
            let n = mesh.nodes
            let (frontend, _) = try await Self.bringUp(mesh)
            _ = try await Self.firstSuccess(n[0], from: frontend, host: Self.catalogVIP, port: 80)
            let warm = try await n[0].many(from: frontend, host: Self.catalogVIP, port: 80, count: 10, timeout: 30)
            #expect(warm.failed == 0, "\(warm)")
            #expect(try await n[1].proxyCounter("inboundStreams") > 0, "both endpoints should take traffic before the failure")
            #expect(try await n[2].proxyCounter("inboundStreams") > 0, "both endpoints should take traffic before the failure")

            n[1].kill(SIGKILL)
            let onNode2 = try await n[2].proxyCounter("inboundStreams")
            let after = try await n[0].many(from: frontend, host: Self.catalogVIP, port: 80, count: 20, timeout: 60)
            #expect(after.failed == 0, "service traffic must fail over to node 2: \(after)")
            #expect(try await n[2].proxyCounter("inboundStreams") >= onNode2 + 20)
        }
    }
}
