/// `weftctl check`: whether a node can run weftd, and what to do about it
/// when it cannot. The facts are gathered by the caller (files under /proc
/// and /sys, dlopen); the judgement here is pure, so it is table-tested.
public enum Preflight {
    /// What a node looks like, as read from it.
    public struct Facts: Sendable {
        /// `uname -r`.
        public var kernelRelease: String
        /// /sys/kernel/btf/vmlinux exists.
        public var btf: Bool
        /// /proc/self/mountinfo.
        public var mountinfo: String
        /// `CapEff:` of /proc/self/status, hex.
        public var effectiveCapabilities: String
        /// libbpf.so.1 could be loaded.
        public var libbpf: Bool

        public init(kernelRelease: String, btf: Bool, mountinfo: String, effectiveCapabilities: String, libbpf: Bool) {
            self.kernelRelease = kernelRelease
            self.btf = btf
            self.mountinfo = mountinfo
            self.effectiveCapabilities = effectiveCapabilities
            self.libbpf = libbpf
        }
    }

    public enum Status: String, Sendable, Codable {
        case ok, warning, failed
    }

    public struct Check: Sendable, Codable, Equatable {
        public var name: String
        public var status: Status
        public var detail: String
        /// What to do when the status is not ok.
        public var remedy: String?
    }

    /// cgroup sock_addr and sockops programs with BPF links, getpeername
    /// hooks (5.8) and netns cookies of sockets (5.14) are all needed.
    public static let minimumKernel = (5, 15)

    static let capabilities: [(name: String, bit: Int)] = [
        ("CAP_NET_ADMIN", 12), ("CAP_SYS_ADMIN", 21), ("CAP_PERFMON", 38), ("CAP_BPF", 39),
    ]

    public static func evaluate(_ f: Facts) -> [Check] {
        var checks: [Check] = []

        let numbers = f.kernelRelease.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        if numbers.count == 2, (numbers[0], numbers[1]) >= minimumKernel {
            checks.append(Check(name: "kernel", status: .ok, detail: "Linux \(f.kernelRelease)"))
        } else {
            checks.append(Check(name: "kernel", status: .failed,
                                detail: "Linux \(f.kernelRelease); weftd needs \(minimumKernel.0).\(minimumKernel.1) or later",
                                remedy: "boot a newer kernel (Debian 12: linux-image-amd64, 6.1)"))
        }

        checks.append(f.btf
            ? Check(name: "btf", status: .ok, detail: "/sys/kernel/btf/vmlinux present")
            : Check(name: "btf", status: .failed, detail: "no /sys/kernel/btf/vmlinux",
                    remedy: "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every Debian 12 kernel is)"))

        let mounts = MountInfo.mounts(f.mountinfo)
        if let cgroup2 = mounts.first(where: { $0.type == "cgroup2" }) {
            checks.append(Check(name: "cgroup-v2", status: .ok, detail: "cgroup2 mounted at \(cgroup2.point)"))
        } else {
            checks.append(Check(name: "cgroup-v2", status: .failed, detail: "no cgroup2 mount",
                                remedy: "boot with systemd.unified_cgroup_hierarchy=1, or mount one: mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified"))
        }

        if mounts.contains(where: { $0.type == "bpf" && $0.point == "/sys/fs/bpf" }) {
            checks.append(Check(name: "bpffs", status: .ok, detail: "bpffs mounted at /sys/fs/bpf"))
        } else {
            checks.append(Check(name: "bpffs", status: .warning, detail: "nothing mounted at /sys/fs/bpf",
                                remedy: "weftd mounts it at start (and weftd.service does in ExecStartPre); by hand: mount -t bpf bpf /sys/fs/bpf"))
        }

        let caps = UInt64(f.effectiveCapabilities.trimmingCharacters(in: " \t\n"), radix: 16) ?? 0
        let missing = capabilities.filter { caps & (1 << UInt64($0.bit)) == 0 }.map(\.name)
        if missing.isEmpty {
            checks.append(Check(name: "capabilities", status: .ok, detail: capabilities.map(\.name).joined(separator: " ")))
        } else {
            checks.append(Check(name: "capabilities", status: .failed, detail: "missing \(missing.joined(separator: " "))",
                                remedy: "run as root, or under systemd with systemd/weftd.service (AmbientCapabilities=\(capabilities.map(\.name).joined(separator: " ")))"))
        }

        checks.append(f.libbpf
            ? Check(name: "libbpf", status: .ok, detail: "libbpf.so.1 loads")
            : Check(name: "libbpf", status: .failed, detail: "libbpf.so.1 not found",
                    remedy: "apt-get install libbpf1 (or libbpf-dev to build weftd)"))
        return checks
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        return String(String(drop { chars.contains($0) }.reversed()).drop { chars.contains($0) }.reversed())
    }
}
