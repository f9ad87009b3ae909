import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// weftd run by weft-control on a real kernel: the node's namespaces come from
/// weft-control's snapshots (no namespaces in weftd's file), weftctl is the
/// operator's only tool, and capture is checked from the workload's side.
/// See docs/control-api.md (node snapshot, status, certificates) and
/// docs/weftd.md.
@Suite(
    "weftd follows weft-control on a real kernel",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct ControlTests {
    static let port = 8080
    static let node4 = TestNode.nodeAddress4
    static let defaultIdentity = "spiffe://cluster.local/ns/shop/sa/default"

    @Test func enablingANamespaceThroughWeftctlCapturesItsRunningWorkloads() async throws {
        try await withControlNode { node, control in
            _ = try await node.startServer(port: Self.port)
            let loop = try node.startLoop(in: try node.unit("shop", "app.service"), host: Self.node4, port: Self.port)

            // weft-control knows no namespace yet: the unit's connections go straight out.
            try await loop.waitFor("two direct connections before shop is enabled") {
                $0.filter { $0.ok && $0.direct }.count >= 2
            }
            let before = try await node.capture()
            #expect(before.namespace("shop")?.attached != true, "\(before)")
            #expect(before.workload("shop", "app.service")?.captured != true, "\(before)")

            var mark = loop.results.count
            let enabledAt = Date()
            try await control.checkWeftctl(["namespace", "enable", "shop"])
            try await loop.waitFor("the same process's connections captured after `weftctl namespace enable shop`") { results in
                results.dropFirst(mark).contains { $0.ok && $0.viaProxy }
            }
            note("enable -> first captured connection", since: enabledAt)
            let state = try await node.waitForCapture("shop attached and shop/app.service captured, from a snapshot") {
                $0.namespace("shop")?.attached == true && $0.workload("shop", "app.service")?.captured == true
                    && ($0.appliedVersion ?? 0) > 0
            }
            #expect(state.ready, "\(state)")
            try await node.waitReady(timeout: 5)

            // weft-control hears it back: the node's applied version, the workload captured.
            let status = try await control.waitForStatus("node \(node.name) applied a snapshot and shop/app.service is captured") {
                guard let applied = $0.node(node.name)?.appliedVersion, applied > 0 else { return false }
                let workload = $0.workload("shop", "app.service")
                return workload?.node == node.name && workload?.captured == true
            }
            #expect(status.node(node.name)?.lastSeen != nil, "\(status)")
            #expect(status.workload("shop", "app.service")?.hooks == "10/10", "capture integrity as the kernel reports it (capture and inbound policy hooks): \(status)")
            let table = try await control.checkWeftctl(["status"])
            let nodeRow = table.split(separator: "\n").first { $0.hasPrefix(node.name) }
            #expect(nodeRow != nil, "weftctl status does not list \(node.name):\n\(table)")
            let workloadRow = table.split(separator: "\n").first { $0.contains("app.service") }
            #expect(workloadRow?.contains("yes") == true, "weftctl status does not show shop/app.service captured:\n\(table)")

            mark = loop.results.count
            let disabledAt = Date()
            try await control.checkWeftctl(["namespace", "disable", "shop"])
            let afterDisable = try await loop.waitFor("direct connections again after `weftctl namespace disable shop`") { results in
                results.dropFirst(mark).contains { $0.ok && $0.direct }
            }
            note("disable -> first direct connection", since: disabledAt)
            // Stays off: the next connections are direct too.
            let settled = afterDisable.count
            let later = try await loop.waitFor("two more connections") { $0.count >= settled + 2 }
            #expect(later.dropFirst(settled).allSatisfy { $0.ok && $0.direct }, "\(later.suffix(3))")
            try await node.waitForCapture("shop detached, shop/app.service no longer captured") {
                $0.namespace("shop")?.attached != true && $0.workload("shop", "app.service")?.captured != true
            }
            try await control.waitForStatus("weft-control hears that shop/app.service is no longer captured") {
                $0.workload("shop", "app.service")?.captured == false
            }

            // One process throughout, and no connection lost at either switch.
            let results = loop.results
            #expect(loop.child.isRunning)
            #expect(Set(results.map(\.pid)) == [loop.child.pid], "the workload was restarted")
            let failed = results.filter { !$0.ok }
            #expect(failed.isEmpty, "connections failed around enable/disable:\n\(failed.map(\.raw).joined(separator: "\n"))")
        }
    }

    @Test func weftdKeepsEnforcingWithControlDownAndCatchesUpWhenItReturns() async throws {
        try await withControlNode { node, control in
            _ = try await node.startServer(port: Self.port)
            let loop = try node.startLoop(in: try node.unit("shop", "app.service"), host: Self.node4, port: Self.port)
            try await control.checkWeftctl(["namespace", "enable", "shop"])
            let synced = try await waitSynced(node, control)
            var mark = loop.results.count
            try await loop.waitFor("a captured connection") { $0.dropFirst(mark).contains { $0.ok && $0.viaProxy } }

            control.kill()
            mark = loop.results.count
            // weftd's long poll breaks and its retries fail; nothing of that reaches the data path.
            let downUntil = Date().addingTimeInterval(2.5)
            while Date() < downUntil {
                let ready = try await node.readiness()
                #expect(ready == 200, "weftd stopped being ready while weft-control was down")
                try await Task.sleep(for: .milliseconds(250))
            }
            let whileDown = try await loop.waitFor("three connections while weft-control is down") { $0.count >= mark + 3 }
            let down = Array(whileDown.dropFirst(mark))
            #expect(down.allSatisfy { $0.ok && $0.viaProxy },
                    "connections not captured while weft-control was down:\n\(down.map(\.raw).joined(separator: "\n"))")
            let state = try await node.capture()
            #expect(state.ready, "\(state)")
            #expect(state.appliedVersion == synced, "\(state)")
            #expect(state.namespace("shop")?.attached == true, "\(state)")
            #expect(state.workload("shop", "app.service")?.captured == true, "\(state)")
            #expect(node.weftd?.isRunning == true)

            // Back with the same data dir: the change made now reaches the node.
            try await control.start()
            mark = loop.results.count
            let disabledAt = Date()
            try await control.checkWeftctl(["namespace", "disable", "shop"])
            let caught = try await node.waitForCapture("the disable applied: appliedVersion above \(synced), shop detached",
                                                       timeout: 12) {
                ($0.appliedVersion ?? 0) > synced && $0.namespace("shop")?.attached == false
                    && $0.workload("shop", "app.service")?.captured == false
            }
            note("restart + disable -> applied on the node", since: disabledAt)
            try await loop.waitFor("direct connections after the disable") { results in
                results.dropFirst(mark).contains { $0.ok && $0.direct }
            }
            try await control.waitForStatus("the node reports the new version") {
                ($0.node(node.name)?.appliedVersion ?? 0) >= (caught.appliedVersion ?? .max)
            }
            #expect(Set(loop.results.map(\.pid)) == [loop.child.pid], "the workload was restarted")
        }
    }

    @Test func aRestartedWeftdWithControlDownRunsOnItsPersistedSnapshot() async throws {
        try await withControlNode { node, control in
            _ = try await node.startServer(port: Self.port)
            let app = try node.unit("shop", "app.service")
            try await control.checkWeftctl(["namespace", "enable", "shop"])
            let synced = try await waitSynced(node, control)
            let persisted = try node.persistedSnapshot()
            #expect((persisted["version"] as? NSNumber)?.int64Value == synced, "\(persisted)")
            let namespaces = persisted["namespaces"] as? [[String: Any]] ?? []
            #expect(namespaces.contains { $0["name"] as? String == "shop" && $0["mesh"] as? Bool == true }, "\(persisted)")

            control.kill()
            node.kill(SIGKILL)
            #expect(node.weftd?.isRunning == false)
            try node.restart()
            try await node.waitReady(timeout: 10)
            let state = try await node.waitForCapture("shop attached and shop/app.service captured, from snapshot \(synced)") {
                $0.namespace("shop")?.attached == true && $0.workload("shop", "app.service")?.captured == true
            }
            #expect(state.appliedVersion == synced, "\(state)")
            let probe = try await node.probe(from: app, host: Self.node4, port: Self.port)
            #expect(probe.ok && probe.echo == "ping", "\(probe)")
            #expect(probe.viaProxy, "not captured after the restart: \(probe)")
            #expect(probe.peer == Endpoint(Self.node4, Self.port), "\(probe)")
            #expect(!control.isRunning)
        }
    }

    @Test func aWeftdThatNeverSyncedIsNotReady() async throws {
        try await withControlNode(startWeftd: false) { node, control in
            // There is something to sync (shop meshed), but weftd never gets it.
            try await control.checkWeftctl(["namespace", "enable", "shop"])
            let slice = try node.slice("shop")
            _ = try node.unit("shop", "app.service")
            control.kill()
            try node.startWeftd()

            var answered = 0
            let until = Date().addingTimeInterval(3)
            while Date() < until {
                let (status, body) = try await node.admin("/healthz/ready")
                if status != 0 {
                    answered += 1
                    #expect(status == 503, "weftd ready without ever syncing: HTTP \(status) \(body)")
                }
                if let state = try? await node.capture() {
                    #expect(!state.ready, "\(state)")
                    #expect(!state.namespaces.contains { $0.attached }, "\(state)")
                    #expect(!state.workloads.contains { $0.captured }, "\(state)")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(answered > 0, "weftd's admin endpoint never answered")
            #expect(node.weftd?.isRunning == true, "weftd exited:\n\(node.weftdLog)")
            #expect(!node.hasJoined)
            let hooks = try node.attachedHooks(on: slice)
            #expect(hooks.isEmpty, "capture attached to shop's slice without a snapshot: \(hooks)")

            // Not a dead end: with weft-control back, weftd joins, syncs and becomes ready.
            try await control.start()
            try await node.waitReady(timeout: 15)
            try await node.waitForCapture("shop attached after the first sync") {
                $0.namespace("shop")?.attached == true && $0.workload("shop", "app.service")?.captured == true
            }
        }
    }

    @Test func aNodeJoinedToAnEmptyControlPlaneBecomesReady() async throws {
        // A fresh weft-control: no resource yet, snapshot version 0. That is
        // still the desired state (nothing meshed), and the node has it.
        try await withControlNode { node, control in
            try await node.waitReady(timeout: 5)
            let state = try await node.capture()
            #expect(state.ready, "\(state)")
            #expect(state.namespaces.isEmpty, "\(state)")
        }
    }

    @Test func aSyncedNodeWaitsOnTheLongPollInsteadOfPollingInALoop() async throws {
        try await withControlNode { node, control in
            // Node reports are store writes: the revision counts them.
            func reportsIn(seconds: Double) async throws -> Int64 {
                let first = try await control.status().revision
                try await Task.sleep(for: .seconds(seconds))
                return try await control.status().revision - first
            }
            // An empty control plane (snapshot version 0).
            try await Task.sleep(for: .seconds(1))
            let idleEmpty = try await reportsIn(seconds: 3)
            #expect(idleEmpty <= 3,
                    "with nothing changing, weft-control's store revision grew by \(idleEmpty) in 3 s: weftd re-fetches the snapshot and re-reports in a loop")

            // With a namespace (version above 0): the same.
            try await control.checkWeftctl(["namespace", "enable", "shop"])
            _ = try await waitSynced(node, control)
            let idleSynced = try await reportsIn(seconds: 3)
            #expect(idleSynced <= 3,
                    "with nothing changing, weft-control's store revision grew by \(idleSynced) in 3 s after a sync")
        }
    }

    @Test func workloadCertificatesAreIssuedOnlyForTheNodesOwnWorkloads() async throws {
        try await withControlNode { node, control in
            _ = try node.unit("shop", "app.service")
            try await control.checkWeftctl(["namespace", "enable", "shop"])

            // weftd asks for its workload's identity on its own, and reports it.
            let status = try await control.waitForStatus("node \(node.name) reports a certificate for \(Self.defaultIdentity)") {
                $0.node(node.name)?.certificates?.contains { $0.spiffeID == Self.defaultIdentity } == true
            }
            let held = status.node(node.name)?.certificates?.first { $0.spiffeID == Self.defaultIdentity }
            let notAfter = held.flatMap { ISO8601DateFormatter().date(from: $0.notAfter) }
            let lifetime = notAfter.map { $0.timeIntervalSinceNow / 3600 } ?? -1
            #expect((23...24.1).contains(lifetime), "certificate notAfter \(held?.notAfter ?? "-") is not about 24 h away")
            let table = try await control.checkWeftctl(["status"])
            let nodeRow = (table.split(separator: "\n").first { $0.hasPrefix(node.name) }.map(String.init) ?? "")
                .trimmingCharacters(in: .whitespaces)
            // The last column, WORKLOAD CERTS: the soonest expiry, about a day away.
            #expect(nodeRow.range(of: #"in 2[34]h$"#, options: .regularExpression) != nil,
                    "weftctl status shows no workload certificate expiry for \(node.name):\n\(table)")

            // Another node's Workload in the same meshed namespace.
            try await control.apply("""
                apiVersion: weft.dev/v1alpha1
                kind: Workload
                metadata:
                  name: elsewhere
                  namespace: shop
                spec:
                  node: other-node
                  unit: elsewhere.service
                  serviceAccount: elsewhere
                """)
            _ = try await waitSynced(node, control)
            let snapshot = try node.persistedSnapshot()
            let snapshotWorkloads = (snapshot["workloads"] as? [[String: Any]] ?? [])
                .map { "\($0["namespace"] ?? "?")/\($0["name"] ?? "?")@\($0["node"] ?? "?")" }
            #expect(snapshotWorkloads == ["shop/app.service@\(node.name)"],
                    "the node's snapshot should hold only its own workloads: \(snapshotWorkloads)")

            // The node's own credential, as weftd holds it.
            let certificate = node.stateDir.appendingPathComponent("node.crt").path
            let key = node.stateDir.appendingPathComponent("node.key").path
            func ask(as caller: String = node.name, _ workload: String, identity: String,
                     withCredential: Bool = true) async throws -> (status: Int, body: String) {
                let csr = try await makeCSR(in: control.dir, identity: identity)
                return try await control.request(
                    "POST", "/v1/nodes/\(caller)/certificates",
                    json: ["namespace": "shop", "workload": workload, "csr": csr],
                    certificate: withCredential ? certificate : nil, key: withCredential ? key : nil)
            }
            // Its own workload: issued (so the credential and the request are right)...
            let own = try await ask("app.service", identity: Self.defaultIdentity)
            #expect(own.status == 200, "HTTP \(own.status) \(own.body)")
            #expect(own.body.contains("BEGIN CERTIFICATE"), "\(own.body)")
            // ...another node's workload: refused,
            let other = try await ask("elsewhere", identity: "spiffe://cluster.local/ns/shop/sa/elsewhere")
            #expect(other.status == 403, "a node got a certificate for another node's workload: HTTP \(other.status) \(other.body)")
            #expect(!other.body.contains("BEGIN CERTIFICATE"), "\(other.body)")
            // ...a workload that does not exist: refused,
            let missing = try await ask("nothing.service", identity: Self.defaultIdentity)
            #expect(missing.status == 403, "HTTP \(missing.status) \(missing.body)")
            // ...in the other node's name: refused,
            let impersonated = try await ask(as: "other-node", "elsewhere", identity: "spiffe://cluster.local/ns/shop/sa/elsewhere")
            #expect(impersonated.status == 403, "HTTP \(impersonated.status) \(impersonated.body)")
            // ...and without a node credential: unauthenticated.
            let anonymous = try await ask("app.service", identity: Self.defaultIdentity, withCredential: false)
            #expect(anonymous.status == 401, "HTTP \(anonymous.status) \(anonymous.body)")

            // weftd itself never asked for the other node's identity.
            let final = try await control.status()
            #expect(final.node(node.name)?.certificates?.contains { $0.spiffeID.hasSuffix("/sa/elsewhere") } != true,
                    "\(final)")
        }
    }
}

/// Waits until weftd applied weft-control's current snapshot and reported it
/// (discovered workloads registered, so the version has settled); returns that version.
func waitSynced(_ node: TestNode, _ control: ControlPlane, timeout: Double = 10) async throws -> Int64 {
    let status = try await control.waitForStatus("node \(node.name) up to date with a snapshot above 0", timeout: timeout) {
        $0.version > 0 && $0.node(node.name)?.appliedVersion == $0.version
    }
    try await node.waitForCapture("weftd applied snapshot \(status.version)") { $0.appliedVersion == status.version }
    return status.version
}

/// A P-256 key and a CSR asking for `identity` (a URI SAN), made by openssl;
/// returns the CSR as PEM.
func makeCSR(in dir: URL, identity: String) async throws -> String {
    let stem = dir.appendingPathComponent("csr-\(UUID().uuidString)").path
    defer {
        unlink(stem + ".key")
        unlink(stem + ".csr")
    }
    let result = await Command.runAsync([
        "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", stem + ".key", "-subj", "/O=weft-integration-test",
        "-addext", "subjectAltName=URI:\(identity)", "-out", stem + ".csr",
    ])
    guard result.succeeded, let pem = try? String(contentsOfFile: stem + ".csr", encoding: .utf8) else {
        throw HarnessError("openssl could not make a CSR: \(result)")
    }
    return pem
}

/// Prints how long a step took, for the report (not asserted beyond the waits).
func note(_ what: String, since start: Date) {
    print("[ControlTests] \(what): \(Int(Date().timeIntervalSince(start) * 1000)) ms")
}
