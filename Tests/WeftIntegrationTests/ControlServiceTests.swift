import Foundation
import Testing

/// Services from weft-control on a real kernel: a workload dials a Service's
/// virtual IP, which exists nowhere on the network; the node proxy connects
/// to one of the Service's endpoints instead.
@Suite(
    "service virtual IPs from weft-control",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct ControlServiceTests {
    @Test func aConnectionToAServiceVirtualIPReachesItsEndpoint() async throws {
        try await withControlNode { node, control in
            let server = try await node.startServer(port: 8080)
            try await control.apply("""
                apiVersion: weft.dev/v1alpha1
                kind: Namespace
                metadata: {name: shop}
                spec: {mesh: {enabled: true}}
                ---
                apiVersion: weft.dev/v1alpha1
                kind: Workload
                metadata: {name: catalog, namespace: shop, labels: {app: catalog}}
                spec: {node: \(node.name), unit: catalog.service, addresses: ["\(TestNode.nodeAddress4)"],
                       ports: [{name: http, port: 8080, protocol: tcp}]}
                ---
                apiVersion: weft.dev/v1alpha1
                kind: Service
                metadata: {name: catalog, namespace: shop}
                spec: {selector: {app: catalog}, virtualIP: 10.96.0.10,
                       ports: [{name: http, port: 80, targetPort: 8080, protocol: tcp}]}
                ---
                apiVersion: weft.dev/v1alpha1
                kind: Service
                metadata: {name: empty, namespace: shop}
                spec: {selector: {app: nobody}, virtualIP: 10.96.0.11,
                       ports: [{name: http, port: 80, protocol: tcp}]}
                """)
            let app = try node.unit("shop", "app.service")
            try await node.waitForCapture("shop attached from the snapshot") { $0.namespace("shop")?.attached == true }

            var result: ProbeResult?
            for _ in 0..<25 {
                let r = try await node.probe(from: app, host: "10.96.0.10", port: 80)
                if r.ok { result = r; break }
                try await Task.sleep(for: .milliseconds(200))
            }
            let r = try #require(result, "no connection to the service's virtual IP succeeded")
            #expect(r.viaProxy, "\(r)")
            #expect(r.peer?.description.contains("10.96.0.10") == true, "getpeername must show the virtual IP: \(r)")
            #expect(r.echoMatches, "\(r)")
            #expect(!server.acceptedPeers.isEmpty, "the endpoint's server saw no connection")

            // A service without endpoints is refused at once, never sent anywhere.
            let none = try await node.probe(from: app, host: "10.96.0.11", port: 80, timeout: 5)
            #expect(!none.ok, "\(none)")
            #expect(none.elapsedMs < 2000, "\(none)")
            let state = try await node.capture()
            #expect(state.raw.contains("\"noHealthyEndpoint\" : 1") || state.raw.contains("\"noHealthyEndpoint\":1"), "\(state.raw)")
        }
    }
}
