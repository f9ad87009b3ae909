import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

/// What `get`/`delete` positionals ask for: kubectl's `KIND [NAME…]`,
/// `KIND/NAME…` and `KIND,KIND`.
struct ResourceSelection: Equatable {
    var kind: ResourceKind
    /// Empty: every object of the kind.
    var names: [String]

    static func parse(_ arguments: [String]) throws -> [ResourceSelection] {
        guard let first = arguments.first else {
            throw ArgumentParser.ValidationError("name a resource type: \(ResourceKind.kindList)")
        }
        if first.contains("/") {
            var out: [ResourceSelection] = []
            for argument in arguments {
                let parts = argument.split(separator: "/", maxSplits: 1).map(String.init)
                guard parts.count == 2, !parts[1].isEmpty else {
                    throw ArgumentParser.ValidationError("\"\(argument)\": write KIND/NAME for every argument once one is written that way")
                }
                let kind = try ResourceKind.resolve(parts[0])
                if let i = out.firstIndex(where: { $0.kind == kind }) { out[i].names.append(parts[1]) }
                else { out.append(ResourceSelection(kind: kind, names: [parts[1]])) }
            }
            return out
        }
        var kinds: [ResourceKind] = []
        for part in first.split(separator: ",") {
            // kubectl's `all`: every namespaced type.
            let named = part.lowercased() == "all" ? ResourceKind.allCases.filter(\.isNamespaced) : [try ResourceKind.resolve(String(part))]
            for kind in named where !kinds.contains(kind) { kinds.append(kind) }
        }
        let names = Array(arguments.dropFirst())
        if kinds.count > 1, !names.isEmpty {
            throw ArgumentParser.ValidationError("names go with one resource type; use KIND/NAME to name objects of several")
        }
        if let slashed = names.first(where: { $0.contains("/") }) {
            throw ArgumentParser.ValidationError("\"\(slashed)\": a name has no '/'; write either KIND NAME… or KIND/NAME…")
        }
        return kinds.map { ResourceSelection(kind: $0, names: names) }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List resources, or show some by name.",
        discussion: """
        Types: \(ResourceKind.kindList).

          weftctl get workloads -n shop
          weftctl get svc -A -o wide
          weftctl get route/catalog -n shop -o yaml
        """)

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: ArgumentHelp("KIND [NAME…], KIND/NAME…, KIND,KIND, or all.", valueName: "resource"),
              completion: .list(ResourceKind.allCases.map(\.plural)))
    var resources: [String] = []

    @Option(name: .shortAndLong, help: "The namespace (default: \"default\", or namespace in the config file).")
    var namespace: String?

    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "Every namespace.")
    var allNamespaces = false

    @Option(name: .shortAndLong, help: "json, yaml, wide or name (default: a table).")
    var output: OutputFormat?

    func run() async throws {
        let selections = try ResourceSelection.parse(resources)
        if allNamespaces, namespace != nil { throw ArgumentParser.ValidationError("-A and -n exclude each other") }
        if allNamespaces, selections.contains(where: { !$0.names.isEmpty }) {
            throw ArgumentParser.ValidationError("a resource cannot be retrieved by name across all namespaces; use -n")
        }
        let settings = try connection.settings()
        let ns = try namespaceName(namespace ?? settings.namespace).rawValue
        let output = self.output
        let allNamespaces = self.allNamespaces

        let fetched = try await settings.withAdminClient { client in
            var results: [(kind: ResourceKind, items: [JSONValue], revision: Int64?)] = []
            var missing: [String] = []
            for selection in selections {
                let scope = selection.kind.isNamespaced && !allNamespaces ? ns : nil
                if selection.names.isEmpty {
                    let (items, revision) = try await client.list(plural: selection.kind.plural, namespace: scope)
                    results.append((selection.kind, sorted(items), revision))
                    continue
                }
                var items: [JSONValue] = []
                for name in selection.names {
                    do {
                        items.append(try await client.get(plural: selection.kind.plural, name: name, namespace: scope))
                    } catch let error as ControlError where error.isNotFound {
                        missing.append(error.description)
                    }
                }
                results.append((selection.kind, items, nil))
            }
            return Fetched(results: results, missing: missing)
        }

        let all = fetched.results.flatMap(\.items)
        switch output {
        case .json?, .yaml?:
            let singleName = selections.count == 1 && selections[0].names.count == 1
            if singleName, let only = all.first {
                Output.print(only, as: output!)
            } else if !(singleName && all.isEmpty) {
                Output.print(Output.list(all, revision: fetched.results.count == 1 ? fetched.results[0].revision : nil), as: output!)
            }
        case .name?:
            for item in all { print(Output.name(of: item)) }
        case .wide?, nil:
            var first = true
            for result in fetched.results where !result.items.isEmpty {
                if !first { print("") }
                first = false
                print(ResourceTable.render(kind: result.kind, items: result.items, showNamespace: allNamespaces,
                                           wide: output == .wide, qualifyNames: fetched.results.count > 1), terminator: "")
            }
            if all.isEmpty, fetched.missing.isEmpty {
                let anyNamespaced = selections.contains { $0.kind.isNamespaced }
                Output.warn(allNamespaces || !anyNamespaced ? "No resources found" : "No resources found in \(ns) namespace.")
            }
        }
        for message in fetched.missing { Output.warn("error: \(message)") }
        if !fetched.missing.isEmpty { throw CLIError("", exitCode: 1) }
    }

    struct Fetched: Sendable {
        var results: [(kind: ResourceKind, items: [JSONValue], revision: Int64?)]
        var missing: [String]
    }
}

/// By namespace, then name: the order people scan a listing in.
func sorted(_ items: [JSONValue]) -> [JSONValue] {
    items.sorted {
        let a = ($0["metadata"]?["namespace"]?.stringValue ?? "", $0["metadata"]?["name"]?.stringValue ?? "")
        let b = ($1["metadata"]?["namespace"]?.stringValue ?? "", $1["metadata"]?["name"]?.stringValue ?? "")
        return a < b
    }
}
