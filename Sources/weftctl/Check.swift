import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore
#if canImport(Glibc)
import Glibc
#endif

/// `weftctl check`: the pre-flight of a node, as `istioctl x precheck` and
/// `cilium status` do, naming the remedy of each failure.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that this node can run weftd: kernel, BTF, cgroup v2, bpffs, capabilities, libbpf.")

    @Option(name: .shortAndLong, help: "json: the checks as a list.")
    var output: OutputFormat?

    func validate() throws {
        if let output, output != .json { throw ArgumentParser.ValidationError("-o takes json here") }
    }

    func run() throws {
        let checks = Preflight.evaluate(Self.facts())
        if output == .json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(checks), as: UTF8.self))
        } else {
            var table = TextTable(header: ["CHECK", "STATUS", "DETAIL"])
            for c in checks { table.rows.append([c.name, c.status.rawValue, c.detail]) }
            print(table.render(), terminator: "")
            for c in checks where c.status != .ok {
                if let remedy = c.remedy { print("\(c.name): \(remedy)") }
            }
        }
        if checks.contains(where: { $0.status == .failed }) {
            throw CLIError("", exitCode: 1)
        }
    }

    static func facts() -> Preflight.Facts {
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: &uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let capEff = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }
            .map { String($0.dropFirst("CapEff:".count)) } ?? "0"
        let handle = dlopen("libbpf.so.1", RTLD_NOW)
        if let handle { dlclose(handle) }
        return Preflight.Facts(
            kernelRelease: release,
            btf: FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux"),
            mountinfo: (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "",
            effectiveCapabilities: capEff,
            libbpf: handle != nil)
    }
}
