// weftctl: the operator's command line, with kubectl's and istioctl's habits
// (apply -f, get -o yaml|json|wide, delete, status, version, completion).
// It talks to weft-control through WeftControlClient, and to a node's weftd
// admin endpoint for `capture`.
import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import WeftControlClient

@main
struct Weftctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weftctl",
        abstract: "Operate a Weft mesh.",
        discussion: """
        weft-control is found through --server, --ca-file and --token-file, or the environment \
        (WEFT_SERVER, WEFT_CA_FILE, WEFT_TOKEN_FILE), or ~/.weft/config; on the node that runs \
        weft-control the defaults work as root.
        """,
        version: ControlClient.version,
        subcommands: [Apply.self, Get.self, Delete.self, NamespaceCommand.self, NodeCommand.self, Status.self,
                      Capture.self, Check.self, Version.self, Completion.self])

    /// Also accepted before the subcommand (`weftctl --server URL get ns`), as
    /// kubectl's global flags are; the subcommand sees the same values.
    @OptionGroup(visibility: .hidden) var connection: ConnectionOptions

    /// Parses, runs, and turns every failure into a message and an exit code:
    /// usage errors exit 64 with ArgumentParser's text, everything else 1
    /// with `error: …` on stderr — never a backtrace.
    static func main() async {
        let arguments = rewriteArguments(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let error as CLIError {
            if !error.description.isEmpty { Output.warn("error: \(error.description)") }
            Foundation.exit(error.exitCode)
        } catch let error as ControlError {
            if error.kind == .rejected, let code = error.code {
                Output.warn("error from server (\(code)): \(error)")
            } else {
                Output.warn("error: \(error)")
            }
            Foundation.exit(1)
        } catch {
            exit(withError: error)
        }
    }

    /// kubectl accepts a bare `--dry-run`; ArgumentParser options need a
    /// value, so the bare form is rewritten to `--dry-run=server` before parsing.
    static func rewriteArguments(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var passThrough = false
        for argument in arguments {
            if argument == "--" { passThrough = true }
            out.append(!passThrough && argument == "--dry-run" ? "--dry-run=server" : argument)
        }
        return out
    }
}

struct Capture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a node's capture state: per workload, whether the kernel runs Weft's programs on it.")

    @Option(help: "weftd's admin address.")
    var admin: String = "127.0.0.1:15021"

    @Flag(help: "Print the raw JSON.")
    var json = false

    func run() async throws {
        guard let url = URL(string: "http://\(admin)/debug/capture") else {
            throw ValidationError("--admin: \"\(admin)\" is not host:port")
        }
        let data: Data
        do {
            (data, _) = try await URLSession.shared.data(from: url)
        } catch {
            throw ValidationError("cannot reach weftd at \(admin): \(error.localizedDescription) (is weftd running, and is --admin its admin.address?)")
        }
        if json {
            print(String(decoding: data, as: UTF8.self), terminator: "")
            return
        }
        guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ValidationError("weftd at \(admin) answered something that is not its capture report")
        }
        print("node \(obj["node"] ?? "?")  ready \(obj["ready"] ?? "?")  config generation \(obj["configGeneration"] ?? "?")  repairs \(obj["repairs"] ?? "?")")
        print("")
        let rows = (obj["workloads"] as? [[String: Any]] ?? []).map { w -> [String] in
            ["\(w["namespace"] ?? "")", "\(w["name"] ?? "")", (w["captured"] as? Bool ?? false) ? "yes" : "NO",
             "\((w["hooks"] as? [Any])?.count ?? 0)/\(w["hooksExpected"] as? Int ?? 0)", "\(w["netns"] ?? "")", "\(w["connections"] ?? 0)",
             "\(w["lastRepair"] as? String ?? "-")"]
        }
        table(header: ["NAMESPACE", "WORKLOAD", "CAPTURED", "HOOKS", "NETNS", "CONNECTIONS", "LAST REPAIR"], rows: rows)
    }

    private func table(header: [String], rows: [[String]]) {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
        for r in all {
            print(r.enumerated().map { i, c in c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
    }
}
