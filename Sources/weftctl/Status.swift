import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the mesh as weft-control sees it: nodes, and whether each workload is captured.")

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .shortAndLong, help: "json or yaml: the server's report as is.")
    var output: OutputFormat?

    func validate() throws {
        if let output, output != .json, output != .yaml { throw ArgumentParser.ValidationError("-o takes json or yaml here") }
    }

    func run() async throws {
        let settings = try connection.settings()
        let report = try await settings.withAdminClient { client in try await client.status() }
        if let output {
            Output.print(report, as: output)
            return
        }
        print(StatusReport.render(report), terminator: "")
    }
}
