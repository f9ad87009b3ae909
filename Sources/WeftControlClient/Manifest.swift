import WeftCore

/// One resource document of a manifest, and where it came from, so that an
/// error names the file and the document (`shop.yaml: document 2: spec.ports[0].port: …`).
public struct ManifestDocument: Sendable, Equatable {
    /// The file as the user named it; `-` reads as "stdin".
    public var source: String
    /// The position of the document in its file, from 1, counting every
    /// `---`-separated document (empty ones too), as an editor would.
    public var number: Int
    /// Set for a document that came out of a `kind: List`: its place in the list
    /// (`items[3]`), which prefixes field paths in errors.
    public var listPath: String?
    public var value: JSONValue

    public init(source: String, number: Int, listPath: String? = nil, value: JSONValue) {
        self.source = source
        self.number = number
        self.listPath = listPath
        self.value = value
    }

    /// `shop.yaml: document 2` (`stdin: document 1` for `-`).
    public var location: String {
        "\(source == "-" ? "stdin" : source): document \(number)"
    }

    /// A field path inside this document, with the list prefix when there is one.
    public func path(_ field: String) -> String {
        guard let listPath else { return field }
        return field.isEmpty ? listPath : "\(listPath).\(field)"
    }

    /// `kind/name` as kubectl prints it (`workload/catalog-v1`), from the raw
    /// document; `?` for parts that are missing.
    public var displayName: String {
        let kind = value["kind"]?.stringValue.map { ResourceKind(rawValue: $0)?.singular ?? $0.lowercased() } ?? "?"
        return "\(kind)/\(value["metadata"]?["name"]?.stringValue ?? "?")"
    }
}

/// A problem found in a manifest, located.
public struct ManifestProblem: Sendable, Equatable, CustomStringConvertible {
    public var location: String
    public var field: String?
    public var message: String

    public init(location: String, field: String?, message: String) {
        self.location = location
        self.field = field
        self.message = message
    }

    /// `FILE: document N: field: message`.
    public var description: String {
        [location, field, message].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ": ")
    }
}

/// Every problem of a manifest, one per line.
public struct ManifestError: Error, Sendable, CustomStringConvertible {
    public var problems: [ManifestProblem]
    public init(_ problems: [ManifestProblem]) { self.problems = problems }
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

public enum Manifest {
    /// Checks documents the way the server will, before anything is sent, and
    /// returns them ready to send (`metadata.namespace` filled in from
    /// `namespace` where a namespaced document has none).
    ///
    /// Every document is checked and every problem reported, not just the
    /// first: fixing a manifest one error per run is slow. Also refused: a
    /// document whose namespace differs from `namespace` (as kubectl does:
    /// `-n` must not silently lose), and the same object twice.
    public static func validate(_ documents: [ManifestDocument], namespace: NamespaceName? = nil) throws(ManifestError) -> [ManifestDocument] {
        var problems: [ManifestProblem] = []
        var out: [ManifestDocument] = []
        var seen: [String: ManifestDocument] = [:]
        for var doc in documents {
            func problem(_ field: String?, _ message: String) {
                problems.append(ManifestProblem(location: doc.location, field: field.map { doc.path($0) }, message: message))
            }
            let resource: Resource
            do {
                resource = try ResourceDocument.decode(doc.value, defaultNamespace: namespace)
            } catch {
                problem(error.field, error.message)
                continue
            }
            if let namespace, resource.kind.isNamespaced, let own = resource.metadata.namespace, own != namespace {
                problem("metadata.namespace", "\"\(own)\" does not match --namespace \"\(namespace)\"; drop -n or make them agree")
                continue
            }
            if resource.kind.isNamespaced, doc.value["metadata"]?["namespace"]?.stringValue == nil,
               let ns = resource.metadata.namespace, case .object(var object) = doc.value,
               case .object(var metadata)? = object["metadata"] {
                metadata["namespace"] = .string(ns.rawValue)
                object["metadata"] = .object(metadata)
                doc.value = .object(object)
            }
            let key = "\(resource.kind.plural)/\(resource.metadata.namespace?.rawValue ?? "")/\(resource.metadata.name)"
            if let first = seen[key] {
                let scope = resource.metadata.namespace.map { " in namespace \($0)" } ?? ""
                problem("metadata.name", "\(resource.kind.rawValue) \"\(resource.metadata.name)\"\(scope) is also \(first.location)\(first.listPath.map { " \($0)" } ?? ""); an apply holds each object once")
                continue
            }
            seen[key] = doc
            out.append(doc)
        }
        if !problems.isEmpty { throw ManifestError(problems) }
        return out
    }

    /// Expands `kind: List` documents (what `weftctl get -o yaml` prints for
    /// several objects) into their items, so that output can be applied back.
    public static func expandLists(_ documents: [ManifestDocument]) throws(ManifestError) -> [ManifestDocument] {
        var out: [ManifestDocument] = []
        var problems: [ManifestProblem] = []
        for doc in documents {
            guard doc.value["kind"]?.stringValue == "List", doc.value["apiVersion"]?.stringValue == "v1" else {
                out.append(doc)
                continue
            }
            guard let items = doc.value["items"]?.arrayValue else {
                problems.append(ManifestProblem(location: doc.location, field: "items", message: "a List needs an items list"))
                continue
            }
            for (i, item) in items.enumerated() {
                out.append(ManifestDocument(source: doc.source, number: doc.number, listPath: "items[\(i)]", value: item))
            }
        }
        if !problems.isEmpty { throw ManifestError(problems) }
        return out
    }

    /// The server's complaint about document `error.document` of an apply of
    /// `documents`, located in the user's file.
    public static func locate(_ error: ControlError, in documents: [ManifestDocument]) -> ManifestProblem? {
        guard let index = error.document, documents.indices.contains(index) else { return nil }
        let doc = documents[index]
        var message = error.message
        if let hint = error.hint { message += " — \(hint)" }
        return ManifestProblem(location: doc.location, field: error.field.map { doc.path($0) }, message: message)
    }
}
