import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore

/// `-o`: kubectl's output formats that make sense for Weft.
enum OutputFormat: String, CaseIterable, ExpressibleByArgument {
    case json, yaml, wide, name
}

enum Output {
    /// kubectl's list envelope, which `apply -f` reads back.
    static func list(_ items: [JSONValue], revision: Int64? = nil) -> JSONValue {
        var metadata = JSONObject()
        if let revision { metadata["resourceVersion"] = .string(String(revision)) }
        return ["apiVersion": "v1", "kind": "List", "metadata": .object(metadata), "items": .array(items)]
    }

    static func print(_ value: JSONValue, as format: OutputFormat) {
        switch format {
        case .json: Swift.print(value.serialized(pretty: true))
        case .yaml: Swift.print(YAMLDocuments.yaml(value), terminator: "")
        case .name, .wide:
            for item in value["items"]?.arrayValue ?? [value] { Swift.print(name(of: item)) }
        }
    }

    /// `workload/catalog-v1`: what `get -o name` prints and `get`/`delete` accept back.
    static func name(of item: JSONValue) -> String {
        let kind = item["kind"]?.stringValue.map { ResourceKind(rawValue: $0)?.singular ?? $0.lowercased() } ?? "unknown"
        return "\(kind)/\(item["metadata"]?["name"]?.stringValue ?? "?")"
    }

    static func warn(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}

/// Validates a namespace name given on the command line.
func namespaceName(_ text: String, option: String = "--namespace") throws -> NamespaceName {
    do {
        return try NamespaceName(text, field: option)
    } catch {
        throw CLIError(error.description)
    }
}
