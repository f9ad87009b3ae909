import CLibBPF
import CWeftShim
import Foundation
import Glibc
import Logging
import WeftCore

/// The capture settings the eBPF programs read from `weft_config` and the
/// exclusion maps.
public struct CaptureSettings: Sendable, Hashable {
    public var outboundPort: UInt16
    public var proxyMark: UInt32
    public var exclusions: CaptureExclusions
    /// weftd's DNS server on loopback; 0: meshed workloads' DNS is not captured.
    public var dnsPort: UInt16
    /// weftd's own cgroup v2 id: with the mark, what names the node proxy's
    /// sockets to the PeerAuthentication STRICT check. 0: unknown (STRICT
    /// then lets only a workload's own connections in).
    public var proxyCgroupID: UInt64
    /// Same-node legs between meshed workloads and the proxy move socket to
    /// socket (bpf/lib/redirect.h). Only turned on once the proxy's half,
    /// ``CaptureDataplane/ensureProxyAttached(cgroupPath:)``, is in place.
    public var socketRedirect: Bool

    public init(outboundPort: UInt16, proxyMark: UInt32, exclusions: CaptureExclusions, dnsPort: UInt16 = 0,
                proxyCgroupID: UInt64 = 0, socketRedirect: Bool = false) {
        self.proxyCgroupID = proxyCgroupID
        self.socketRedirect = socketRedirect
        self.outboundPort = outboundPort
        self.proxyMark = proxyMark
        self.exclusions = exclusions
        self.dnsPort = dnsPort
    }
}

/// The programs of bpf/sock_capture.c, by their function names.
public enum CaptureHook: String, CaseIterable, Sendable, Codable {
    case connect4 = "weft_sock4_connect"
    case connect6 = "weft_sock6_connect"
    case getpeername4 = "weft_sock4_getpeername"
    case getpeername6 = "weft_sock6_getpeername"
    case sockops = "weft_sockops"
    case sendmsg4 = "weft_sock4_sendmsg"
    case sendmsg6 = "weft_sock6_sendmsg"
    case recvmsg4 = "weft_sock4_recvmsg"
    case recvmsg6 = "weft_sock6_recvmsg"
    /// PeerAuthentication STRICT on connections into the workload.
    case inboundIngress = "weft_inbound_ingress"
}

extension CaptureHook {
    /// The hooks that restore before those that redirect: a connection
    /// redirected by connect4/6 must find sockops in place to record its
    /// 4-tuple, or the proxy, finding no record, would have to reset it; a DNS
    /// query redirected by connect or sendmsg must find recvmsg in place, or
    /// its reply would come from an address the resolver did not ask.
    /// Enforcement comes first of all: a workload is never captured without
    /// its inbound check.
    public static let attachOrder: [CaptureHook] = [.inboundIngress, .sockops, .getpeername4, .getpeername6, .recvmsg4, .recvmsg6,
                                                    .connect4, .connect6, .sendmsg4, .sendmsg6]

    var redirects: Bool { self == .connect4 || self == .connect6 || self == .sendmsg4 || self == .sendmsg6 }
}

/// The programs of same-node socket redirect that are not capture hooks:
/// one on weftd's own cgroup, one on the `weft_socks` map.
public enum RedirectProgram: String, CaseIterable, Sendable {
    /// sockops on weftd's cgroup: the proxy's ends of same-node legs join.
    case proxySockops = "weft_proxy_sockops"
    /// sk_msg on `weft_socks`: a joined socket's writes go to its peer.
    case messageRedirect = "weft_msg_redirect"
}

/// A cgroup that capture is attached to, and the folder of its link pins
/// (relative to `PinLayout.linksDir`).
public struct AttachTarget: Sendable, Hashable {
    public var pinKey: String
    public var cgroupPath: String

    public init(pinKey: String, cgroupPath: String) {
        self.pinKey = pinKey
        self.cgroupPath = cgroupPath
    }
}

public enum AttachOutcome: String, Sendable {
    /// Every hook was already attached with the current programs.
    case unchanged
    /// Nothing was attached; now everything is.
    case attached
    /// Links pinned by an earlier weftd now run this weftd's programs.
    case adopted
    /// Something should have been attached and was not: it is again.
    case repaired
}

/// Loads Weft's eBPF programs, pins them, and attaches them to cgroups.
/// One per weftd; not thread-safe (the agent owns it). The data path reads
/// the maps through `CapturedConnectionTable`, which is.
public final class CaptureDataplane {
    public let layout: PinLayout
    private let object: OpaquePointer
    private var programs: [CaptureHook: OpaquePointer] = [:]
    public private(set) var programIDs: [CaptureHook: UInt32] = [:]
    private var redirectPrograms: [RedirectProgram: OpaquePointer] = [:]
    private var proxySockopsID: UInt32 = 0
    /// Why sk_msg could not be attached to `weft_socks`, if it could not.
    private var messageRedirectError: BPFError?
    private let logger: Logger

    public static let objectName = "sock_capture"

    /// Loads the embedded object, reusing maps pinned by an earlier weftd,
    /// writes the settings, and moves every link already pinned for this
    /// node onto the new programs (atomically: `BPF_LINK_UPDATE`), so a
    /// restart neither detaches capture nor attaches a second copy.
    public init(layout: PinLayout, settings: CaptureSettings, logger: Logger) throws {
        self.layout = layout
        self.logger = logger
        BPFLog.install(logger)
        try Self.ensureBPFFS(under: layout.root)
        for dir in [layout.mapsDir, layout.progsDir, layout.linksDir] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        guard let b64 = EmbeddedBPFObjects.base64[Self.objectName], let elf = Data(base64Encoded: b64) else {
            throw BPFError("find embedded eBPF object \(Self.objectName)", errno: ENOENT, hint: "the build did not embed bpf/\(Self.objectName).c")
        }
        let obj = elf.withUnsafeBytes { raw in
            weft_bpf_open_mem(raw.baseAddress, raw.count, Self.objectName, layout.mapsDir)
        }
        guard let obj else {
            throw BPFError("open eBPF object \(Self.objectName)", errno: errno)
        }
        self.object = obj
        let rc = bpf_object__load(obj)
        if rc != 0 {
            bpf_object__close(obj)
            throw BPFError("load eBPF object \(Self.objectName)", errno: -rc,
                           hint: rc == -Int32(EPERM) ? BPFError.privilegeHint(EPERM) : "see the libbpf messages above; is the kernel at least 5.15 with BTF?")
        }
        for hook in CaptureHook.allCases {
            guard let prog = bpf_object__find_program_by_name(obj, hook.rawValue) else {
                throw BPFError("find program \(hook.rawValue)", errno: ENOENT)
            }
            programs[hook] = prog
            var id: UInt32 = 0
            let e = weft_prog_id(bpf_program__fd(prog), &id)
            if e != 0 { throw BPFError("query program \(hook.rawValue)", errno: -e) }
            programIDs[hook] = id
        }
        for p in RedirectProgram.allCases {
            guard let prog = bpf_object__find_program_by_name(obj, p.rawValue) else {
                throw BPFError("find program \(p.rawValue)", errno: ENOENT)
            }
            redirectPrograms[p] = prog
        }
        let e = weft_prog_id(bpf_program__fd(redirectPrograms[.proxySockops]!), &proxySockopsID)
        if e != 0 { throw BPFError("query program \(RedirectProgram.proxySockops.rawValue)", errno: -e) }
        // Before any socket can join: a socket takes the map's sk_msg
        // program when it joins, not later.
        // Not fatal: without it no socket joins, and every leg takes TCP.
        let rc2 = weft_sockmap_attach_msg_verdict(bpf_program__fd(redirectPrograms[.messageRedirect]!), try mapFD("weft_socks"))
        messageRedirectError = rc2 == 0 ? nil : BPFError("attach \(RedirectProgram.messageRedirect.rawValue) to weft_socks", errno: -rc2)
        try write(settings)
        try adoptPinnedLinks()
        try pinPrograms()
    }

    deinit {
        if statsFD >= 0 { close(statsFD) }
        bpf_object__close(object)
    }

    // MARK: settings

    public func write(_ settings: CaptureSettings) throws {
        var cfg = weft_config()
        cfg.abi_version = UInt32(WEFT_ABI_VERSION)
        cfg.proxy_mark = settings.proxyMark
        cfg.outbound_port = settings.outboundPort
        cfg.dns_port = settings.dnsPort
        cfg.flags = settings.socketRedirect ? UInt16(WEFT_CFG_SOCKET_REDIRECT) : 0
        var zero: UInt32 = 0
        try check(bpf_map_update_elem(mapFD("weft_config"), &zero, &cfg, UInt64(BPF_ANY)), "write weft_config")
        var proxy = weft_proxy_id()
        proxy.cgroup_id = settings.proxyCgroupID
        proxy.mark = settings.proxyMark
        try check(bpf_map_update_elem(mapFD("weft_proxy_id"), &zero, &proxy, UInt64(BPF_ANY)), "write weft_proxy_id")

        let ports = try mapFD("weft_excl_ports")
        try clear(map: ports, keySize: 2)
        var one: UInt8 = 1
        for p in settings.exclusions.ports {
            var port = p
            try check(bpf_map_update_elem(ports, &port, &one, UInt64(BPF_ANY)), "write weft_excl_ports")
        }
        let c4 = try mapFD("weft_excl_cidr4"), c6 = try mapFD("weft_excl_cidr6")
        try clear(map: c4, keySize: MemoryLayout<weft_cidr4_key>.size)
        try clear(map: c6, keySize: MemoryLayout<weft_cidr6_key>.size)
        for cidr in settings.exclusions.cidrs {
            if let v4 = cidr.address.ipv4Bytes {
                var key = weft_cidr4_key()
                key.prefixlen = UInt32(cidr.prefixLength)
                withUnsafeMutableBytes(of: &key.addr) { $0.copyBytes(from: v4) }
                try check(bpf_map_update_elem(c4, &key, &one, UInt64(BPF_ANY)), "write weft_excl_cidr4")
            } else {
                var key = weft_cidr6_key()
                key.prefixlen = UInt32(cidr.prefixLength)
                withUnsafeMutableBytes(of: &key.addr) { $0.copyBytes(from: cidr.address.bytes) }
                try check(bpf_map_update_elem(c6, &key, &one, UInt64(BPF_ANY)), "write weft_excl_cidr6")
            }
        }
    }

    // MARK: attach, detach, verify

    /// Makes sure every hook is attached to `target` with the current
    /// programs, repairing whatever is missing or stale.
    @discardableResult
    public func ensureAttached(_ target: AttachTarget) throws -> AttachOutcome {
        try ensureLinks(CaptureHook.attachOrder.map { ($0.rawValue, programs[$0]!, programIDs[$0]!) },
                        dir: layout.linkDir(target.pinKey), cgroupPath: target.cgroupPath)
    }

    /// Attaches the proxy's half of same-node socket redirect to weftd's own
    /// cgroup (pinned, so it outlives a restart like the capture links).
    @discardableResult
    public func ensureProxyAttached(cgroupPath: String) throws -> AttachOutcome {
        if let messageRedirectError { throw messageRedirectError }
        let p = RedirectProgram.proxySockops
        return try ensureLinks([(p.rawValue, redirectPrograms[p]!, proxySockopsID)], dir: layout.proxyLinksDir, cgroupPath: cgroupPath)
    }

    /// Makes sure each program runs on the cgroup through a link pinned in
    /// `dir` under the program's name, in the order given.
    private func ensureLinks(_ links: [(name: String, prog: OpaquePointer, id: UInt32)], dir: String,
                             cgroupPath: String) throws -> AttachOutcome {
        let cgfd = Glibc.open(cgroupPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgfd >= 0 else {
            throw BPFError("open cgroup \(cgroupPath)", errno: errno, hint: "is it a cgroup v2 directory?")
        }
        defer { close(cgfd) }
        let cgroupID = try Self.cgroupID(path: cgroupPath)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)

        var attachedAny = false, repairedAny = false, adoptedAny = false
        for link in links {
            switch try ensureLink(link.prog, id: link.id, name: link.name, pin: "\(dir)/\(link.name)",
                                  cgfd: cgfd, cgroupID: cgroupID, cgroupPath: cgroupPath) {
            case .unchanged: break
            case .adopted: adoptedAny = true
            case .attached: attachedAny = true
            case .repaired: repairedAny = true
            }
        }
        if repairedAny { return .repaired }
        if attachedAny { return .attached }
        return adoptedAny ? .adopted : .unchanged
    }

    /// Makes sure the link pinned at `pin` runs `prog` on the cgroup; one
    /// pinned before for another cgroup (its unit restarted) is replaced.
    private func ensureLink(_ prog: OpaquePointer, id: UInt32, name: String, pin: String,
                            cgfd: Int32, cgroupID: UInt64, cgroupPath: String) throws -> AttachOutcome {
        var repaired = false
        if access(pin, F_OK) == 0 {
            let linkFD = bpf_obj_get(pin)
            if linkFD >= 0 {
                defer { close(linkFD) }
                var progID: UInt32 = 0, linkCgroup: UInt64 = 0, attachType: UInt32 = 0
                if weft_link_info(linkFD, &progID, &linkCgroup, &attachType) == 0, linkCgroup == cgroupID {
                    if progID == id { return .unchanged }
                    try check(bpf_link_update(linkFD, bpf_program__fd(prog), nil), "update link \(pin)")
                    return .adopted
                }
                // Detached by someone, or its cgroup was removed and made
                // again (a restarted unit): the pin is a dead end.
                _ = bpf_link_detach(linkFD)
            }
            unlink(pin)
            repaired = true
        }
        guard let link = bpf_program__attach_cgroup(prog, cgfd) else {
            let e = errno
            throw BPFError("attach \(name) to \(cgroupPath)", errno: e, hint: BPFError.privilegeHint(e))
        }
        let rc = bpf_link__pin(link, pin)
        if rc != 0 {
            _ = bpf_link__destroy(link)  // not pinned: destroying detaches it
            throw BPFError("pin link \(pin)", errno: -rc)
        }
        bpf_link__disconnect(link)
        _ = bpf_link__destroy(link)
        return repaired ? .repaired : .attached
    }

    /// Detaches every hook pinned under `pinKey` and removes the pins.
    public func detach(pinKey: String) {
        Self.detachLinks(in: layout.linkDir(pinKey))
    }

    /// Pin keys (relative folders) that currently hold links.
    public func attachedPinKeys() -> [String] {
        var keys: [String] = []
        let root = layout.linksDir
        guard let walker = FileManager.default.enumerator(atPath: root) else { return [] }
        for case let rel as String in walker {
            if CaptureHook(rawValue: (rel as NSString).lastPathComponent) != nil {
                keys.append((rel as NSString).deletingLastPathComponent)
            }
        }
        return Array(Set(keys)).sorted()
    }

    /// Which hooks run this weftd's programs on `cgroupPath`, inherited
    /// attachments included: the ground truth of whether a workload is
    /// captured, whatever the pins say.
    public func effectiveHooks(onCgroup cgroupPath: String) -> Set<CaptureHook> {
        let cgfd = Glibc.open(cgroupPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard cgfd >= 0 else { return [] }
        defer { close(cgfd) }
        var result: Set<CaptureHook> = []
        for hook in CaptureHook.allCases {
            let type = bpf_program__expected_attach_type(programs[hook]!)
            var ids = [UInt32](repeating: 0, count: 64)
            var count = UInt32(ids.count)
            guard weft_cgroup_effective_progs(cgfd, Int32(type.rawValue), &ids, &count) == 0 else { continue }
            if ids.prefix(Int(count)).contains(programIDs[hook]!) { result.insert(hook) }
        }
        return result
    }

    // MARK: maps

    public func connectionTable() throws -> CapturedConnectionTable {
        let fd = dup(try mapFD("weft_tuple"))
        guard fd >= 0 else { throw BPFError("dup weft_tuple fd", errno: errno) }
        return CapturedConnectionTable(fd: fd)
    }

    /// Entries and capacity of each map (walks the keys: for the admin API
    /// and the metrics exporter, not the data path).
    public func mapStats() -> [(name: String, entries: Int, maxEntries: Int)] {
        var out: [(name: String, entries: Int, maxEntries: Int)] = []
        for (name, keySize) in [("weft_orig_dst", 8), ("weft_tuple", MemoryLayout<weft_tuple_key>.size), ("weft_dns_orig", 8),
                                  ("weft_mtls_mode", MemoryLayout<weft_mtls_key>.size), ("weft_socks", MemoryLayout<weft_tuple_key>.size)] {
            guard let map = bpf_object__find_map_by_name(object, name), let fd = try? mapFD(name) else { continue }
            out.append((name, Self.countEntries(fd: fd, keySize: keySize), Int(bpf_map__max_entries(map))))
        }
        return out
    }

    /// Each program's run count and run time from the kernel (counted while
    /// ``enableRunTimeStats()``'s fd is open).
    public func programStats() -> [(name: String, runCount: UInt64, runTimeNanoseconds: UInt64)] {
        allPrograms.compactMap { name, prog in
            var count: UInt64 = 0, ns: UInt64 = 0
            guard weft_prog_stats(bpf_program__fd(prog), &count, &ns) == 0 else { return nil }
            return (name, count, ns)
        }
    }

    private var statsFD: Int32 = -1

    /// Asks the kernel to count programs' run time while this dataplane lives.
    public func enableRunTimeStats() {
        guard statsFD < 0 else { return }
        let fd = weft_enable_run_time_stats()
        if fd >= 0 {
            statsFD = fd
        } else {
            logger.info("eBPF run-time statistics unavailable; weft_bpf_program_run_* stay at 0",
                        metadata: ["error": "\(String(cString: strerror(-fd)))"])
        }
    }

    // MARK: PeerAuthentication

    /// One entry of `weft_mtls_mode`: a cgroup (a workload's, or a namespace
    /// slice's), a port (0: every other port) and its mode.
    public struct MTLSEntry: Hashable, Sendable {
        public var cgroupID: UInt64
        public var port: UInt16
        public var mode: EffectivePeerAuthentication.Mode

        public init(cgroupID: UInt64, port: UInt16, mode: EffectivePeerAuthentication.Mode) {
            self.cgroupID = cgroupID
            self.port = port
            self.mode = mode
        }
    }

    private var mtlsWritten: Set<MTLSEntry>?

    /// Makes `weft_mtls_mode` hold exactly `entries`: new and changed entries
    /// are written before stale ones are deleted, so a workload that stays
    /// STRICT is never without its entry. Returns whether anything changed.
    @discardableResult
    public func replaceMTLSModes(_ entries: Set<MTLSEntry>) throws -> Bool {
        if entries == mtlsWritten { return false }
        let fd = try mapFD("weft_mtls_mode")
        var wanted: [weft_mtls_key: UInt32] = [:]
        for e in entries {
            var key = weft_mtls_key()
            key.cgroup_id = e.cgroupID
            key.port = e.port
            wanted[key] = UInt32(e.mode.rawValue)
        }
        for (k, mode) in wanted {
            var key = k
            var value = weft_mtls_value()
            value.mode = mode
            try check(bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)), "write weft_mtls_mode")
        }
        var stale: [weft_mtls_key] = []
        var key = weft_mtls_key(), next = weft_mtls_key()
        var first = true
        while (first ? bpf_map_get_next_key(fd, nil, &next) : bpf_map_get_next_key(fd, &key, &next)) == 0 {
            first = false
            if wanted[next] == nil { stale.append(next) }
            key = next
        }
        for var k in stale { _ = bpf_map_delete_elem(fd, &k) }
        mtlsWritten = entries
        return true
    }

    /// What PeerAuthentication did, per workload cgroup, summed over CPUs.
    public func inboundStats() -> [UInt64: (plaintextAccepted: UInt64, strictRefused: UInt64)] {
        guard let fd = try? mapFD("weft_inbound_stats") else { return [:] }
        let cpus = Int(libbpf_num_possible_cpus())
        guard cpus > 0 else { return [:] }
        var out: [UInt64: (plaintextAccepted: UInt64, strictRefused: UInt64)] = [:]
        var key: UInt64 = 0, next: UInt64 = 0
        var first = true
        var values = [weft_inbound_stats](repeating: weft_inbound_stats(), count: cpus)
        while (first ? bpf_map_get_next_key(fd, nil, &next) : bpf_map_get_next_key(fd, &key, &next)) == 0 {
            first = false
            key = next
            var k = next
            guard bpf_map_lookup_elem(fd, &k, &values) == 0 else { continue }
            out[next] = values.reduce((0, 0)) { ($0.0 + $1.plaintext_accepted, $0.1 + $1.strict_refused) }
        }
        return out
    }

    // MARK: whole-node cleanup

    /// Detaches every link pinned for `layout`'s node and removes its pins
    /// (maps and programs go once nothing holds them). For uninstall, and
    /// for tests that must leave nothing behind.
    public static func removeAll(layout: PinLayout) {
        detachLinks(in: layout.linksDir)
        let fd = bpf_obj_get("\(layout.proxyLinksDir)/\(RedirectProgram.proxySockops.rawValue)")
        if fd >= 0 {
            _ = bpf_link_detach(fd)
            close(fd)
        }
        try? FileManager.default.removeItem(atPath: layout.nodeDir)
    }

    // MARK: private

    private func adoptPinnedLinks() throws {
        for key in attachedPinKeys() {
            for hook in CaptureHook.allCases {
                let pin = "\(layout.linkDir(key))/\(hook.rawValue)"
                let fd = bpf_obj_get(pin)
                guard fd >= 0 else { continue }
                defer { close(fd) }
                var progID: UInt32 = 0, cg: UInt64 = 0, at: UInt32 = 0
                guard weft_link_info(fd, &progID, &cg, &at) == 0, cg != 0, progID != programIDs[hook] else { continue }
                if bpf_link_update(fd, bpf_program__fd(programs[hook]!), nil) == 0 {
                    logger.info("adopted pinned capture link", metadata: ["pin": "\(pin)"])
                } else {
                    logger.warning("could not adopt pinned link; reconcile will replace it", metadata: ["pin": "\(pin)", "errno": "\(errno)"])
                }
            }
        }
    }

    /// Every program of the object, by name: the capture hooks, then redirect's.
    private var allPrograms: [(name: String, prog: OpaquePointer)] {
        CaptureHook.allCases.map { ($0.rawValue, programs[$0]!) } + RedirectProgram.allCases.map { ($0.rawValue, redirectPrograms[$0]!) }
    }

    private func pinPrograms() throws {
        for (name, prog) in allPrograms {
            let pin = "\(layout.progsDir)/\(name)"
            unlink(pin)
            let rc = bpf_program__pin(prog, pin)
            if rc != 0 { throw BPFError("pin program \(pin)", errno: -rc) }
        }
    }

    private func mapFD(_ name: String) throws -> Int32 {
        guard let map = bpf_object__find_map_by_name(object, name) else {
            throw BPFError("find map \(name)", errno: ENOENT)
        }
        return bpf_map__fd(map)
    }

    private func check(_ rc: Int32, _ what: String) throws {
        if rc != 0 { throw BPFError(what, errno: rc < 0 ? -rc : errno) }
    }

    private func clear(map fd: Int32, keySize: Int) throws {
        var key = [UInt8](repeating: 0, count: keySize)
        var next = [UInt8](repeating: 0, count: keySize)
        // Deleting while walking restarts the walk from the first key.
        while bpf_map_get_next_key(fd, nil, &next) == 0 {
            key = next
            _ = bpf_map_delete_elem(fd, &key)
        }
    }

    static func countEntries(fd: Int32, keySize: Int) -> Int {
        var key = [UInt8](repeating: 0, count: keySize)
        var next = [UInt8](repeating: 0, count: keySize)
        var n = 0
        var first = true
        while (first ? bpf_map_get_next_key(fd, nil, &next) : bpf_map_get_next_key(fd, &key, &next)) == 0 {
            first = false
            n += 1
            key = next
        }
        return n
    }

    static func detachLinks(in dir: String) {
        guard let walker = FileManager.default.enumerator(atPath: dir) else { return }
        let pins = walker.compactMap { $0 as? String }.compactMap { rel -> (CaptureHook, String)? in
            CaptureHook(rawValue: (rel as NSString).lastPathComponent).map { ($0, "\(dir)/\(rel)") }
        }
        // The reverse of attachOrder: redirection stops first; the hooks that
        // finish a redirected connection go a moment later, once connects
        // already redirected have been established and recorded.
        let order = Dictionary(uniqueKeysWithValues: CaptureHook.attachOrder.reversed().enumerated().map { ($1, $0) })
        var redirectGone = false
        for (hook, pin) in pins.sorted(by: { order[$0.0]! < order[$1.0]! }) {
            if !hook.redirects && !redirectGone {
                redirectGone = true
                usleep(50_000)
            }
            let fd = bpf_obj_get(pin)
            if fd >= 0 {
                _ = bpf_link_detach(fd)
                close(fd)
            }
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// On cgroup v2 the cgroup id is the directory's inode number.
    public static func cgroupID(path: String) throws -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw BPFError("stat cgroup \(path)", errno: errno) }
        return UInt64(st.st_ino)
    }

    static func ensureBPFFS(under root: String) throws {
        // Walk up to an existing folder and ask what it is mounted on.
        var probe = root
        while access(probe, F_OK) != 0, probe != "/" { probe = (probe as NSString).deletingLastPathComponent }
        if weft_is_bpffs(probe) == 1 { return }
        let standard = "/sys/fs/bpf"
        guard root.hasPrefix(standard + "/") || root == standard else {
            throw BPFError("pin folder \(root) is not on bpffs", errno: EINVAL, hint: "mount one there with `mount -t bpf bpf <dir>`, or use a folder under /sys/fs/bpf")
        }
        if weft_is_bpffs(standard) != 1 {
            guard mount("bpf", standard, "bpf", 0, "mode=0700") == 0 else {
                let e = errno
                throw BPFError("mount bpffs at \(standard)", errno: e, hint: BPFError.privilegeHint(e))
            }
        }
    }
}

/// The kernel's table of established captured connections (`weft_tuple`),
/// read directly from the proxy's event loops: one lookup-and-delete per
/// accepted connection.
extension weft_mtls_key: @retroactive Hashable {
    public static func == (a: weft_mtls_key, b: weft_mtls_key) -> Bool { a.cgroup_id == b.cgroup_id && a.port == b.port }
    public func hash(into h: inout Hasher) {
        h.combine(cgroup_id)
        h.combine(port)
    }
}

public struct CapturedConnectionTable: CapturedConnectionResolver {
    let fd: Int32

    public func take(_ key: CapturedConnectionKey) -> OriginalDestination? {
        var k = weft_tuple_key()
        k.netns_cookie = key.netnsCookie
        withUnsafeMutableBytes(of: &k.src_addr) { $0.copyBytes(from: key.source.bytes) }
        withUnsafeMutableBytes(of: &k.dst_addr) { $0.copyBytes(from: key.destination.bytes) }
        k.src_port = key.sourcePort
        k.dst_port = key.destinationPort
        var v = weft_orig_dst()
        guard bpf_map_lookup_and_delete_elem(fd, &k, &v) == 0 else { return nil }
        let addr = withUnsafeBytes(of: v.addr) { Array($0) }
        return OriginalDestination(
            address: IPAddress(mapped: addr), port: v.port, socketFamily: Int32(v.family),
            pid: v.pid, cgroupID: v.cgroup_id, netnsCookie: v.netns_cookie)
    }
}

extension CaptureDataplane {
    /// Sizes of structs as the eBPF object's BTF describes them (the C side
    /// of bpf/weft_abi.h as clang compiled it for the kernel). Opens the
    /// embedded object without loading it: no privilege needed.
    public static func btfStructSizes(_ names: [String]) throws -> [String: Int] {
        guard let b64 = EmbeddedBPFObjects.base64[objectName], let elf = Data(base64Encoded: b64) else {
            throw BPFError("find embedded eBPF object \(objectName)", errno: ENOENT)
        }
        guard let obj = elf.withUnsafeBytes({ weft_bpf_open_mem($0.baseAddress, $0.count, objectName, nil) }) else {
            throw BPFError("open eBPF object \(objectName)", errno: errno)
        }
        defer { bpf_object__close(obj) }
        guard let btf = bpf_object__btf(obj) else { throw BPFError("read BTF of \(objectName)", errno: ENOENT) }
        var out: [String: Int] = [:]
        for name in names {
            let id = btf__find_by_name_kind(btf, name, UInt32(BTF_KIND_STRUCT))
            if id > 0 { out[name] = Int(btf__resolve_size(btf, UInt32(id))) }
        }
        return out
    }
}
