import Foundation
import Testing

/// `weftctl check` on this machine, as root: every pre-flight check passes;
/// with capabilities taken away it fails naming the remedy.
@Suite("weftctl check")
struct WeftctlCheckTests {
    @Test("on a node that can run weftd every check is ok and the exit status is 0")
    func passesWhereWeftdRuns() throws {
        try #require(geteuid() == 0, "the pre-flight checks the capabilities weftd needs: run the tests as root")
        let r = try weftctl(["check", "-o", "json"])
        #expect(r.status == 0, "\(r)")
        let checks = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(Set(checks.compactMap { $0["name"] as? String }) == ["kernel", "btf", "cgroup-v2", "bpffs", "capabilities", "libbpf"])
        // bpffs may be unmounted before weftd first runs: a warning, not a failure.
        #expect(checks.allSatisfy { ($0["status"] as? String) != "failed" }, "\(r.stdout)")
    }

    @Test("without CAP_BPF and CAP_PERFMON the check fails, names them and says what to do")
    func failsWithoutCapabilities() throws {
        try #require(geteuid() == 0, "run the tests as root")
        let binary = try WeftctlBinaries.path("weftctl")
        let r = try WeftctlSubprocess.run("/usr/bin/setpriv", ["--bounding-set=-bpf,-perfmon", binary, "check"],
                                          environment: ["PATH": "/usr/bin:/bin"])
        #expect(r.status == 1, "\(r)")
        #expect(r.stdout.contains("capabilities   failed   missing CAP_PERFMON CAP_BPF"), "\(r.stdout)")
        #expect(r.stdout.contains("capabilities: run as root, or under systemd with systemd/weftd.service"), "\(r.stdout)")
    }
}
