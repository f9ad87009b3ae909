import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `make install` and `make uninstall` on a real node: the installed units
/// pass `systemd-analyze verify`, the installed weftd captures, and uninstall
/// takes away every file and every eBPF program and pin it made.
@Suite(
    "install and uninstall",
    .serialized,
    .enabled(if: TestEnvironment.shouldRun, "not root and WEFT_SKIP_PRIVILEGED=1: privileged tests skipped"),
    .nodeGateTimeLimit,
    .compactMapIssues { FailureTracker.shared.note($0) }
)
struct InstallTests {
    @Test func makeInstallGivesVerifiedUnitsAndAWorkingWeftdAndUninstallRemovesFilesProgramsAndPins() async throws {
        let id = String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("weft-install-\(id)").path
        let prefix = "\(root)/usr", etc = "\(root)/etc"
        let bpfRoot = "/sys/fs/bpf/weft-install-\(id)"
        defer {
            try? FileManager.default.removeItem(atPath: root)
            Command.run(["rm", "-rf", bpfRoot])
        }
        let make = ["make", "-s", "-C", TestEnvironment.packageRoot.path, "PREFIX=\(prefix)", "SYSCONFDIR=\(etc)"]
        try await withTestNode(namespaces: [.meshed("shop")], configure: { node in
            try Command.check(make + ["install-files", "BUILD_DIR=\(URL(fileURLWithPath: TestEnvironment.weftd).deletingLastPathComponent().path)"],
                              timeout: 60)
            node.weftdBinary = "\(prefix)/bin/weftd"
            node.bpfRoot = bpfRoot
        }) { node in
            let units = ["weftd.service", "weft-control.service", "weft.slice"].map { "\(prefix)/lib/systemd/system/\($0)" }
            for unit in units { #expect(FileManager.default.fileExists(atPath: unit), "\(unit) not installed") }
            let verify = Command.run(["systemd-analyze", "verify"] + units)
            #expect(verify.succeeded && verify.stderr.isEmpty && verify.stdout.isEmpty, "\(verify)")
            let unitText = try String(contentsOfFile: units[0], encoding: .utf8)
            #expect(unitText.contains("ExecStart=\(prefix)/bin/weftd --config \(etc)/weft/weftd.yaml"), "\(unitText)")
            for completion in ["bash-completion/completions/weftctl", "zsh/site-functions/_weftctl", "fish/vendor_completions.d/weftctl.fish"] {
                let size = (try? FileManager.default.attributesOfItem(atPath: "\(prefix)/share/\(completion)")[.size] as? Int) ?? 0
                #expect(size > 100, "completion \(completion) missing or empty")
            }
            let check = Command.run(["\(prefix)/bin/weftctl", "check"])
            #expect(check.succeeded, "\(check)")

            // The installed weftd captures (withTestNode waited for it to be ready).
            _ = try await node.startServer(port: 8080)
            let app = try await node.discoveredUnit("shop", "app.service")
            let r = try await node.probe(from: app, host: TestNode.nodeAddress4, port: 8080)
            #expect(r.ok && r.viaProxy, "\(r)")

            // Stopped, weftd leaves capture pinned (failing closed); uninstall takes it all away.
            node.kill(SIGTERM)
            let slice = try node.slice("shop")
            #expect(try !node.attachedHooks(on: slice).isEmpty)
            let uninstall = Command.run(make + ["uninstall", "BPF_ROOT=\(bpfRoot)"], timeout: 60)
            #expect(uninstall.succeeded, "\(uninstall)")
            #expect(try node.attachedHooks(on: slice).isEmpty, "programs still attached after uninstall")
            #expect(!FileManager.default.fileExists(atPath: bpfRoot), "pins left in \(bpfRoot)")
            let left = (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? [])
                .filter { path in
                    var isDir: ObjCBool = false
                    return FileManager.default.fileExists(atPath: "\(root)/\(path)", isDirectory: &isDir) && !isDir.boolValue
                }
            #expect(left.isEmpty, "files left after uninstall: \(left)")
        }
    }
}
