import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

struct NamespaceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "namespace",
        abstract: "Put a namespace's workloads in the mesh, or take them out.",
        subcommands: [Enable.self, Disable.self],
        aliases: ["ns"])

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Capture the namespace's workloads (creates the Namespace if needed).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The namespace.") var name: String
        func run() async throws { try await setMesh(name: name, enabled: true, connection: connection) }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop capturing the namespace's workloads (its resources stay).")
        @OptionGroup var connection: ConnectionOptions
        @Argument(help: "The namespace.") var name: String
        func run() async throws { try await setMesh(name: name, enabled: false, connection: connection) }
    }

    /// Reads the Namespace and writes it back with `spec.mesh.enabled` set,
    /// keeping its labels and annotations; its resourceVersion makes a
    /// concurrent change fail (409) instead of being overwritten.
    static func setMesh(name: String, enabled: Bool, connection: ConnectionOptions) async throws {
        let ns = try namespaceName(name, option: "namespace")
        let settings = try connection.settings()
        let word = enabled ? "enabled" : "disabled"
        let message = try await settings.withAdminClient { client -> String in
            var document: JSONValue
            do {
                document = try await client.get(plural: ResourceKind.namespace.plural, name: ns.rawValue)
            } catch let error as ControlError where error.isNotFound {
                document = ["apiVersion": .string(ResourceKind.weftAPIVersion), "kind": "Namespace",
                            "metadata": ["name": .string(ns.rawValue)]]
            }
            if document["spec"]?["mesh"]?["enabled"] == .bool(enabled) {
                return "namespace/\(ns) mesh already \(word)"
            }
            guard case .object(var object) = document else { throw CLIError("weft-control returned a Namespace that is not an object") }
            var spec = object["spec"]?.objectValue ?? JSONObject()
            var mesh = spec["mesh"]?.objectValue ?? JSONObject()
            mesh["enabled"] = .bool(enabled)
            spec["mesh"] = .object(mesh)
            object["spec"] = .object(spec)
            object["status"] = nil
            _ = try await client.apply([.object(object)])
            return "namespace/\(ns) mesh \(word)"
        }
        print(message)
    }
}
