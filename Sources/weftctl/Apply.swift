import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

/// kubectl's `--dry-run=none|client|server`; a bare `--dry-run` means
/// `server` (see `Weftctl.rewriteArguments`), the check that also catches
/// what only the server knows (overlapping virtual IPs, stale versions).
enum DryRun: String, CaseIterable, ExpressibleByArgument {
    case none, client, server
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or update resources from YAML or JSON files.",
        discussion: """
        Every document is checked locally first (the same validation the server runs), and every \
        problem is reported as FILE: document N: field: message. The apply itself is all or nothing.

          weftctl apply -f shop.yaml
          weftctl apply -f manifests/ --dry-run
          weftctl get workloads -n shop -o yaml | weftctl apply -f -
        """)

    @OptionGroup var connection: ConnectionOptions

    @Option(name: [.customShort("f"), .customLong("filename")], help: ArgumentHelp(
        "A file, a directory of .yaml/.yml/.json files, or - for stdin; repeatable.", valueName: "file"),
        completion: .file(extensions: ["yaml", "yml", "json"]))
    var filenames: [String] = []

    @Option(name: .shortAndLong, help: "Namespace for documents that name none; documents naming another are refused.")
    var namespace: String?

    @Option(name: .customLong("dry-run"), help: ArgumentHelp(
        "none, client (check locally, send nothing) or server (the server checks, stores nothing); a bare --dry-run is server.",
        valueName: "mode"))
    var dryRun: DryRun = .none

    @Option(name: .shortAndLong, help: "Print the applied objects: json, yaml or name.")
    var output: OutputFormat?

    func validate() throws {
        if filenames.isEmpty { throw ArgumentParser.ValidationError("-f is required: a file, a directory, or - for stdin") }
        if output == .wide { throw ArgumentParser.ValidationError("-o wide is for get; apply prints json, yaml or name") }
    }

    func run() async throws {
        let ns = try namespace.map { try namespaceName($0) }
        let documents = try Files.documents(filenames)
        guard !documents.isEmpty else {
            throw CLIError("no objects passed to apply: \(filenames.joined(separator: ", ")) holds no documents")
        }
        let valid: [ManifestDocument]
        do {
            valid = try Manifest.validate(documents, namespace: ns)
        } catch {
            throw CLIError(error.description)
        }

        if dryRun == .client {
            report(valid.map(\.value), revision: nil, note: "(client dry run)", verb: { _ in "valid" })
            return
        }
        let settings = try connection.settings()
        let server = dryRun == .server
        let values = valid.map(\.value)
        let outcome: (items: [JSONValue], revision: Int64, before: [String: JSONValue])
        do {
            outcome = try await settings.withAdminClient { client in
                let before = try await Self.existing(values, client: client)
                let result = try await client.apply(values, dryRun: server)
                return (result.items, result.revision, before)
            }
        } catch let error as ControlError {
            if let problem = Manifest.locate(error, in: valid) {
                throw CLIError("\(problem)")
            }
            throw error
        }
        report(outcome.items, revision: outcome.revision, note: server ? "(server dry run)" : "", verb: { item in
            guard let old = outcome.before[Self.key(item)] else { return "created" }
            return old == item ? "unchanged" : "configured"
        })
    }

    /// `kind/namespace/name`.
    static func key(_ item: JSONValue) -> String {
        "\(item["kind"]?.stringValue ?? "")/\(item["metadata"]?["namespace"]?.stringValue ?? "")/\(item["metadata"]?["name"]?.stringValue ?? "")"
    }

    /// The stored objects the apply touches, read first (one list per kind and
    /// namespace) so that the report can say created, configured or unchanged
    /// as kubectl does: the apply answer alone cannot tell.
    static func existing(_ items: [JSONValue], client: ControlClient) async throws -> [String: JSONValue] {
        var scopes: [(ResourceKind, String?)] = []
        for item in items {
            guard let kind = item["kind"]?.stringValue.flatMap(ResourceKind.init(rawValue:)) else { continue }
            let ns = kind.isNamespaced ? item["metadata"]?["namespace"]?.stringValue : nil
            if !scopes.contains(where: { $0.0 == kind && $0.1 == ns }) { scopes.append((kind, ns)) }
        }
        var out: [String: JSONValue] = [:]
        for (kind, ns) in scopes {
            for item in try await client.list(plural: kind.plural, namespace: ns).items { out[key(item)] = item }
        }
        return out
    }

    private func report(_ items: [JSONValue], revision: Int64?, note: String, verb: (JSONValue) -> String) {
        if let output {
            Output.print(items.count == 1 ? items[0] : Output.list(items, revision: revision), as: output)
            return
        }
        for item in items {
            print("\(Output.name(of: item)) \(verb(item))\(note.isEmpty ? "" : " " + note)")
        }
    }
}
