import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

@main
struct Weftctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weftctl",
        abstract: "Operate a Weft mesh.",
        subcommands: [Capture.self])
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
             "\((w["hooks"] as? [Any])?.count ?? 0)/5", "\(w["netns"] ?? "")", "\(w["connections"] ?? 0)",
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
