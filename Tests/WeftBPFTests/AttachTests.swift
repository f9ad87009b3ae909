import CWeftShim
import Foundation
import Glibc
import Logging
import Testing
import WeftCore
@testable import WeftBPF

/// Real kernel: load, attach to a throwaway cgroup, break, repair, adopt.
/// Needs root; every test makes its own cgroup and pin folder and removes them.
@Suite(.serialized, .enabled(if: getuid() == 0 || ProcessInfo.processInfo.environment["WEFT_SKIP_PRIVILEGED"] != "1"))
struct CaptureAttachment {
    struct Scratch {
        let cgroup: String
        let layout: PinLayout

        init() throws {
            try #require(getuid() == 0, "privileged test: run as root (or set WEFT_SKIP_PRIVILEGED=1 to skip)")
            let text = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            let mount = try #require(text.split(separator: "\n").compactMap { line -> String? in
                let f = line.split(separator: " ")
                guard let d = f.firstIndex(of: "-"), d + 1 < f.count, f[d + 1] == "cgroup2" else { return nil }
                return String(f[4])
            }.first, "no cgroup2 mount")
            let id = String(UInt32.random(in: 0...UInt32.max), radix: 36)
            cgroup = "\(mount)/wt-unit-\(id)"
            try FileManager.default.createDirectory(atPath: cgroup, withIntermediateDirectories: true)
            layout = PinLayout(root: "/sys/fs/bpf/weft", node: "ut-\(id)")
        }

        func cleanup() {
            CaptureDataplane.removeAll(layout: layout)
            rmdir(cgroup)
        }

        var settings: CaptureSettings {
            CaptureSettings(outboundPort: 15001, proxyMark: 0x5746, exclusions: CaptureExclusions())
        }

        /// Programs attached directly to the cgroup, per attach type (not inherited ones).
        func attachedCount(_ dp: CaptureDataplane, _ hook: CaptureHook) -> Int {
            let fd = open(cgroup, O_RDONLY | O_DIRECTORY)
            defer { close(fd) }
            var ids = [UInt32](repeating: 0, count: 16)
            var count = UInt32(ids.count)
            var flags: UInt32 = 0
            let type: bpf_attach_type = switch hook {
            case .connect4: BPF_CGROUP_INET4_CONNECT
            case .connect6: BPF_CGROUP_INET6_CONNECT
            case .getpeername4: BPF_CGROUP_INET4_GETPEERNAME
            case .getpeername6: BPF_CGROUP_INET6_GETPEERNAME
            case .sockops: BPF_CGROUP_SOCK_OPS
            case .sendmsg4: BPF_CGROUP_UDP4_SENDMSG
            case .sendmsg6: BPF_CGROUP_UDP6_SENDMSG
            case .recvmsg4: BPF_CGROUP_UDP4_RECVMSG
            case .recvmsg6: BPF_CGROUP_UDP6_RECVMSG
            case .inboundIngress: BPF_CGROUP_INET_INGRESS
            }
            guard bpf_prog_query(fd, type, 0, &flags, &ids, &count) == 0 else { return -1 }
            return Int(count)
        }
    }

    let logger = Logger(label: "test")

    @Test func attachingMakesEveryHookEffectiveOnTheCgroup() throws {
        let s = try Scratch()
        defer { s.cleanup() }
        let dp = try CaptureDataplane(layout: s.layout, settings: s.settings, logger: logger)
        #expect(dp.effectiveHooks(onCgroup: s.cgroup).isEmpty)
        #expect(try dp.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup)) == .attached)
        #expect(dp.effectiveHooks(onCgroup: s.cgroup) == Set(CaptureHook.allCases))
        #expect(try dp.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup)) == .unchanged)
        #expect(dp.attachedPinKeys() == ["t"])
        dp.detach(pinKey: "t")
        #expect(dp.effectiveHooks(onCgroup: s.cgroup).isEmpty)
        #expect(dp.attachedPinKeys().isEmpty)
    }

    @Test func aLinkDetachedBehindWeftsBackIsRepaired() throws {
        let s = try Scratch()
        defer { s.cleanup() }
        let dp = try CaptureDataplane(layout: s.layout, settings: s.settings, logger: logger)
        try dp.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup))
        let pin = "\(s.layout.linkDir("t"))/\(CaptureHook.connect4.rawValue)"
        let fd = bpf_obj_get(pin)
        try #require(fd >= 0)
        #expect(bpf_link_detach(fd) == 0)
        close(fd)
        #expect(!dp.effectiveHooks(onCgroup: s.cgroup).contains(.connect4))
        #expect(try dp.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup)) == .repaired)
        #expect(dp.effectiveHooks(onCgroup: s.cgroup) == Set(CaptureHook.allCases))
        #expect(s.attachedCount(dp, .connect4) == 1)
    }

    @Test func aRestartedAgentAdoptsPinnedLinksInsteadOfAttachingASecondCopy() throws {
        let s = try Scratch()
        defer { s.cleanup() }
        do {
            let first = try CaptureDataplane(layout: s.layout, settings: s.settings, logger: logger)
            try first.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup))
        } // the first agent is gone; its links stay pinned
        let second = try CaptureDataplane(layout: s.layout, settings: s.settings, logger: logger)
        // Adopted at load: the pinned links already run the new programs.
        #expect(second.effectiveHooks(onCgroup: s.cgroup) == Set(CaptureHook.allCases))
        #expect(try second.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup)) == .unchanged)
        for hook in CaptureHook.allCases {
            #expect(s.attachedCount(second, hook) == 1, "\(hook)")
        }
    }

    @Test func removeAllLeavesNothingAttachedOrPinned() throws {
        let s = try Scratch()
        defer { s.cleanup() }
        let dp = try CaptureDataplane(layout: s.layout, settings: s.settings, logger: logger)
        try dp.ensureAttached(AttachTarget(pinKey: "t", cgroupPath: s.cgroup))
        CaptureDataplane.removeAll(layout: s.layout)
        for hook in CaptureHook.allCases {
            #expect(s.attachedCount(dp, hook) == 0, "\(hook)")
        }
        #expect(!FileManager.default.fileExists(atPath: s.layout.nodeDir))
    }
}
