import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// The store on an etcd v3 cluster, spoken to through etcd's HTTP/JSON gateway
/// (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`), so that any number of
/// weft-control replicas share one desired state.
///
/// Revisions are etcd's own: a resource's `resourceVersion` is its key's
/// `mod_revision`, `createdRevision` its `create_revision`, and the store's
/// revision the revision of its last commit. They are therefore comparable
/// across replicas, which is what lets an agent move from one replica to
/// another without losing its place.
///
/// Keys, all under `prefix` (default `/weft/`):
///
///     <prefix>r/<kind>/<namespace>/<name>   {"generation": N, "body": "…"}
///     <prefix>head                          written by every commit
///
/// Every commit is one etcd transaction that also writes `head`, so `head`'s
/// `mod_revision` is the store's revision, a watch on `head` wakes long polls
/// in every replica, and the change log is etcd's own history (read with a
/// watch from a past revision); etcd's compaction is the store's.
public final class EtcdStore: ResourceStore {
    public let endpoints: [String]
    public let prefix: String
    private let http: HTTPClient
    private let requestTimeout: TimeAmount
    /// Index of the endpoint in use; moves on when one fails.
    private let current = Mutex(0)
    private let notifier = RevisionNotifier()
    private let watcher = Mutex<Task<Void, Never>?>(nil)

    /// etcd's default `--max-txn-ops`: the most operations one transaction
    /// may hold. A commit takes one per key plus one for `head`.
    public static let maximumTransactionOperations = 128

    /// How often a commit is tried again when another writer changed one of its
    /// keys between the read and the transaction (its own checks pass each time).
    static let commitAttempts = 20

    /// Checks the endpoints (each an `http://host:port` URL) and connects:
    /// the store's revision is read, and a watch keeps long polls of this
    /// process current with commits of every replica.
    public static func connect(endpoints: [String], prefix: String = "/weft/", requestTimeout: Duration = .seconds(5),
                               origin: String = "--etcd-endpoints") async throws -> EtcdStore {
        let store = try EtcdStore(endpoints: endpoints, prefix: prefix, requestTimeout: requestTimeout, origin: origin)
        let revision: Int64
        do {
            revision = try await store.revision()
        } catch {
            throw StoreError(code: .storage, message: "cannot reach etcd at \(endpoints.joined(separator: ",")) (\(origin)): \(error)")
        }
        store.notifier.publish(revision)
        store.startWatching(from: revision)
        return store
    }

    init(endpoints: [String], prefix: String, requestTimeout: Duration, origin: String) throws {
        guard !endpoints.isEmpty else {
            throw StoreError(code: .storage, message: "\(origin): at least one etcd endpoint is needed, such as http://127.0.0.1:2379")
        }
        var cleaned: [String] = []
        for raw in endpoints {
            var e = raw.trimmingCharacters(in: .whitespaces)
            while e.hasSuffix("/") { e.removeLast() }
            guard let url = URL(string: e), url.scheme == "http", let host = url.host, !host.isEmpty, url.port != nil,
                  url.path.isEmpty, url.query == nil else {
                throw StoreError(code: .storage, message: "\(origin): \"\(raw)\" is not an etcd client URL of the form http://HOST:PORT (https is not supported yet)")
            }
            cleaned.append(e)
        }
        guard prefix.hasPrefix("/"), prefix.hasSuffix("/"), prefix.count >= 2 else {
            throw StoreError(code: .storage, message: "the etcd key prefix \"\(prefix)\" must start and end with '/', such as /weft/")
        }
        self.endpoints = cleaned
        self.prefix = prefix
        self.requestTimeout = TimeAmount.nanoseconds(Int64(requestTimeout.components.seconds) * 1_000_000_000
                                                     + requestTimeout.components.attoseconds / 1_000_000_000)
        http = Self.client
    }

    /// One client for every store of the process, never shut down (so a store
    /// dropped without ``shutdown()`` leaks nothing but its watch).
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration(timeout: .init(connect: .seconds(2), read: nil))
        // A refused connection must fail at once so the next endpoint is tried.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        // Every report and poll of a thousand agents ends in etcd requests; the
        // default 8 connections per member queued them past their deadline.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 128
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// Stops the watch that wakes this store's waiters.
    public func shutdown() async {
        watcher.withLock { $0?.cancel(); $0 = nil }
    }

    // MARK: Keys

    private var resourcesPrefix: String { prefix + "r/" }
    private var headKey: String { prefix + "head" }

    private static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
    }

    func etcdKey(_ key: ResourceKey) -> String {
        resourcesPrefix + [key.kind, key.namespace, key.name].map(Self.escape).joined(separator: "/")
    }

    private func resourceKey(_ etcdKey: String) -> ResourceKey? {
        guard etcdKey.hasPrefix(resourcesPrefix) else { return nil }
        let parts = etcdKey.dropFirst(resourcesPrefix.count).split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        let plain = parts.map { $0.removingPercentEncoding ?? String($0) }
        return ResourceKey(kind: plain[0], namespace: plain[1], name: plain[2])
    }

    /// The end of the range of every key starting with `prefix`.
    static func rangeEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        bytes[bytes.count - 1] += 1
        return String(decoding: bytes, as: UTF8.self)
    }

    private struct Value: Codable {
        var generation: Int64
        var body: String
    }

    private func decode(_ kv: Wire.KeyValue) throws -> StoredResource? {
        guard let key = resourceKey(kv.key.text) else { return nil }
        let value: Value
        do {
            value = try JSONDecoder().decode(Value.self, from: Data((kv.value ?? Wire.Bytes("")).bytes))
        } catch {
            throw StoreError(code: .storage, message: "the etcd value of \(key) is not a stored resource: \(error)")
        }
        return StoredResource(key: key, body: value.body, resourceVersion: kv.mod_revision?.value ?? 0,
                              generation: value.generation, createdRevision: kv.create_revision?.value ?? 0)
    }

    // MARK: ResourceStore

    public func get(_ key: ResourceKey) async throws -> StoredResource? {
        let answer = try await range(Wire.RangeRequest(key: .init(etcdKey(key))))
        return try answer.kvs?.first.flatMap(decode)
    }

    public func list(kind: String?, namespace: String?) async throws -> [StoredResource] {
        var start = resourcesPrefix
        if let kind {
            start += Self.escape(kind) + "/"
            if let namespace { start += Self.escape(namespace) + "/" }
        }
        let answer = try await range(Wire.RangeRequest(key: .init(start), range_end: .init(Self.rangeEnd(start))))
        var out = try (answer.kvs ?? []).compactMap(decode)
        if let namespace, kind == nil { out = out.filter { $0.key.namespace == namespace } }
        return out.sorted { $0.key < $1.key }
    }

    public func revision() async throws -> Int64 {
        let answer = try await range(Wire.RangeRequest(key: .init(headKey)))
        return answer.kvs?.first?.mod_revision?.value ?? 0
    }

    @discardableResult
    public func commit(_ mutations: [Mutation]) async throws -> CommitResult {
        for _ in 0..<Self.commitAttempts {
            if let result = try await tryCommit(mutations) {
                notifier.publish(result.revision)
                return result
            }
        }
        throw StoreError(code: .conflict, message: "the commit lost \(Self.commitAttempts) races in a row with other writers to the same objects; try again")
    }

    /// One read-check-write round: nil when a key changed between the read and
    /// the transaction (the caller reads again and re-checks).
    private func tryCommit(_ mutations: [Mutation]) async throws -> CommitResult? {
        var keys: [String] = []
        for m in mutations where !keys.contains(etcdKey(m.key)) { keys.append(etcdKey(m.key)) }
        guard keys.count < Self.maximumTransactionOperations else {
            throw StoreError(code: .tooLarge, message: "one commit may change at most \(Self.maximumTransactionOperations - 1) objects on the etcd store (etcd's --max-txn-ops is \(Self.maximumTransactionOperations) by default); this one changes \(keys.count): apply them in smaller batches")
        }
        // Read every key; the transaction below compares each against what was read.
        let read = try await txn(Wire.TxnRequest(compare: [], success: keys.map { .range(.init(key: .init($0))) }, failure: []))
        var existing: [ResourceKey: (resource: StoredResource, modRevision: Int64)] = [:]
        for response in read.responses ?? [] {
            for kv in response.response_range?.kvs ?? [] {
                if let r = try decode(kv) { existing[r.key] = (r, kv.mod_revision?.value ?? 0) }
            }
        }
        // The same checks, in the same order, as the embedded store; a key
        // mutated twice in one commit is checked against its first mutation.
        var planned = existing.mapValues { Optional($0.resource) }
        var compare: [Wire.Compare] = []
        var compared = Set<ResourceKey>()
        // etcd refuses a transaction that names a key twice: only each key's
        // final state is written, in the order keys were first mutated.
        var order: [ResourceKey] = []
        for m in mutations {
            let k = m.key
            let now = planned[k] ?? nil
            if let expected = m.expectedVersion {
                let actual = now?.resourceVersion
                if expected == 0 ? actual != nil : actual != expected {
                    throw StoreError.conflict(k, expected: expected, actual: actual)
                }
            }
            if compared.insert(k).inserted {
                order.append(k)
                compare.append(.init(key: .init(etcdKey(k)), result: "EQUAL", target: "MOD",
                                     mod_revision: .init(existing[k]?.modRevision ?? 0)))
            }
            switch m.operation {
            case .put(let body, let bump):
                let generation = (now?.generation ?? 0) + ((bump || now == nil) ? 1 : 0)
                // resourceVersion 0 marks "written by this commit" until the revision is known.
                planned[k] = StoredResource(key: k, body: body, resourceVersion: 0, generation: generation,
                                            createdRevision: now?.createdRevision ?? 0)
            case .delete:
                guard now != nil else {
                    throw StoreError(code: .notFound, message: "\(k) does not exist")
                }
                planned[k] = .some(nil)
            }
        }
        var ops: [Wire.RequestOp] = []
        var pending: [StoredResource] = []
        for k in order {
            if let final = planned[k] ?? nil {
                guard final.resourceVersion == 0 else { continue }
                let value = String(decoding: try JSONEncoder().encode(Value(generation: final.generation, body: final.body)), as: UTF8.self)
                ops.append(.put(.init(key: .init(etcdKey(k)), value: .init(value))))
                pending.append(final)
            } else if existing[k] != nil {
                ops.append(.delete(.init(key: .init(etcdKey(k)))))
            }
        }
        ops.append(.put(.init(key: .init(headKey), value: .init(""))))
        let answer = try await txn(Wire.TxnRequest(compare: compare, success: ops, failure: []))
        guard answer.succeeded == true else { return nil }
        guard let revision = answer.header?.revision?.value else {
            throw StoreError(code: .storage, message: "etcd answered a transaction without a revision")
        }
        let written = pending.map { p in
            StoredResource(key: p.key, body: p.body, resourceVersion: revision, generation: p.generation,
                           createdRevision: p.createdRevision > 0 ? p.createdRevision : revision)
        }
        return CommitResult(revision: revision, written: written)
    }

    public func changes(after revision: Int64) async throws -> [Change] {
        let head = try await self.revision()
        guard head > revision else { return [] }
        // etcd's history of the prefix, from the revision after `revision` up to
        // `head` (which every commit writes, so its event marks the end).
        let create = Wire.WatchCreate(key: .init(prefix), range_end: .init(Self.rangeEnd(prefix)), start_revision: .init(revision + 1))
        return try await withThrowingTaskGroup(of: [Change]?.self) { group in
            group.addTask { try await self.history(create, upTo: head) }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            guard let first else {
                throw StoreError(code: .storage, message: "etcd did not replay the changes after revision \(revision) within 30 s")
            }
            return first
        }
    }

    private func history(_ create: Wire.WatchCreate, upTo head: Int64) async throws -> [Change] {
        var out: [Change] = []
        try await watch(create) { result in
            if let compacted = result.compact_revision?.value, compacted > 0 {
                throw StoreError(code: .compacted, message: "changes before revision \(compacted) were compacted; list again")
            }
            var done = false
            for event in result.events ?? [] {
                let at = event.kv?.mod_revision?.value ?? 0
                if at >= head { done = true }
                guard at <= head, let kv = event.kv, let key = resourceKey(kv.key.text) else { continue }
                out.append(Change(revision: at, key: key, kind: event.type == "DELETE" ? .delete : .put))
            }
            return done
        }
        return out
    }

    public func waitForRevision(above revision: Int64, timeout: Duration) async throws -> Int64 {
        await notifier.wait(above: revision, timeout: timeout)
    }

    // MARK: The head watch

    /// Follows `head` for as long as the store is open, so waiters of this
    /// process wake on every replica's commits; reconnects (to the next
    /// endpoint) from where it was when a member fails.
    private func startWatching(from revision: Int64) {
        let task = Task { [weak self] in
            // The revision the next watch starts from.
            var next = revision + 1
            while !Task.isCancelled {
                guard let self else { return }
                do {
                    try await self.watch(Wire.WatchCreate(key: .init(self.headKey), start_revision: .init(next))) { result in
                        if let compacted = result.compact_revision?.value, compacted > 0 {
                            // History is gone up to there; the current head is all that matters.
                            next = max(next, compacted)
                            self.notifier.publish(try await self.revision())
                            return true
                        }
                        for event in result.events ?? [] {
                            if let at = event.kv?.mod_revision?.value, at >= next {
                                next = at + 1
                                self.notifier.publish(at)
                            }
                        }
                        return false
                    }
                } catch {
                    if Task.isCancelled { return }
                    self.failOver()
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
        }
        watcher.withLock { $0 = task }
    }

    // MARK: Transport

    private func failOver() {
        current.withLock { $0 = ($0 + 1) % endpoints.count }
    }

    private func range(_ request: Wire.RangeRequest) async throws -> Wire.RangeResponse {
        try await call("/v3/kv/range", request, idempotent: true)
    }

    private func txn(_ request: Wire.TxnRequest) async throws -> Wire.TxnResponse {
        // A transaction that writes is sent again to another member only when
        // it cannot have reached the first one (the connection was refused):
        // otherwise it may have been applied, and a blind retry would hide that.
        let writes = request.success.contains { $0.request_range == nil }
        return try await call("/v3/kv/txn", request, idempotent: !writes)
    }

    /// POSTs to the endpoint in use, moving to the next one when it is down.
    private func call<Request: Encodable, Response: Decodable>(_ path: String, _ body: Request, idempotent: Bool) async throws -> Response {
        let payload = try JSONEncoder().encode(body)
        var lastError: (any Error)?
        for _ in 0..<endpoints.count {
            let endpoint = endpoints[current.withLock { $0 }]
            var request = HTTPClientRequest(url: endpoint + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
            let status: HTTPResponseStatus
            let bytes: ByteBuffer
            do {
                let response = try await http.execute(request, timeout: requestTimeout)
                status = response.status
                bytes = try await response.body.collect(upTo: 256 << 20)
            } catch {
                lastError = StoreError(code: .storage, message: "etcd at \(endpoint): \(error)")
                if idempotent || Self.neverSent(error) {
                    failOver()
                    continue
                }
                throw lastError!
            }
            if status == .ok {
                do {
                    return try JSONDecoder().decode(Response.self, from: Data(bytes.readableBytesView))
                } catch {
                    throw StoreError(code: .storage, message: "etcd at \(endpoint) answered \(path) with something unexpected: \(error)")
                }
            }
            let failure = (try? JSONDecoder().decode(Wire.Failure.self, from: Data(bytes.readableBytesView)))
            let message = failure?.message ?? failure?.error ?? String(buffer: bytes)
            if failure?.code == 11 || message.contains("compacted") {
                throw StoreError(code: .compacted, message: "etcd: \(message); list again")
            }
            if message.contains("too many operations in txn") {
                throw StoreError(code: .tooLarge, message: "etcd at \(endpoint) refused a transaction: \(message) (raise --max-txn-ops on every member, or apply fewer objects at once)")
            }
            lastError = StoreError(code: .storage, message: "etcd at \(endpoint) refused \(path): \(message)")
            // Unavailable (no leader, stopping): another member may do better.
            if failure?.code == 14, idempotent {
                failOver()
                continue
            }
            throw lastError!
        }
        throw lastError ?? StoreError(code: .storage, message: "no etcd endpoint answered")
    }

    /// Whether the request cannot have reached etcd.
    private static func neverSent(_ error: any Error) -> Bool {
        if let e = error as? HTTPClientError, e == .connectTimeout { return true }
        let text = "\(error) \(String(reflecting: error))".lowercased()
        return text.contains("connection refused") || text.contains("econnrefused") || text.contains("connectionerror")
    }

    /// Opens a watch and hands each of its results to `handle` until it
    /// returns true or the stream ends (an error).
    private func watch(_ create: Wire.WatchCreate, _ handle: (Wire.WatchResult) async throws -> Bool) async throws {
        let endpoint = endpoints[current.withLock { $0 }]
        var request = HTTPClientRequest(url: endpoint + "/v3/watch")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(Wire.WatchRequest(create_request: create))))
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: requestTimeout)
        } catch {
            failOver()
            throw StoreError(code: .storage, message: "etcd at \(endpoint): watch failed: \(error)")
        }
        guard response.status == .ok else {
            failOver()
            throw StoreError(code: .storage, message: "etcd at \(endpoint) refused a watch: HTTP \(response.status.code)")
        }
        var pending: [UInt8] = []
        for try await chunk in response.body {
            pending.append(contentsOf: chunk.readableBytesView)
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[..<newline]
                pending.removeSubrange(...newline)
                guard !line.isEmpty else { continue }
                let message: Wire.WatchMessage
                do {
                    message = try JSONDecoder().decode(Wire.WatchMessage.self, from: Data(line))
                } catch {
                    throw StoreError(code: .storage, message: "etcd at \(endpoint) sent an unreadable watch message: \(error)")
                }
                if let error = message.error {
                    throw StoreError(code: .storage, message: "etcd at \(endpoint): watch: \(error.message ?? "failed")")
                }
                guard let result = message.result else { continue }
                if try await handle(result) { return }
                if result.canceled == true {
                    throw StoreError(code: .storage, message: "etcd at \(endpoint) cancelled the watch: \(result.cancel_reason ?? "no reason given")")
                }
            }
        }
        throw StoreError(code: .storage, message: "etcd at \(endpoint) ended the watch")
    }
}

/// etcd's gateway JSON: 64-bit numbers as strings, bytes as base64, and fields
/// at their zero value left out.
enum Wire {
    struct Int64Text: Codable {
        var value: Int64
        init(_ value: Int64) { self.value = value }
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let n = try? c.decode(Int64.self) {
                value = n
            } else if let n = Int64(try c.decode(String.self)) {
                value = n
            } else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a 64-bit number")
            }
        }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(String(value))
        }
    }

    struct Bytes: Codable {
        var bytes: [UInt8]
        init(_ text: String) { bytes = Array(text.utf8) }
        var text: String { String(decoding: bytes, as: UTF8.self) }
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            guard let data = Data(base64Encoded: try c.decode(String.self)) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "not base64")
            }
            bytes = Array(data)
        }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(Data(bytes).base64EncodedString())
        }
    }

    struct Header: Codable {
        var revision: Int64Text?
    }

    struct KeyValue: Codable {
        var key: Bytes
        var value: Bytes?
        var create_revision: Int64Text?
        var mod_revision: Int64Text?
    }

    struct RangeRequest: Codable {
        var key: Bytes
        var range_end: Bytes?
    }

    struct RangeResponse: Codable {
        var header: Header?
        var kvs: [KeyValue]?
    }

    struct PutRequest: Codable {
        var key: Bytes
        var value: Bytes
    }

    struct DeleteRequest: Codable {
        var key: Bytes
    }

    struct RequestOp: Codable {
        var request_range: RangeRequest?
        var request_put: PutRequest?
        var request_delete_range: DeleteRequest?
        static func range(_ r: RangeRequest) -> RequestOp { RequestOp(request_range: r) }
        static func put(_ r: PutRequest) -> RequestOp { RequestOp(request_put: r) }
        static func delete(_ r: DeleteRequest) -> RequestOp { RequestOp(request_delete_range: r) }
    }

    struct Compare: Codable {
        var key: Bytes
        var result: String
        var target: String
        var mod_revision: Int64Text
    }

    struct TxnRequest: Codable {
        var compare: [Compare]
        var success: [RequestOp]
        var failure: [RequestOp]
    }

    struct ResponseOp: Codable {
        var response_range: RangeResponse?
    }

    struct TxnResponse: Codable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct WatchCreate: Codable {
        var key: Bytes
        var range_end: Bytes?
        var start_revision: Int64Text
    }

    struct WatchRequest: Codable {
        var create_request: WatchCreate
    }

    struct Event: Codable {
        var type: String?
        var kv: KeyValue?
    }

    struct WatchResult: Codable {
        var header: Header?
        var created: Bool?
        var canceled: Bool?
        var cancel_reason: String?
        var compact_revision: Int64Text?
        var events: [Event]?
    }

    struct Failure: Codable {
        var error: String?
        var message: String?
        var code: Int?
    }

    struct StreamFailure: Codable {
        var message: String?
        var grpc_code: Int?
    }

    struct WatchMessage: Codable {
        var result: WatchResult?
        var error: StreamFailure?
    }
}
