import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Service names on a real kernel: a meshed workload's DNS (UDP to port 53,
/// whoever the resolver is) goes to weftd's DNS server, which answers the
/// mesh's names and forwards the rest to the node's resolver.
@Suite(
    "DNS for mesh services",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct DNSTests {
    /// The node's "upstream resolver": dnsstub.py on an address of the node.
    static let resolver = "198.18.0.53"
    static let dnsConfig = """
        dns:
          upstreams: ["\(resolver)"]
          timeoutMs: 1500

        """

    static func manifest(_ node: TestNode, extraPorts: Int = 0) -> String {
        var ports = "[{name: http, port: 80, targetPort: 8080, protocol: tcp}"
        for i in 0..<extraPorts { ports += ", {name: p\(i), port: \(9000 + i), protocol: tcp}" }
        ports += "]"
        return """
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
            spec: {selector: {app: catalog}, virtualIP: 10.96.0.10, ports: \(ports)}
            """
    }

    /// Starts the stub resolver and the mesh, waits until the namespace is captured.
    static func bringUp(_ node: TestNode, _ control: ControlPlane, extraPorts: Int = 0) async throws -> (app: String, stub: Spawned) {
        try Command.check(["ip", "-n", node.netns, "addr", "add", "\(resolver)/32", "dev", "weft0"])
        let resolverProcess = try node.spawnTool("dnsstub", [TestEnvironment.python, TestEnvironment.dnsStub, "--host", resolver])
        try await control.apply(manifest(node, extraPorts: extraPorts))
        let app = try node.unit("shop", "app.service")
        try await node.waitForCapture("shop attached from the snapshot") { $0.namespace("shop")?.attached == true }
        let deadline = Date().addingTimeInterval(10)
        while !resolverProcess.jsonLines.contains(where: { $0.contains("listening") }) {
            guard Date() < deadline else { throw HarnessError("dnsstub did not start:\n\(resolverProcess.tail())") }
            try await Task.sleep(for: .milliseconds(50))
        }
        return (app, resolverProcess)
    }

    @Test func aMeshedWorkloadResolvesServicesByNameAndReachesThemThroughTheMesh() async throws {
        try await withControlNode(extraConfig: Self.dnsConfig) { node, control in
            let server = try await node.startServer(port: 8080)
            let (app, stub) = try await Self.bringUp(node, control)

            // dig, whoever it thinks it asks: the kernel sends it to weftd.
            var a = try await node.run(["dig", "+short", "+tries=1", "+time=3", "@\(Self.resolver)", "catalog.shop.svc.cluster.local"], in: app)
            for _ in 0..<20 where a.stdout.trimmingCharacters(in: .whitespacesAndNewlines) != "10.96.0.10" {
                try await Task.sleep(for: .milliseconds(200))
                a = try await node.run(["dig", "+short", "+tries=1", "+time=3", "@\(Self.resolver)", "catalog.shop.svc.cluster.local"], in: app)
            }
            #expect(a.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "10.96.0.10", "\(a)")
            let full = try await node.run(["dig", "+tries=1", "+time=3", "@\(Self.resolver)", "catalog.shop.svc.cluster.local"], in: app)
            #expect(full.stdout.contains("SERVER: \(Self.resolver)#53"), "the answer must seem to come from the resolver asked: \(full)")
            #expect(full.stdout.contains(" aa"), "mesh answers are authoritative: \(full)")

            // Over IPv6 too (connect6 / sendmsg6 and recvmsg6).
            let v6 = try await node.run(["dig", "+short", "@\(TestNode.nodeAddress6)", "catalog.shop.svc.cluster.local"], in: app)
            #expect(v6.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "10.96.0.10", "\(v6)")
            let short = try await node.run(["dig", "+short", "@\(Self.resolver)", "catalog.shop"], in: app)
            #expect(short.stdout.contains("10.96.0.10"), "\(short)")
            let aaaa = try await node.run(["dig", "@\(Self.resolver)", "AAAA", "catalog.shop.svc.cluster.local"], in: app)
            #expect(aaaa.stdout.contains("status: NOERROR") && aaaa.stdout.contains("ANSWER: 0"), "no IPv6 address: NODATA, \(aaaa)")
            let srv = try await node.run(["dig", "+short", "@\(Self.resolver)", "SRV", "_http._tcp.catalog.shop.svc.cluster.local"], in: app)
            #expect(srv.stdout.contains("0 100 80 catalog.shop.svc.cluster.local."), "\(srv)")
            let unknown = try await node.run(["dig", "@\(Self.resolver)", "nope.shop.svc.cluster.local"], in: app)
            #expect(unknown.stdout.contains("status: NXDOMAIN"), "\(unknown)")
            #expect(stub.jsonLines.filter { $0.contains("svc.cluster.local") }.isEmpty, "mesh names must not leak upstream: \(stub.tail())")

            // Anything else goes to the node's resolver and comes back unchanged.
            let external = try await node.run(["dig", "@\(Self.resolver)", "example.org"], in: app)
            #expect(external.stdout.contains("4242") && external.stdout.contains("203.0.113.7"), "\(external)")
            #expect(stub.jsonLines.contains { $0.contains("example.org") }, "\(stub.tail())")

            // The C library's resolver (getent) and Python's, by the search
            // path, with nothing configured in the workload but its resolv.conf.
            let resolvConf = node.dir.appendingPathComponent("resolv.conf")
            try "nameserver \(Self.resolver)\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
                .write(to: resolvConf, atomically: true, encoding: .utf8)
            let getent = try await node.run(["getent", "hosts", "catalog"], in: app, resolvConf: resolvConf.path)
            #expect(getent.stdout.contains("10.96.0.10"), "\(getent)")
            let byName = try await node.run([TestEnvironment.python, TestEnvironment.netprobe, "probe",
                                             "--host", "catalog.shop.svc.cluster.local", "--port", "80"],
                                            in: app, resolvConf: resolvConf.path)
            let probe = try ProbeResult.parse(byName.stdout.split(separator: "\n").last.map(String.init) ?? "")
            #expect(probe.ok && probe.viaProxy, "\(probe)")
            #expect(!server.acceptedPeers.isEmpty)

            // A new Service answers within a second of the apply.
            let applied = Date()
            try await control.apply("""
                apiVersion: weft.dev/v1alpha1
                kind: Service
                metadata: {name: reviews, namespace: shop}
                spec: {selector: {app: catalog}, virtualIP: 10.96.0.11, ports: [{name: http, port: 80, protocol: tcp}]}
                """)
            var seen: TimeInterval?
            while Date().timeIntervalSince(applied) < 5 {
                let r = try await node.run(["dig", "+short", "+tries=1", "+time=1", "@\(Self.resolver)", "reviews.shop.svc.cluster.local"], in: app)
                if r.stdout.contains("10.96.0.11") {
                    seen = Date().timeIntervalSince(applied)
                    break
                }
            }
            let elapsed = try #require(seen, "reviews never resolved")
            print("DNS: a new Service resolved \(Int(elapsed * 1000)) ms after weftctl apply returned")
            #expect(elapsed < 1.0, "took \(elapsed) s")

            // The upstream gone: SERVFAIL, quickly, not a hang.
            stub.stop()
            let started = Date()
            let down = try await node.run(["dig", "+tries=1", "+time=5", "@\(Self.resolver)", "example.net"], in: app)
            #expect(down.stdout.contains("status: SERVFAIL"), "\(down)")
            #expect(Date().timeIntervalSince(started) < 4, "SERVFAIL took \(Date().timeIntervalSince(started)) s")
        }
    }

    @Test func anUnmeshedProcessAsksItsResolverDirectly() async throws {
        try await withControlNode(extraConfig: Self.dnsConfig) { node, control in
            let (_, stub) = try await Self.bringUp(node, control)
            let outside = try node.cgroup("outside.service")
            let before = try await node.dnsCounter("queries")
            let r = try await node.run(["dig", "+short", "@\(Self.resolver)", "catalog.shop.svc.cluster.local"], in: outside)
            // The stub answers everything with 203.0.113.7: it, not weftd, answered.
            #expect(r.stdout.contains("203.0.113.7"), "\(r)")
            #expect(stub.jsonLines.contains { $0.contains("catalog.shop.svc.cluster.local") }, "\(stub.tail())")
            #expect(try await node.dnsCounter("queries") == before, "weftd saw an unmeshed process's query")
        }
    }

    @Test func anAnswerTooBigForUDPIsTruncatedAndTheClientGetsItWholeOverTCP() async throws {
        try await withControlNode(extraConfig: Self.dnsConfig) { node, control in
            let (app, _) = try await Self.bringUp(node, control, extraPorts: 40)
            let name = "catalog.shop.svc.cluster.local"
            // +ignore: show the truncated UDP answer instead of retrying.
            let udp = try await node.run(["dig", "+noedns", "+ignore", "@\(Self.resolver)", "SRV", name], in: app)
            #expect(udp.stdout.contains(" tc"), "no TC flag on a 41-record answer over UDP: \(udp)")
            let retried = try await node.run(["dig", "+noedns", "@\(Self.resolver)", "SRV", name], in: app)
            #expect(retried.stdout.contains("ANSWER: 41"), "the TCP retry must carry every record: \(retried)")
            #expect(try await node.dnsCounter("truncated") >= 1)
            let tcp = try await node.run(["dig", "+tcp", "+short", "@\(Self.resolver)", name], in: app)
            #expect(tcp.stdout.contains("10.96.0.10"), "\(tcp)")
            let forwarded = try await node.run(["dig", "+tcp", "@\(Self.resolver)", "big.example"], in: app)
            #expect(forwarded.stdout.contains("ANSWER: 60"), "a forwarded TCP query must reach the resolver over TCP: \(forwarded)")
        }
    }

    @Test func malformedAndTruncatedPacketsAreDroppedAndCountedAndWeftdKeepsAnswering() async throws {
        try await withControlNode(extraConfig: Self.dnsConfig) { node, control in
            let (app, _) = try await Self.bringUp(node, control)
            let fuzz = try await node.run([TestEnvironment.python, TestEnvironment.dnsFuzz, "--host", Self.resolver,
                                           "--count", "3000"], in: app, timeout: 60)
            #expect(fuzz.succeeded, "\(fuzz)")
            #expect(node.weftd?.isRunning == true, "weftd died under malformed DNS")
            #expect(try await node.dnsCounter("malformed") >= 1000, "malformed packets are counted")
            let after = try await node.run(["dig", "+short", "@\(Self.resolver)", "catalog.shop.svc.cluster.local"], in: app)
            #expect(after.stdout.contains("10.96.0.10"), "\(after)")
        }
    }
}

extension TestEnvironment {
    static let dnsStub: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/dnsstub.py").path
    static let dnsFuzz: String = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/dnsfuzz.py").path
}
