import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print weftctl's version, and whether weft-control answers.")

    @OptionGroup var connection: ConnectionOptions

    @Flag(help: "Only the client version; do not contact the server.")
    var client = false

    func run() async throws {
        print("Client Version: weftctl \(ControlClient.version)")
        if client { return }
        let settings = try connection.settings()
        let endpoint: ControlEndpoint
        do {
            endpoint = try settings.endpoint()
        } catch let error as CLIError {
            print("Server: \(settings.server) not checked")
            throw error
        }
        // /healthz needs no token, so a missing token file does not hide whether the server is up.
        do {
            let body = try await ControlClient.withClient(endpoint: endpoint, credentials: .none, timeout: settings.timeout) { c in
                try await c.health()
            }
            var line = "Server: \(endpoint.url) reachable"
            if let health = try? JSONValue.parse(body) {
                if let version = health["version"]?.stringValue { line += ", weft-control \(version)" }
                if let status = health["status"]?.stringValue { line += " (\(status))" }
            } else if !body.isEmpty, body.count < 80 {
                line += " (\(body.trimmingCharacters(in: .whitespacesAndNewlines)))"
            }
            print(line)
        } catch let error as ControlError {
            print("Server: \(endpoint.url) not reachable")
            throw error
        }
    }
}

struct Completion: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a shell completion script.",
        discussion: """
          source <(weftctl completion bash)
          weftctl completion zsh > "${fpath[1]}/_weftctl"
          weftctl completion fish > ~/.config/fish/completions/weftctl.fish
        """)

    enum Shell: String, CaseIterable, ExpressibleByArgument { case bash, zsh, fish }

    @Argument(help: "bash, zsh or fish.") var shell: Shell

    func run() throws {
        let kind: CompletionShell = switch shell {
        case .bash: .bash
        case .zsh: .zsh
        case .fish: .fish
        }
        print(Weftctl.completionScript(for: kind))
    }
}
