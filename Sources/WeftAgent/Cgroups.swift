import Foundation
import Glibc
import WeftCore

/// cgroup v2 facts read from the filesystem.
public enum Cgroups {
    /// The cgroup2 mount point, from /proc/self/mountinfo. On a hybrid host
    /// it is not /sys/fs/cgroup (often /sys/fs/cgroup/unified), so it is
    /// always looked up, never assumed.
    public static func cgroup2Mount(mountinfo: String? = nil) -> String? {
        let text = mountinfo ?? (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return MountInfo.mounts(text).first { $0.type == "cgroup2" }?.point
    }

    /// This process's own cgroup v2 id (from /proc/self/cgroup, the `0::`
    /// line, resolved under the cgroup2 mount); nil when it cannot be told.
    public static func ownID(mount: String? = cgroup2Mount()) -> UInt64? {
        ownPath(mount: mount).flatMap(id)
    }

    /// This process's cgroup v2 folder; nil when unknown.
    public static func ownPath(mount: String? = cgroup2Mount()) -> String? {
        guard let mount, let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else { return nil }
        let rel = String(line.dropFirst(3))
        return rel == "/" ? mount : mount + rel
    }

    public static func exists(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
    }

    public static func id(_ path: String) -> UInt64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return UInt64(st.st_ino)
    }

    /// Immediate child cgroups (folders) of `path`. Read with readdir's file
    /// types: a cgroup folder holds dozens of control files, and the agent
    /// walks the tree every reconcile, so one `stat` per file (what a
    /// Foundation listing and an existence check cost) added up.
    public static func children(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let type = entry.pointee.d_type
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            switch Int32(type) {
            case Int32(DT_DIR): out.append(name)
            case Int32(DT_UNKNOWN): if exists("\(path)/\(name)") { out.append(name) }
            default: continue
            }
        }
        return out.sorted()
    }

    /// `path` and every cgroup below it.
    public static func subtree(_ path: String) -> [String] {
        var out = [path]
        for c in children(path) { out += subtree("\(path)/\(c)") }
        return out
    }

    public static func pids(_ path: String) -> [Int32] {
        guard let text = try? String(contentsOfFile: "\(path)/cgroup.procs", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// mkdir -p, as systemd would make a slice's cgroup.
    public static func create(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
}
