import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// weftd on the real kernel: every test gets its own node (network namespace,
/// cgroup tree, pins, weftd) and checks capture from the workload's side, with
/// a real server answering. See docs/weftd.md for the contract under test.
@Suite(
    "weftd captures workloads on a real kernel",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct CaptureTests {
    static let port = 8080
    static let node4 = TestNode.nodeAddress4
    static let node6 = TestNode.nodeAddress6

    @Test func capturedWorkloadIsRedirectedThroughProxy() async throws {
        try await withTestNode(namespaces: [.meshed("shop"), .unmeshed("plain")]) { node in
            _ = try await node.startServer(port: Self.port)
            let app = try await node.discoveredUnit("shop", "app.service")

            let captured = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(captured.ok, "\(captured)")
            // The socket is bound on loopback: it really connected to the proxy...
            #expect(captured.local?.ip == "127.0.0.1", "\(captured)")
            // ...yet the application still sees the address it dialled.
            #expect(captured.peer == Endpoint(Self.node4, Self.port), "\(captured)")
            #expect(captured.hello?.hasPrefix("hello ") == true, "\(captured)")
            #expect(captured.echo == "ping", "\(captured)")
            try await node.waitForCapture("shop/app.service captured with connections >= 1") {
                $0.workload("shop", "app.service")?.captured == true && $0.connections("shop", "app.service") >= 1
            }

            // Neither a slice of a namespace with mesh false nor a cgroup
            // outside weft.slice is touched.
            let plain = try node.unit("plain", "app.service")
            let outside = try node.cgroup("other.scope")
            for cgroup in [plain, outside] {
                let direct = try await node.probe(from: cgroup, host: Self.node4, port: Self.port)
                #expect(direct.ok, "\(cgroup): \(direct)")
                #expect(direct.local?.ip == Self.node4, "\(cgroup) was captured: \(direct)")
                #expect(direct.peer == Endpoint(Self.node4, Self.port), "\(direct)")
                #expect(direct.hello?.hasPrefix("hello \(Self.node4) \(direct.local?.port ?? -1)") == true, "\(direct)")
            }
            let state = try await node.capture()
            #expect(state.workload("plain", "app.service")?.captured != true, "\(state)")
            #expect(state.connections("plain", "app.service") == 0, "\(state)")
            #expect(state.namespace("plain")?.attached != true, "\(state)")
        }
    }

    @Test func ipv6AndMappedIPv4AreCaptured() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            _ = try await node.startServer(port: Self.port)
            let app = try await node.discoveredUnit("shop", "app.service")

            let v6 = try await node.probe(from: app, host: Self.node6, port: Self.port, ["--family", "6"])
            #expect(v6.ok && v6.echo == "ping", "\(v6)")
            #expect(v6.local?.ip == "::1", "\(v6)")
            #expect(v6.peer == Endpoint(Self.node6, Self.port), "\(v6)")

            // IPv4 dialled from a dual-stack AF_INET6 socket goes through connect6.
            let mapped = try await node.probe(from: app, host: Self.node4, port: Self.port, ["--family", "6mapped"])
            #expect(mapped.ok && mapped.echo == "ping", "\(mapped)")
            #expect(mapped.local?.ip == "::ffff:127.0.0.1", "\(mapped)")
            #expect(mapped.peer == Endpoint("::ffff:\(Self.node4)", Self.port), "\(mapped)")

            try await node.waitForCapture("shop/app.service counted both connections") {
                $0.connections("shop", "app.service") >= 2
            }
        }
    }

    @Test func meshCanBeEnabledAndDisabledWhileWorkloadRuns() async throws {
        try await withTestNode(namespaces: [.unmeshed("shop")]) { node in
            _ = try await node.startServer(port: Self.port)
            let loop = try node.startLoop(in: try node.unit("shop", "app.service"), host: Self.node4, port: Self.port)

            try await loop.waitFor("two direct connections while mesh is false") {
                $0.filter { $0.ok && $0.direct }.count >= 2
            }

            // Enabling: weftd must notice the new mtime by itself (no signal).
            var mark = loop.results.count
            try node.rewriteConfig(namespaces: [.meshed("shop")])
            try await loop.waitFor("connections captured after mesh: true") { results in
                results.dropFirst(mark).contains { $0.ok && $0.viaProxy }
            }
            try await node.waitForCapture("shop/app.service captured") {
                $0.workload("shop", "app.service")?.captured == true
            }

            // Disabling, this time announced with SIGHUP.
            mark = loop.results.count
            try node.rewriteConfig(namespaces: [.unmeshed("shop")], hangUp: true)
            let afterDisable = try await loop.waitFor("direct connections again after mesh: false") { results in
                results.dropFirst(mark).contains { $0.ok && $0.direct }
            }
            // Stays off: the next connections are direct too.
            let settled = afterDisable.count
            let later = try await loop.waitFor("two more connections") { $0.count >= settled + 2 }
            #expect(later.dropFirst(settled).allSatisfy { $0.ok && $0.direct }, "\(later.suffix(3))")
            try await node.waitForCapture("shop/app.service no longer captured") {
                $0.workload("shop", "app.service")?.captured != true
            }

            // One process throughout, and no connection lost at either switch.
            let results = loop.results
            #expect(loop.child.isRunning)
            #expect(Set(results.map(\.pid)) == [loop.child.pid], "the workload was restarted")
            let failed = results.filter { !$0.ok }
            #expect(failed.isEmpty, "connections failed around enable/disable:\n\(failed.map(\.raw).joined(separator: "\n"))")
        }
    }

    @Test func workloadStartedAfterEnableIsCapturedFromFirstConnection() async throws {
        // A slow reconcile, so that the first connection surely comes before
        // weftd's periodic discovery has seen the new unit.
        try await withTestNode(namespaces: [.meshed("shop")], reconcileIntervalMs: 2000) { node in
            _ = try await node.startServer(port: Self.port)
            // A unit weftd has never seen: capture sits on the slice, so it
            // needs no discovery before its first connect().
            let late = try node.unit("shop", "late-\(UInt16.random(in: 1000...9999)).service")
            let first = try await node.probe(from: late, host: Self.node4, port: Self.port)
            #expect(first.ok && first.echo == "ping", "\(first)")
            #expect(first.local?.ip == "127.0.0.1", "first connection not captured: \(first)")
            #expect(first.peer == Endpoint(Self.node4, Self.port), "\(first)")

            let name = (late as NSString).lastPathComponent
            let state = try await node.waitForCapture("\(name) discovered and captured") {
                $0.workload("shop", name)?.captured == true
            }
            // The kernel recorded which cgroup dialled, so that connection is
            // the workload's even though weftd had not discovered the unit yet.
            #expect(state.connections("shop", name) >= 1,
                    "the first connection of \(name) was not counted for it; proxy counters: \(state.proxy ?? [:])")
        }
    }

    @Test func workloadInOwnNetworkNamespaceIsCaptured() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            let server = try await node.startServer(port: Self.port)
            let pod = try node.addPod()
            // Long-running, so that weftd can find the pod's netns from its process.
            let loop = try node.startLoop(in: try node.unit("shop", "pod.service"), netns: pod,
                                          host: Self.node4, port: Self.port)
            let results = try await loop.waitFor("a successful connection from the pod", timeout: 6) {
                $0.contains { $0.ok }
            }
            // Capture fails closed: before weftd's listener exists in the pod,
            // connections may fail, but none may reach anything but the proxy.
            for result in results where result.local != nil {
                #expect(result.viaProxy, "connection from the pod bypassed the proxy: \(result)")
            }
            for result in results where result.ok {
                #expect(result.local?.ip == "127.0.0.1", "\(result)")
                #expect(result.peer == Endpoint(Self.node4, Self.port), "\(result)")
            }
            #expect(!server.acceptedPeers.isEmpty)

            let state = try await node.waitForCapture("shop/pod.service captured in its own netns, connections >= 1") {
                $0.workload("shop", "pod.service")?.captured == true && $0.connections("shop", "pod.service") >= 1
            }
            #expect(state.workload("shop", "pod.service")?.netns != "node", "\(state)")
            #expect(state.listeners?.contains { $0.netns != "node" } == true, "no listener in the pod's netns: \(state)")
        }
    }

    @Test func restartAfterSIGKILLFailsClosedAndDoesNotDuplicatePrograms() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            let server = try await node.startServer(port: Self.port)
            let app = try node.unit("shop", "app.service")
            let before = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(before.ok && before.viaProxy, "\(before)")

            node.kill(SIGKILL)
            #expect(node.weftd?.isRunning == false)
            let acceptedWhileUp = server.acceptedPeers.count
            // Pinned links keep capture on with nobody listening: connections
            // are refused, never let through to the destination.
            for _ in 0..<3 {
                let down = try await node.probe(from: app, host: Self.node4, port: Self.port, ["--timeout", "3"])
                #expect(!down.ok && down.error == "ECONNREFUSED", "not refused while weftd was down: \(down)")
                #expect(down.local == nil || down.viaProxy, "capture bypassed while weftd was down: \(down)")
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(server.acceptedPeers.count == acceptedWhileUp, "the server saw connections while weftd was down")

            try node.restart()
            try await node.waitReady()
            let after = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(after.ok && after.echo == "ping", "\(after)")
            #expect(after.local?.ip == "127.0.0.1", "\(after)")
            try await node.waitForCapture("shop/app.service captured after restart") {
                $0.workload("shop", "app.service")?.captured == true
            }

            let hooks = try node.attachedHooks(on: try node.slice("shop"))
            for hook in ["connect4", "connect6", "getpeername4", "getpeername6", "sock_ops",
                         "sendmsg4", "sendmsg6", "recvmsg4", "recvmsg6"] {
                #expect(hooks[hook] == 1, "\(hook) attached \(hooks[hook] ?? 0) times on the slice: \(hooks)")
            }
            #expect(hooks.values.allSatisfy { $0 == 1 }, "a hook is attached twice: \(hooks)")
        }
    }

    @Test func mapEntriesAreRemovedWhenConnectionsClose() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            _ = try await node.startServer(port: Self.port)
            let app = try await node.discoveredUnit("shop", "app.service")
            let count = 10_000
            // Four workers keep a debug build of weftd under half a minute.
            let summary = try await node.many(from: app, host: Self.node4, port: Self.port, count: count,
                                              workers: 4, timeout: 60)
            #expect(summary.ok == count && summary.failed == 0, "\(summary)")
            #expect(summary.loopbackLocal == count, "not every connection was captured: \(summary)")

            let state = try await node.waitForCapture("weft_orig_dst and weft_tuple below 100 entries") {
                ($0.maps["weft_orig_dst"] ?? .max) < 100 && ($0.maps["weft_tuple"] ?? .max) < 100
            }
            #expect(state.connections("shop", "app.service") >= count, "\(state)")
        }
    }

    @Test func deadDestinationFailsPromptly() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            let app = try node.unit("shop", "app.service")
            let unused = 9
            let dead = try await node.probe(from: app, host: Self.node4, port: unused, ["--timeout", "10"])
            #expect(!dead.ok, "\(dead)")
            #expect(["ECONNRESET", "EOF", "ECONNREFUSED", "EPIPE"].contains(dead.error ?? ""), "\(dead)")
            #expect(dead.elapsedMs < 2000, "the client waited \(dead.elapsedMs) ms for a dead destination: \(dead)")
            #expect(dead.local == nil || dead.viaProxy, "not captured: \(dead)")
        }
    }

    @Test func excludedPortIsNotCaptured() async throws {
        let excluded = 8081
        try await withTestNode(namespaces: [.meshed("shop")], excludePorts: [excluded]) { node in
            _ = try await node.startServer(port: Self.port)
            _ = try await node.startServer(port: excluded)
            let app = try node.unit("shop", "app.service")

            let bypass = try await node.probe(from: app, host: Self.node4, port: excluded)
            #expect(bypass.ok, "\(bypass)")
            #expect(bypass.local?.ip == Self.node4, "excluded port was captured: \(bypass)")

            // The same workload is captured on any other port.
            let captured = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(captured.ok && captured.local?.ip == "127.0.0.1", "\(captured)")
        }
    }

    @Test func detachedLinkIsRepaired() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            _ = try await node.startServer(port: Self.port)
            let app = try node.unit("shop", "app.service")
            let before = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(before.ok && before.viaProxy, "\(before)")
            let repairs = try await node.capture().repairs

            let pins = node.pinnedLinks(named: "weft_sock4_connect")
            let pin = try #require(pins.first, "no pinned weft_sock4_connect link under \(node.pinDir)/links")
            try Command.check(["bpftool", "link", "detach", "pinned", pin])

            try await node.waitForCapture("a repair after detaching \(pin)", timeout: 3.5) {
                $0.repairs > repairs && $0.workload("shop", "app.service")?.captured == true
            }
            let after = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(after.ok && after.local?.ip == "127.0.0.1", "\(after)")
            let hooks = try node.attachedHooks(on: try node.slice("shop"))
            #expect(hooks["connect4"] == 1, "\(hooks)")
        }
    }

    @Test func halfCloseDeliversFullEcho() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            _ = try await node.startServer(port: Self.port)
            let app = try node.unit("shop", "app.service")
            // Large enough that most of the echo is still in flight when the
            // client shuts down its write side.
            let size = 256 * 1024
            let result = try await node.probe(from: app, host: Self.node4, port: Self.port,
                                              ["--half-close", "--payload-size", String(size)])
            #expect(result.viaProxy, "\(result)")
            #expect(result.echoLen == size && result.echoMatches, "\(result)")
            #expect(result.eof, "no EOF after the echo: \(result)")
            #expect(result.ok, "\(result)")
        }
    }

    /// A meshed workload's connection to the proxy, and the proxy's to a meshed
    /// workload on the same node, skip loopback TCP (sockmap) and still carry
    /// every byte in order, half-close included; with `proxy.socketRedirect:
    /// false` both take loopback again. Measured where those legs would
    /// travel: the node's `lo` counters.
    @Test func sameNodeLegsSkipLoopbackTCPUnlessSocketRedirectIsOff() async throws {
        let size = 4 * 1024 * 1024
        for redirect in [true, false] {
            try await withTestNode(namespaces: [.meshed("shop")], configure: { node in
                if !redirect { node.extraConfig = "proxy:\n  socketRedirect: false\n" }
            }) { node in
                _ = try await node.startServer(port: Self.port, in: try node.unit("shop", "db.service"))
                let app = try node.unit("shop", "app.service")
                let before = try node.loopbackBytes()
                let result = try await node.probe(from: app, host: Self.node4, port: Self.port,
                                                  ["--half-close", "--payload-size", String(size)], timeout: 30)
                let carried = try node.loopbackBytes() - before
                #expect(result.viaProxy, "\(result)")
                #expect(result.echoLen == size && result.echoMatches, "redirect \(redirect): \(result)")
                #expect(result.eof && result.ok, "redirect \(redirect): \(result)")
                if redirect {
                    // Handshakes, ACKs and FINs only: not the payload.
                    #expect(carried < size / 4, "\(carried) bytes on lo for a \(size)-byte echo with socket redirect on")
                } else {
                    // Out and back on each of the two legs.
                    #expect(carried >= 4 * size, "\(carried) bytes on lo for a \(size)-byte echo with socket redirect off")
                }
            }
        }
    }

    /// A redirected write never waits for its reader, so socket redirect must
    /// bound what a connection may leave unread itself: a workload writing
    /// at a workload on its node that never reads is held to a few MiB (the
    /// redirect backlog, then TCP's own buffers and flow control) instead of
    /// filling the node's TCP memory, and its connection stays up.
    @Test func aWriterWhoseReaderNeverReadsIsHeldBackWithSocketRedirectOn() async throws {
        try await withTestNode(namespaces: [.meshed("shop")]) { node in
            _ = try await node.startServer(port: Self.port, in: try node.unit("shop", "db.service"), mode: "sink")
            let app = try node.unit("shop", "app.service")
            let flood = try await node.flood(from: app, host: Self.node4, port: Self.port, seconds: 3)
            #expect(flood.error == nil, "\(flood)")
            #expect(flood.blocked > 0, "no write ever waited: \(flood)")
            #expect(flood.sent < 64 << 20, "\(flood.sent) bytes taken for a reader that never reads")
        }
    }
}
