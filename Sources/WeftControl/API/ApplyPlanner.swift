import WeftCore
import WeftStore

/// Turns the documents of one `POST /v1/apply` into store writes, or refuses the
/// whole apply: every check runs before anything is written, so a multi-document
/// apply is all or nothing.
///
/// Pure: the store state it depends on is handed in (``Existing``), so every rule
/// is table-tested without a server.
///
/// Decisions (also in docs/control-api.md):
/// - A namespaced resource needs its Namespace, in the store or in the same apply.
/// - An HTTPRoute may name Services (parentRefs, backendRefs) that do not exist yet,
///   as in Kubernetes: manifests are applied in any order, and the route takes
///   effect when the Service appears.
/// - `metadata.resourceVersion` in a document means "must still be at that
///   version" (409 otherwise); `generation`, `uid`, `creationTimestamp` and `status`
///   are the server's and are replaced, so `get -o json | apply` works.
/// - A Service without `spec.virtualIP` keeps the one it has, or gets the lowest
///   free address of the service CIDR; an explicit one must be inside the CIDR
///   (unless it is the address the Service already has) and used by no other Service.
/// - A document identical to what is stored is left alone (no new revision), so
///   re-applying a manifest does not wake every agent.
struct ApplyPlanner {
    /// The store state the plan depends on.
    struct Existing {
        /// Stored resources under the keys the apply touches (absent: new).
        var byKey: [ResourceKey: StoredResource] = [:]
        /// Names of stored Namespaces.
        var namespaces: Set<String> = []
        /// Every stored Service (for virtual IP checks).
        var services: [StoredResource] = []
    }

    struct Write {
        /// The document's index in the apply.
        var index: Int
        var key: ResourceKey
        /// The resource as it will be stored, server fields filled in except
        /// `resourceVersion` and `generation`, which the commit decides.
        var resource: Resource
        var body: String
        /// For the store's compare-and-swap: 0 means "must not exist yet".
        var expectedVersion: Int64
        var bumpGeneration: Bool
        /// Identical to the stored document: nothing to write.
        var unchanged: Bool
        var existing: StoredResource?
    }

    let allocator: VirtualIPAllocator
    /// RFC 3339, for `creationTimestamp` of new resources.
    let now: String
    let makeUID: @Sendable () -> String

    /// The documents of an apply body: `{"items": [...]}`.
    static func items(of body: [UInt8]) throws(APIError) -> [JSONValue] {
        let value = try parseJSON(body)
        guard case .object(let object) = value else {
            throw APIError(.badRequest, "the apply body must be an object {\"items\": [resource, …]}, found \(jsonKind(value))")
        }
        if let extra = object.keys.first(where: { $0 != "items" }) {
            throw APIError(.badRequest, "unknown field (allowed: items); the body is {\"items\": [resource, …]}", field: extra)
        }
        guard case .array(let items)? = object["items"] else {
            throw APIError(.badRequest, "is required: a list of resources, {\"items\": [resource, …]}", field: "items")
        }
        return items
    }

    /// The keys an apply touches, so the caller can load what exists under them.
    /// Documents that do not decode are skipped here; ``plan(_:existing:)`` reports them.
    static func keys(of items: [JSONValue]) -> [ResourceKey] {
        items.compactMap { try? ResourceDocument.decode($0).storeKey }
    }

    func plan(_ items: [JSONValue], existing: Existing) throws(APIError) -> [Write] {
        // 1. Each document on its own.
        var resources: [Resource] = []
        var indexOfKey: [ResourceKey: Int] = [:]
        for (i, item) in items.enumerated() {
            let resource: Resource
            do {
                resource = try ResourceDocument.decode(item)
            } catch {
                throw APIError.invalid(error, document: i)
            }
            let key = resource.storeKey
            if let first = indexOfKey[key] {
                throw APIError(.invalid, "\(Self.describe(key)) is also document \(first); an object may appear once per apply", field: "metadata.name", document: i)
            }
            indexOfKey[key] = i
            resources.append(resource)
        }

        // 2. Namespaces must exist, here or in the store.
        let appliedNamespaces = Set(resources.filter { $0.kind == .namespace }.map(\.metadata.name))
        for (i, r) in resources.enumerated() {
            guard let ns = r.metadata.namespace?.rawValue else { continue }
            if !existing.namespaces.contains(ns), !appliedNamespaces.contains(ns) {
                throw APIError(.invalid, "namespace \"\(ns)\" does not exist; apply a Namespace named \(ns) first (it may be in the same apply)", field: "metadata.namespace", document: i)
            }
        }

        // 3. Optimistic concurrency, and what is stored now.
        var stored: [Resource?] = []
        var expected: [Int64] = []
        for (i, r) in resources.enumerated() {
            let key = r.storeKey
            let current = existing.byKey[key]
            if let wanted = r.metadata.resourceVersion {
                guard let version = Int64(wanted) else {
                    throw APIError(.conflict, "\"\(wanted)\" is not a resourceVersion this server wrote; drop metadata.resourceVersion or fetch the object again", field: "metadata.resourceVersion", document: i)
                }
                guard let current else {
                    throw APIError(.conflict, "\(Self.describe(key)) does not exist, but the document expects it at resourceVersion \(version); drop metadata.resourceVersion to create it", field: "metadata.resourceVersion", document: i)
                }
                guard current.resourceVersion == version else {
                    throw APIError(.conflict, "\(Self.describe(key)) is at resourceVersion \(current.resourceVersion), not \(version): it was changed by someone else; fetch it again and reapply your change", field: "metadata.resourceVersion", document: i)
                }
                expected.append(version)
            } else {
                expected.append(current?.resourceVersion ?? 0)
            }
            stored.append(try current.map { s throws(APIError) in try s.decodedResource() })
        }

        // 4. Virtual IPs.
        try assignVirtualIPs(&resources, stored: stored, existing: existing, applied: Set(indexOfKey.keys))

        // 5. Server fields, and what actually changes.
        var writes: [Write] = []
        for (i, var r) in resources.enumerated() {
            let old = stored[i]
            r.metadata.uid = old?.metadata.uid ?? makeUID()
            r.metadata.creationTimestamp = old?.metadata.creationTimestamp ?? now
            r.metadata.resourceVersion = nil
            r.metadata.generation = nil
            // Status is written by the server, never by apply (as in Kubernetes).
            r.status = old?.status
            let body = r.storedBody
            let current = existing.byKey[r.storeKey]
            writes.append(Write(
                index: i, key: r.storeKey, resource: r, body: body, expectedVersion: expected[i],
                bumpGeneration: old == nil || old?.spec != r.spec,
                unchanged: current?.body == body, existing: current))
        }
        return writes
    }

    private func assignVirtualIPs(_ resources: inout [Resource], stored: [Resource?], existing: Existing, applied: Set<ResourceKey>) throws(APIError) {
        var taken: [IPAddress: ResourceKey] = [:]
        for s in existing.services where !applied.contains(s.key) {
            if case .service(let spec) = try s.decodedResource().spec, let vip = spec.virtualIP { taken[vip] = s.key }
        }
        // Services that keep the address they have claim it before explicit
        // requests are checked, so a clash is reported on the document that asked
        // for someone else's address.
        for (i, r) in resources.enumerated() {
            guard case .service(let spec) = r.spec, spec.virtualIP == nil,
                  case .service(let old)? = stored[i]?.spec, let vip = old.virtualIP else { continue }
            taken[vip] = r.storeKey
        }
        var needing: [Int] = []
        for (i, r) in resources.enumerated() {
            guard case .service(var spec) = r.spec else { continue }
            var oldVIP: IPAddress?
            if case .service(let old)? = stored[i]?.spec { oldVIP = old.virtualIP }
            guard let vip = spec.virtualIP else {
                if let oldVIP {
                    spec.virtualIP = oldVIP
                    resources[i].spec = .service(spec)
                } else {
                    needing.append(i)
                }
                continue
            }
            // An address outside the CIDR could be a real host's: capturing it
            // would hijack that host's traffic. The Service's current address stays
            // acceptable so that re-applying survives a --service-cidr change.
            if vip != oldVIP, !allocator.contains(vip) {
                throw APIError(.invalid, "\(vip) is outside the service CIDR \(allocator.cidr) (weft-control --service-cidr); leave virtualIP out to have one allocated", field: "spec.virtualIP", document: i)
            }
            if let other = taken[vip], other != r.storeKey {
                throw APIError(.invalid, "\(vip) is already the virtual IP of \(Self.describe(other)); two Services cannot share a virtual IP (leave virtualIP out to have a free one allocated)", field: "spec.virtualIP", document: i)
            }
            taken[vip] = r.storeKey
        }
        for i in needing {
            guard case .service(var spec) = resources[i].spec else { continue }
            guard let vip = allocator.allocate(avoiding: Set(taken.keys)) else {
                throw APIError(.invalid, "no free virtual IP is left in the service CIDR \(allocator.cidr); delete unused Services or restart weft-control with a larger --service-cidr", field: "spec.virtualIP", document: i)
            }
            spec.virtualIP = vip
            resources[i].spec = .service(spec)
            taken[vip] = resources[i].storeKey
        }
    }

    /// `Service shop/catalog`, `Namespace shop`.
    static func describe(_ key: ResourceKey) -> String {
        key.namespace.isEmpty ? "\(key.kind) \(key.name)" : "\(key.kind) \(key.namespace)/\(key.name)"
    }
}
