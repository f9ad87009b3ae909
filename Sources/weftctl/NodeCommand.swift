import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Bring nodes into the mesh.",
        subcommands: [Token.self])

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bootstrap tokens, with which weftd joins a node.",
            subcommands: [Create.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Create a one-use bootstrap token and print it (only the token, for scripts).",
                discussion: """
                  weftctl node token create --ttl 1h > /etc/weft/join.token   # on the node, 0600
                  # weftd.yaml: control: {server: https://CONTROL:15443, caFile: …, tokenFile: /etc/weft/join.token}
                """)

            @OptionGroup var connection: ConnectionOptions

            @Option(help: ArgumentHelp("How long the token stays valid (30m, 1h, 24h; default: the server's).", valueName: "duration"))
            var ttl: String?

            @Option(name: .shortAndLong, help: "json: print the token and its expiry as JSON.")
            var output: OutputFormat?

            func validate() throws {
                if let ttl { _ = try Durations.parse(ttl, option: "--ttl") }
                if let output, output != .json { throw ArgumentParser.ValidationError("-o takes json here") }
            }

            func run() async throws {
                let seconds = try ttl.map { Int(try Durations.parse($0, option: "--ttl").components.seconds) }
                let settings = try connection.settings()
                let (token, expiresAt) = try await settings.withAdminClient { client in
                    try await client.createToken(ttlSeconds: seconds)
                }
                if output == .json {
                    print(JSONValue.object(["token": .string(token), "expiresAt": .string(expiresAt)]).serialized(pretty: true))
                } else {
                    print(token)
                }
            }
        }
    }
}
