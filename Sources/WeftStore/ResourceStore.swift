/// The control plane's desired state, behind a narrow interface so that the
/// embedded SQLite store and an etcd store are interchangeable.
///
/// The model is etcd's: one revision counter for the whole store, bumped by
/// every commit; a resource's `resourceVersion` is the revision that last
/// wrote it. Bodies are opaque JSON text: validation happens above the store.
public protocol ResourceStore: Sendable {
    func get(_ key: ResourceKey) async throws -> StoredResource?
    /// Resources of a kind (all kinds when nil), in one namespace or all.
    func list(kind: String?, namespace: String?) async throws -> [StoredResource]
    /// Resources of several kinds, all namespaces, in one read where the store can.
    func list(kinds: [String]) async throws -> [StoredResource]
    /// Applies every mutation or none. A mutation whose `expectedVersion`
    /// does not match throws `StoreError.conflict` and nothing is written.
    @discardableResult
    func commit(_ mutations: [Mutation]) async throws -> CommitResult
    /// The current revision.
    func revision() async throws -> Int64
    /// Changes after `revision`, oldest first. Throws `StoreError.compacted`
    /// when the log no longer reaches back that far (the watcher must relist).
    func changes(after revision: Int64) async throws -> [Change]
    /// Returns as soon as the revision is above `revision`, or after `timeout`;
    /// the answer is the revision then. The basis of long-poll watches.
    func waitForRevision(above revision: Int64, timeout: Duration) async throws -> Int64
}

extension ResourceStore {
    /// One read per kind.
    public func list(kinds: [String]) async throws -> [StoredResource] {
        var out: [StoredResource] = []
        for kind in kinds { out += try await list(kind: kind, namespace: nil) }
        return out.sorted { $0.key < $1.key }
    }
}

public struct ResourceKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var kind: String
    /// "" for cluster-scoped kinds.
    public var namespace: String
    public var name: String

    public init(kind: String, namespace: String = "", name: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
    }

    public var description: String { namespace.isEmpty ? "\(kind)/\(name)" : "\(kind) \(namespace)/\(name)" }
    public static func < (a: Self, b: Self) -> Bool { (a.kind, a.namespace, a.name) < (b.kind, b.namespace, b.name) }
}

public struct StoredResource: Hashable, Sendable {
    public var key: ResourceKey
    public var body: String
    public var resourceVersion: Int64
    public var generation: Int64
    public var createdRevision: Int64

    public init(key: ResourceKey, body: String, resourceVersion: Int64, generation: Int64, createdRevision: Int64) {
        self.key = key
        self.body = body
        self.resourceVersion = resourceVersion
        self.generation = generation
        self.createdRevision = createdRevision
    }
}

public struct Mutation: Sendable, Hashable {
    public enum Operation: Sendable, Hashable {
        /// Create or replace. `bumpGeneration`: the spec changed.
        case put(body: String, bumpGeneration: Bool)
        case delete
    }

    public var key: ResourceKey
    public var operation: Operation
    /// nil: unconditional. 0: must not exist yet. n: must be at version n.
    public var expectedVersion: Int64?

    public init(key: ResourceKey, operation: Operation, expectedVersion: Int64? = nil) {
        self.key = key
        self.operation = operation
        self.expectedVersion = expectedVersion
    }

    public static func put(_ key: ResourceKey, body: String, bumpGeneration: Bool = true, expectedVersion: Int64? = nil) -> Mutation {
        Mutation(key: key, operation: .put(body: body, bumpGeneration: bumpGeneration), expectedVersion: expectedVersion)
    }

    public static func delete(_ key: ResourceKey, expectedVersion: Int64? = nil) -> Mutation {
        Mutation(key: key, operation: .delete, expectedVersion: expectedVersion)
    }
}

public struct CommitResult: Sendable, Hashable {
    public var revision: Int64
    /// The resources as written (deleted ones absent).
    public var written: [StoredResource]
}

public struct Change: Sendable, Hashable {
    public enum Kind: String, Sendable { case put, delete }
    public var revision: Int64
    public var key: ResourceKey
    public var kind: Kind
}

public struct StoreError: Error, CustomStringConvertible, Hashable, Sendable {
    public enum Code: Hashable, Sendable {
        case conflict, notFound, compacted, storage
        /// A commit larger than the backend takes at once (etcd's --max-txn-ops).
        case tooLarge
    }
    public var code: Code
    public var message: String
    /// The object a conflict is about, when there is one.
    public var key: ResourceKey?

    public init(code: Code, message: String, key: ResourceKey? = nil) {
        self.code = code
        self.message = message
        self.key = key
    }

    public static func conflict(_ key: ResourceKey, expected: Int64, actual: Int64?) -> StoreError {
        let now = actual.map { "is at resourceVersion \($0)" } ?? "does not exist"
        let wanted = expected == 0 ? "expected it not to exist" : "expected resourceVersion \(expected)"
        return StoreError(code: .conflict, message: "\(key) \(now); \(wanted): it was changed by someone else, fetch it again and retry", key: key)
    }

    public var description: String { message }
}
