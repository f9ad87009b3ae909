import Testing
@testable import WeftCore

@Suite struct PreflightJudgement {
    static let hybrid = """
        25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw
        31 25 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
        40 25 0:33 / /sys/fs/bpf rw - bpf bpf rw,mode=700
        """
    static let good = Preflight.Facts(kernelRelease: "6.1.0-26-amd64", btf: true, mountinfo: hybrid,
                                      effectiveCapabilities: "000001ffffffffff", libbpf: true)

    func status(_ f: Preflight.Facts, _ name: String) -> Preflight.Status? {
        Preflight.evaluate(f).first { $0.name == name }?.status
    }

    @Test func aDebianTwelveNodeAsRootPassesEverything() {
        #expect(Preflight.evaluate(Self.good).allSatisfy { $0.status == .ok })
        #expect(Preflight.evaluate(Self.good).first { $0.name == "cgroup-v2" }?.detail == "cgroup2 mounted at /sys/fs/cgroup/unified")
    }

    @Test func eachMissingPieceFailsWithARemedy() {
        var f = Self.good
        f.kernelRelease = "5.10.0-32-amd64"
        #expect(status(f, "kernel") == .failed)
        f = Self.good
        f.btf = false
        #expect(status(f, "btf") == .failed)
        f = Self.good
        f.mountinfo = "25 1 0:23 / /sys rw - sysfs sysfs rw"
        #expect(status(f, "cgroup-v2") == .failed)
        #expect(status(f, "bpffs") == .warning, "weftd mounts bpffs itself")
        f = Self.good
        f.effectiveCapabilities = String(UInt64(1) << 12 | UInt64(1) << 38 | UInt64(1) << 39, radix: 16)
        let caps = Preflight.evaluate(f).first { $0.name == "capabilities" }
        #expect(caps?.status == .failed && caps?.detail == "missing CAP_SYS_ADMIN")
        f = Self.good
        f.libbpf = false
        #expect(status(f, "libbpf") == .failed)
        #expect(Preflight.evaluate(f).filter { $0.status != .ok }.allSatisfy { $0.remedy != nil })
    }
}
