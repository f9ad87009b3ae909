import Foundation
import Testing

extension TestEnvironment {
    static let grpcEcho: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/grpcecho.py").path
}

/// HTTP/2 and gRPC through the node proxies, on real nodes: a client that
/// speaks HTTP/2 with prior knowledge (h2load, grpcio) to a routed Service
/// port; each stream routed on its own at the source proxy; HTTP/1.1 with
/// chunked trailers inside the HBONE stream; HTTP/2 again from the
/// destination's proxy (or the source's, for a workload on its own node) to
/// a workload that declares its port `grpc`.
@Suite(
    "HTTP/2 and gRPC through the mesh",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct HTTP2Tests {
    static let localVIP = "10.96.4.10"
    static let remoteVIP = "10.96.4.11"
    static let webVIP = "10.96.4.12"
    static let grpcPort = 50051

    /// frontend (node 0); echo-local, a gRPC server on node 0; echo-remote on node 1; web, an
    /// HTTP/1.1 backend (httpecho) on node 1. Each Service has an HTTPRoute on port 80.
    static func manifest(_ mesh: Mesh) -> String {
        func grpcWorkload(_ name: String, node: Int) -> String {
            """
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata: {name: \(name), namespace: shop, labels: {app: \(name)}}
            spec: {node: \(mesh.nodes[node].name), unit: \(name).service, serviceAccount: \(name),
                   addresses: ["\(MeshFabric.address(ofNode: node))"], ports: [{name: grpc, port: \(grpcPort), protocol: grpc}]}

            """
        }
        func grpcService(_ name: String, vip: String) -> String {
            """
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: \(name), namespace: shop}
            spec: {selector: {app: \(name)}, virtualIP: \(vip), ports: [{name: grpc, port: 80, targetPort: \(grpcPort), protocol: grpc}]}

            """
        }
        return HTTPTrafficTests.frontend(mesh)
            // No HTTPRoute for echo-local: its port is declared grpc, which is enough for L7.
            + grpcWorkload("echo-local", node: 0) + grpcService("echo-local", vip: localVIP)
            + grpcWorkload("echo-remote", node: 1) + grpcService("echo-remote", vip: remoteVIP)
            + HTTPTrafficTests.route("echo-remote", parent: "echo-remote", rules: "- backendRefs: [{name: echo-remote, port: 80}]")
            + HTTPTrafficTests.workload(mesh, "web", labels: "{app: web}", serviceAccount: "web", node: 1)
            + HTTPTrafficTests.service("web", vip: webVIP, selector: "{app: web}")
            + HTTPTrafficTests.route("web", parent: "web", rules: "- backendRefs: [{name: web, port: 80}]")
    }

    static func startGRPC(_ node: TestNode, unit: String) async throws {
        let cgroup = try node.unit("shop", "\(unit).service")
        let child = try node.spawnTool("grpcecho-\(unit)", ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, cgroup,
                                                            TestEnvironment.python, TestEnvironment.grpcEcho, "serve",
                                                            "--port", String(grpcPort), "--name", unit])
        let deadline = Date().addingTimeInterval(15)
        while !child.jsonLines.contains(where: { $0.contains("\"listening\"") }) {
            guard child.isRunning, Date() < deadline else { throw HarnessError("grpcecho \(unit) did not start:\n\(child.tail())") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    static func call(_ node: TestNode, from cgroup: String, vip: String, unary: Int = 0) async throws -> [String: Any] {
        let r = try await node.run([TestEnvironment.python, TestEnvironment.grpcEcho, "call", "--target", "\(vip):80",
                                    "--count", "5", "--unary", String(unary), "--timeout", "10"], in: cgroup, timeout: 90)
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw HarnessError("grpcecho call printed no result: \(r)")
        }
        return object
    }

    @Test func grpcUnaryStreamingAndStatusTrailersCrossTheMeshAndH2loadIsRoutedPerStream() async throws {
        try await withMesh(nodes: 2) { mesh in
            let n = mesh.nodes
            try await mesh.control.apply(Self.manifest(mesh))
            try await Self.startGRPC(n[0], unit: "echo-local")
            try await Self.startGRPC(n[1], unit: "echo-remote")
            try await HTTPTrafficTests.startEcho(n[1], unit: "web", name: "web")
            let frontend = try n[0].unit("shop", "frontend.service")
            try await HTTPTrafficTests.waitForMesh(mesh, [(0, "frontend"), (0, "echo-local"), (1, "echo-remote"), (1, "web")])

            // Across nodes: the source proxy routes each gRPC stream, HBONE carries it as HTTP/1.1 with
            // chunked trailers, the destination's proxy speaks HTTP/2 to the server. Unary, server
            // streaming, bidirectional streaming, and a failure whose status, message and trailing
            // metadata travel back in trailers.
            let remote = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(500), {
                try await Self.call(n[0], from: frontend, vip: Self.remoteVIP, unary: 200)
            }, until: { $0["say"] as? String == "echo-remote:hello" })
            // The streams of one client connection share their upstreams: one HBONE stream (HTTP/1.1
            // keep-alive inside) carried the 200 sequential calls, not one stream per call.
            let streams = try await n[0].proxyCounter("outboundStreams")
            #expect((1...5).contains(streams), "HBONE streams opened for about 205 calls on one channel: \(streams)")
            #expect(remote["say"] as? String == "echo-remote:hello", "unary across nodes: \(remote)")
            #expect(remote["count"] as? [String] == (0..<5).map { "echo-remote:\($0)" }, "server streaming: \(remote)")
            #expect(remote["chat"] as? [String] == (0..<5).map { "echo-remote:c\($0)" }, "bidirectional streaming: \(remote)")
            let failed = remote["fail"] as? [String: Any]
            #expect(failed?["code"] as? String == "FAILED_PRECONDITION" && failed?["details"] as? String == "asked to fail"
                    && failed?["trailer"] as? String == "echo-remote", "grpc-status, grpc-message and trailing metadata: \(remote)")
            #expect(remote["unary_calls_ok"] as? Int == 200, "200 unary calls on one channel: \(remote)")

            // On one node: the source proxy is the destination's too and speaks HTTP/2 to the server itself.
            let local = try await Self.call(n[0], from: frontend, vip: Self.localVIP, unary: 50)
            #expect(local["say"] as? String == "echo-local:hello" && local["chat"] as? [String] == (0..<5).map { "echo-local:c\($0)" },
                    "gRPC on one node: \(local)")
            #expect((local["fail"] as? [String: Any])?["code"] as? String == "FAILED_PRECONDITION", "\(local)")
            #expect(local["unary_calls_ok"] as? Int == 50, "\(local)")
            // Reported as gRPC, with the status from the trailers: 9 is FAILED_PRECONDITION.
            let exposition = try await AuthorizationPolicyTests.metrics(n[0])
            let failedCalls = exposition.split(separator: "\n").filter {
                $0.hasPrefix("istio_requests_total{") && $0.contains(#"reporter="source""#) && $0.contains(#"request_protocol="grpc""#)
                    && $0.contains(#"grpc_response_status="9""#) && $0.contains(#"destination_service_name="echo-local""#)
            }
            #expect(!failedCalls.isEmpty, "istio_requests_total for the failed gRPC call: \(exposition.split(separator: "\n").filter { $0.contains("grpc") }.prefix(10))")

            // h2load (HTTP/2 prior knowledge, 4 connections, 10 streams each at once) to an HTTP/1.1 backend
            // on the other node: every request answered, each stream routed on its own.
            let h2load = try await n[0].run(["h2load", "-n", "2000", "-c", "4", "-m", "10", "http://\(Self.webVIP)/h2"],
                                            in: frontend, timeout: 90)
            print("h2load through the mesh: \(h2load.stdout.split(separator: "\n").filter { $0.contains("requests:") || $0.contains("status codes:") || $0.hasPrefix("finished") }.joined(separator: "; "))")
            #expect(h2load.stdout.contains("requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
                    "\(h2load)")
            #expect(h2load.stdout.contains("status codes: 2000 2xx"), "\(h2load)")
            let seen = try await HTTPTrafficTests.stats(n[1])
            #expect(seen.count >= 2000, "the backend answered every h2load request: \(seen.count)")
        }
    }

    // MARK: Undeclared ports

    static let sniffHTTPVIP = "10.96.4.20"
    static let sniffTCPVIP = "10.96.4.21"

    /// `plain` on node 1 declares no protocol on its ports: httpecho on 8081, netprobe's
    /// server-first echo (it says hello before it reads) on 9000.
    static func undeclaredManifest(_ mesh: Mesh) -> String {
        HTTPTrafficTests.frontend(mesh) + """
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata: {name: plain, namespace: shop, labels: {app: plain}}
            spec: {node: \(mesh.nodes[1].name), unit: plain.service, serviceAccount: plain,
                   addresses: ["\(MeshFabric.address(ofNode: 1))"], ports: [{name: web, port: 8081}, {name: echo, port: 9000}]}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: plain-web, namespace: shop}
            spec: {selector: {app: plain}, virtualIP: \(sniffHTTPVIP), ports: [{name: web, port: 80, targetPort: 8081}]}
            ---
            apiVersion: weft.dev/v1alpha1
            kind: Service
            metadata: {name: plain-echo, namespace: shop}
            spec: {selector: {app: plain}, virtualIP: \(sniffTCPVIP), ports: [{name: echo, port: 9000}]}

            """
    }

    @Test func undeclaredPortsAreHTTPWhenTheFirstBytesAreAndTCPOtherwiseServerFirstIncluded() async throws {
        try await withMesh(nodes: 2) { mesh in
            let n = mesh.nodes
            try await mesh.control.apply(Self.undeclaredManifest(mesh))
            try await HTTPTrafficTests.startEcho(n[1], unit: "plain", name: "plain", port: 8081)
            let plainCgroup = try n[1].unit("shop", "plain.service")
            _ = try n[1].spawnTool("netprobe-plain", ["/bin/sh", "-c", #"echo $$ > "$0/cgroup.procs" && exec "$@""#, plainCgroup,
                                                      TestEnvironment.python, TestEnvironment.netprobe, "serve",
                                                      "--host", "0.0.0.0", "--port", "9000"])
            let frontend = try n[0].unit("shop", "frontend.service")
            try await HTTPTrafficTests.waitForMesh(mesh, [(0, "frontend"), (1, "plain")])

            // HTTP on an undeclared port: detected, then handled at L7 (the backend sees the proxy's headers).
            let http = try await AuthorizationPolicyTests.settle(timeout: 30, every: .milliseconds(500), {
                try await HTTPTrafficTests.requests(n[0], from: frontend, "http://\(Self.sniffHTTPVIP)/sniffed", ["--timeout", "4"])
            }, until: { $0.count(200) == 1 })
            let seen = try #require(http.echo(), "httpecho did not answer through the mesh: \(http)")
            #expect(seen.headers["x-forwarded-proto"] == "http" && seen.headers["x-request-id"] != nil,
                    "detected HTTP goes through the L7 proxy: \(seen.headers)")
            #expect(try await n[0].proxyCounter("detectedHTTP") >= 1)

            // A server-first protocol: the client waits for the server's hello; after the detection
            // timeout the connection is TCP and the hello arrives.
            let probe = try await n[0].run([TestEnvironment.python, TestEnvironment.netprobe, "probe", "--host", Self.sniffTCPVIP,
                                            "--port", "9000", "--payload", "after-hello", "--timeout", "5"], in: frontend, timeout: 20)
            #expect(probe.stdout.contains(#""echo_matches": true"#) && probe.stdout.contains(#""hello": "hello"#),
                    "server-first TCP through an undeclared port: \(probe)")

            // Client-first bytes that are not HTTP (a TLS ClientHello's first bytes, here): TCP at once.
            let tlsLike = try await n[0].run([TestEnvironment.python, "-c", """
                import socket, sys, time
                s = socket.create_connection(("\(Self.sniffTCPVIP)", 9000), timeout=5)
                s.sendall(bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"hello\\n")
                f = s.makefile("rb")
                hello = f.readline()
                echo = f.read(11)
                print(hello.startswith(b"hello ") and echo == bytes([0x16, 0x03, 0x01, 0x00, 0x05]) + b"hello\\n")
                """], in: frontend, timeout: 20)
            #expect(tlsLike.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "True", "client-first non-HTTP bytes: \(tlsLike)")
            #expect(try await n[0].proxyCounter("detectedTCP") >= 2, "both TCP connections were detected as TCP")
        }
    }
}
