import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete resources by name, or those a file describes.",
        discussion: """
          weftctl delete workload catalog-v1 -n shop
          weftctl delete svc/catalog route/catalog -n shop
          weftctl delete -f shop.yaml

        With -f, objects are deleted in reverse file order, so that what refers to something \
        (a route, a policy) goes before what it refers to (a service, a namespace).
        """)

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: ArgumentHelp("KIND NAME… or KIND/NAME….", valueName: "resource"),
              completion: .list(ResourceKind.allCases.map(\.plural)))
    var resources: [String] = []

    @Option(name: [.customShort("f"), .customLong("filename")], help: ArgumentHelp(
        "Delete the objects this file, directory or - (stdin) describes; repeatable.", valueName: "file"),
        completion: .file(extensions: ["yaml", "yml", "json"]))
    var filenames: [String] = []

    @Option(name: .shortAndLong, help: "The namespace (default: \"default\", or namespace in the config file).")
    var namespace: String?

    @Flag(name: .customLong("ignore-not-found"), help: "Succeed for objects that do not exist.")
    var ignoreNotFound = false

    func validate() throws {
        if filenames.isEmpty, resources.isEmpty {
            throw ArgumentParser.ValidationError("name what to delete: KIND NAME…, KIND/NAME…, or -f FILE")
        }
        if !filenames.isEmpty, !resources.isEmpty {
            throw ArgumentParser.ValidationError("use either -f or KIND NAME, not both")
        }
    }

    struct Target: Sendable {
        var kind: ResourceKind
        var name: String
        var namespace: String?
        var location: String?
    }

    func run() async throws {
        let settings = try connection.settings()
        let flagNamespace = try namespace.map { try namespaceName($0).rawValue }
        var targets: [Target] = []
        if filenames.isEmpty {
            let ns = flagNamespace ?? settings.namespace
            for selection in try ResourceSelection.parse(resources) {
                guard !selection.names.isEmpty else {
                    throw ArgumentParser.ValidationError("name the \(selection.kind.plural) to delete; weftctl does not delete every object of a type")
                }
                for name in selection.names {
                    targets.append(Target(kind: selection.kind, name: name, namespace: selection.kind.isNamespaced ? ns : nil))
                }
            }
        } else {
            targets = try Self.targets(from: Files.documents(filenames), namespace: flagNamespace).reversed()
        }

        let ignoreNotFound = self.ignoreNotFound
        let failures = try await settings.withAdminClient { client in
            var failures: [String] = []
            for target in targets {
                do {
                    try await client.delete(plural: target.kind.plural, name: target.name, namespace: target.namespace)
                    let scope = target.namespace.map { " from namespace \($0)" } ?? ""
                    print("\(target.kind.singular) \"\(target.name)\" deleted\(scope)")
                } catch let error as ControlError where error.isNotFound && ignoreNotFound {
                    continue
                } catch let error as ControlError where error.kind == .rejected {
                    // One missing or protected object does not stop the others, as in kubectl.
                    failures.append((target.location.map { "\($0): " } ?? "") + error.description)
                }
            }
            return failures
        }
        for failure in failures { Output.warn("error: \(failure)") }
        if !failures.isEmpty { throw CLIError("", exitCode: 1) }
    }

    /// Kind, name and namespace of each document. Only those are checked: a
    /// file whose specs no longer validate (after an upgrade) must still be deletable.
    static func targets(from documents: [ManifestDocument], namespace: String?) throws -> [Target] {
        var out: [Target] = []
        var problems: [ManifestProblem] = []
        for doc in documents {
            func problem(_ field: String, _ message: String) {
                problems.append(ManifestProblem(location: doc.location, field: doc.path(field), message: message))
            }
            guard let kindName = doc.value["kind"]?.stringValue else { problem("kind", "is required"); continue }
            guard let kind = ResourceKind(rawValue: kindName) else {
                problem("kind", "\"\(kindName)\" is not a Weft kind (kinds: \(ResourceKind.allCases.map(\.rawValue).joined(separator: ", ")))")
                continue
            }
            guard let name = doc.value["metadata"]?["name"]?.stringValue, !name.isEmpty else {
                problem("metadata.name", "is required")
                continue
            }
            var ns: String?
            if kind.isNamespaced {
                ns = doc.value["metadata"]?["namespace"]?.stringValue ?? namespace
                if ns == nil { problem("metadata.namespace", "is required: a \(kind.rawValue) lives in a namespace (or pass -n)"); continue }
                if let namespace, let ns, ns != namespace {
                    problem("metadata.namespace", "\"\(ns)\" does not match --namespace \"\(namespace)\"")
                    continue
                }
            }
            out.append(Target(kind: kind, name: name, namespace: ns, location: doc.location))
        }
        if !problems.isEmpty { throw CLIError(ManifestError(problems).description) }
        if out.isEmpty { throw CLIError("no objects passed to delete") }
        return out
    }
}
