import WeftCore
import WeftStore

// How user resources and the server's own records live in the store.
//
// User resources are stored under their kind name (`Workload`), namespace ("" for
// Namespaces) and name; the body is the resource's document without
// `resourceVersion` and `generation`, which the store keeps in its own columns and
// which are filled in on the way out (so they can never disagree).
//
// The server's own records use kinds starting with `_` (`_BootstrapToken`,
// `_Node`): no plural maps to them, so they are never listed, read or deleted
// through /v1/{plural}, and a change to them does not move snapshot versions.

extension ResourceKind {
    static var apiPlurals: String { allCases.map(\.plural).joined(separator: ", ") }
}

enum InternalKind {
    static let bootstrapToken = "_BootstrapToken"
    static let node = "_Node"
    /// `_VirtualIP/<address>`: the Service holding a virtual IP. Created with
    /// compare-and-swap in the same commit as the Service, so two replicas
    /// allocating the same address at once cannot both succeed.
    static let virtualIP = "_VirtualIP"
    /// `_MeshCA/root`: the CA certificate (never the key) the replicas sharing
    /// a store sign with; a replica with another CA refuses to start.
    static let meshCA = "_MeshCA"

    /// Whether a store kind is one of the server's own records rather than a user resource.
    static func isInternal(_ kind: String) -> Bool { kind.hasPrefix("_") }
}

extension Resource {
    var storeKey: ResourceKey {
        ResourceKey(kind: kind.rawValue, namespace: metadata.namespace?.rawValue ?? "", name: metadata.name)
    }

    /// The stored body: the document without the fields the store owns.
    var storedBody: String {
        var copy = self
        copy.metadata.resourceVersion = nil
        copy.metadata.generation = nil
        return copy.encode().serialized()
    }
}

extension StoredResource {
    /// The resource as clients see it: the stored document with `resourceVersion`
    /// (a string, as in Kubernetes) and `generation` filled in.
    func decodedResource() throws(APIError) -> Resource {
        var resource: Resource
        do {
            resource = try ResourceDocument.decode(JSONValue.parse(body))
        } catch {
            // Only possible if the stored form and today's validation disagree
            // (a rule tightened after the object was stored); say which object.
            throw APIError(.internal, "the stored \(key) no longer reads as a valid resource (\(error.field): \(error.message)); delete it and apply it again")
        }
        resource.metadata.resourceVersion = String(resourceVersion)
        resource.metadata.generation = generation
        return resource
    }
}
