import Foundation
import Logging
import WeftCore
import WeftIdentity
import WeftStore
import X509

/// A response body and status, before HTTP.
struct APIResponse: Sendable {
    var status: Int
    /// JSON text.
    var body: String

    static func json(_ value: JSONValue, status: Int = 200) -> APIResponse {
        APIResponse(status: status, body: value.serialized())
    }

    static func encoded(_ value: some Encodable, status: Int = 200) throws -> APIResponse {
        APIResponse(status: status, body: try InternalJSON.encode(value))
    }
}

/// The control API's behaviour, one method per endpoint, below HTTP and
/// authentication: the responder has already established who is calling.
///
/// Every write goes through ``WriteSerializer`` (see there why) and ``commit(_:)``,
/// which keeps the snapshot version current.
final class ControlAPI: Sendable {
    let store: any ResourceStore
    let ca: MeshCA
    let allocator: VirtualIPAllocator
    let logger: Logger
    let now: @Sendable () -> Date

    private let writes = WriteSerializer()
    let versions: SnapshotVersion
    private let views = ClusterViewCache()
    private let drain = LongPollDrain()
    /// Reads the store's change log as it moves (``SnapshotVersion/follow(_:)``).
    private let follower: Task<Void, Never>

    /// Longest a snapshot long poll may wait (docs/control-api.md).
    static let maximumPoll: Duration = .seconds(60)
    static let defaultPoll: Duration = .seconds(30)
    static let maximumTokenTTL: Int64 = 30 * 86_400

    let workloadCertificateTTL: Duration

    init(store: any ResourceStore, ca: MeshCA, serviceCIDR: CIDR, logger: Logger,
         versions: SnapshotVersion, workloadCertificateTTL: Duration = MeshCA.defaultWorkloadTTL,
         now: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.workloadCertificateTTL = workloadCertificateTTL
        self.ca = ca
        self.allocator = VirtualIPAllocator(cidr: serviceCIDR)
        self.logger = logger
        self.versions = versions
        self.now = now
        follower = Task { [versions, store] in await versions.follow(store) }
    }

    /// Stops following the store (the server is shutting down).
    func stop() {
        follower.cancel()
    }

    var trustDomain: TrustDomain { ca.trustDomain }

    // MARK: Writes

    /// Commits and records the new revision for long polls.
    @discardableResult
    private func commit(_ mutations: [Mutation]) async throws -> CommitResult {
        let result: CommitResult
        do {
            result = try await store.commit(mutations)
        } catch let error as StoreError where error.code == .conflict {
            if let key = error.key, key.kind == InternalKind.virtualIP {
                throw APIError(.conflict, "the virtual IP \(key.name) was taken by another write at the same moment (another weft-control replica); nothing was written: apply again", field: "spec.virtualIP")
            }
            throw APIError(.conflict, error.message)
        } catch let error as StoreError where error.code == .notFound {
            throw APIError(.notFound, error.message)
        } catch let error as StoreError where error.code == .tooLarge {
            throw APIError(.tooLarge, error.message)
        }
        versions.record(revision: result.revision, touchesResources: mutations.contains { !InternalKind.isInternal($0.key.kind) })
        return result
    }

    /// Answers every waiting long poll now, with the current snapshot, and makes
    /// new ones answer at once: graceful shutdown would otherwise wait up to a
    /// minute for them.
    func drainLongPolls() {
        drain.drain()
    }

    // MARK: Resources

    func apply(body: [UInt8], dryRun: Bool) async throws -> APIResponse {
        let items = try ApplyPlanner.items(of: body)
        return try await writes.run {
            var existing = ApplyPlanner.Existing()
            for key in Set(ApplyPlanner.keys(of: items)) {
                if let s = try await store.get(key) { existing.byKey[key] = s }
            }
            existing.namespaces = Set(try await store.list(kind: ResourceKind.namespace.rawValue, namespace: nil).map(\.key.name))
            existing.services = try await store.list(kind: ResourceKind.service.rawValue, namespace: nil)

            let planner = ApplyPlanner(allocator: allocator, now: RFC3339.string(now()),
                                       makeUID: { UUID().uuidString.lowercased() })
            let plan = try planner.plan(items, existing: existing)
            let changed = plan.filter { !$0.unchanged }
            var revision = try await store.revision()
            var written: [ResourceKey: StoredResource] = [:]
            if !dryRun, !changed.isEmpty {
                var mutations: [Mutation] = changed.map {
                    .put($0.key, body: $0.body, bumpGeneration: $0.bumpGeneration, expectedVersion: $0.expectedVersion)
                }
                mutations += try await virtualIPClaims(changed)
                let result = try await commit(mutations)
                revision = result.revision
                for w in result.written { written[w.key] = w }
            }
            let out = plan.map { w -> JSONValue in
                var r = w.resource
                if let s = written[w.key] ?? (w.unchanged ? w.existing : nil) {
                    r.metadata.resourceVersion = String(s.resourceVersion)
                    r.metadata.generation = s.generation
                } else {
                    // A dry run: what the commit would have produced, short of the revision.
                    r.metadata.resourceVersion = w.existing.map { String($0.resourceVersion) }
                    r.metadata.generation = (w.existing?.generation ?? 0) + (w.bumpGeneration ? 1 : 0)
                }
                return r.encode()
            }
            logger.info("apply", metadata: [
                "documents": "\(plan.count)", "changed": "\(changed.count)", "dryRun": "\(dryRun)", "revision": "\(revision)",
            ])
            return .json(["items": .array(out), "revision": .int(revision)])
        }
    }

    /// The `_VirtualIP/<address>` records that go with Services changing
    /// address: the new address claimed (must not be claimed yet), the old one
    /// released. A replica that allocated the same address a moment earlier
    /// makes the claim, and so the whole apply, fail with 409.
    private func virtualIPClaims(_ writes: [ApplyPlanner.Write]) async throws -> [Mutation] {
        // Releases first: an address one Service gives up may be taken by another in the same apply.
        var releases: [Mutation] = []
        var claims: [Mutation] = []
        for w in writes {
            guard case .service(let spec) = w.resource.spec else { continue }
            let old = try w.existing.flatMap { s -> IPAddress? in
                guard case .service(let o) = try s.decodedResource().spec else { return nil }
                return o.virtualIP
            }
            guard spec.virtualIP != old else { continue }
            if let vip = spec.virtualIP {
                claims.append(.put(Self.claimKey(vip), body: w.key.description, bumpGeneration: false, expectedVersion: 0))
            }
            if let old { releases += try await release(old, heldBy: w.key) }
        }
        return releases + claims
    }

    static func claimKey(_ vip: IPAddress) -> ResourceKey {
        ResourceKey(kind: InternalKind.virtualIP, name: vip.description)
    }

    /// Deletes the claim on `vip` if `holder` has it (Services stored before
    /// claims existed have none).
    private func release(_ vip: IPAddress, heldBy holder: ResourceKey) async throws -> [Mutation] {
        guard let claim = try await store.get(Self.claimKey(vip)), claim.body == holder.description else { return [] }
        return [.delete(claim.key, expectedVersion: claim.resourceVersion)]
    }

    func list(plural: String, namespace: String?) async throws -> APIResponse {
        let kind = try Self.kind(plural)
        // The revision first: the items then reflect at least that revision, so a
        // client that lists and then watches from it cannot miss a change.
        let revision = try await store.revision()
        let rows = try await store.list(kind: kind.rawValue, namespace: kind.isNamespaced ? namespace : nil)
        var items: [JSONValue] = []
        for row in rows { items.append(try row.decodedResource().encode()) }
        return .json(["items": .array(items), "revision": .int(revision)])
    }

    func get(plural: String, name: String, namespace: String?) async throws -> APIResponse {
        let key = try Self.key(plural: plural, name: name, namespace: namespace)
        guard let row = try await store.get(key) else {
            throw APIError(.notFound, "\(ApplyPlanner.describe(key)) does not exist")
        }
        return .json(try row.decodedResource().encode())
    }

    func delete(plural: String, name: String, namespace: String?, resourceVersion: String?) async throws -> APIResponse {
        let key = try Self.key(plural: plural, name: name, namespace: namespace)
        var expected: Int64?
        if let resourceVersion {
            guard let v = Int64(resourceVersion) else {
                throw APIError(.badRequest, "\"\(resourceVersion)\" is not a resourceVersion (a number, as in metadata.resourceVersion)", field: "resourceVersion")
            }
            expected = v
        }
        return try await writes.run {
            guard let current = try await store.get(key) else {
                throw APIError(.notFound, "\(ApplyPlanner.describe(key)) does not exist")
            }
            if let expected, expected != current.resourceVersion {
                throw APIError(.conflict, "\(ApplyPlanner.describe(key)) is at resourceVersion \(current.resourceVersion), not \(expected): it was changed by someone else; fetch it again", field: "resourceVersion")
            }
            // Kubernetes deletes a namespace's contents with it; Weft refuses
            // instead, so one mistyped delete cannot take a whole application down.
            if key.kind == ResourceKind.namespace.rawValue {
                let contents = try await store.list(kind: nil, namespace: key.name).filter { !InternalKind.isInternal($0.key.kind) }
                if !contents.isEmpty {
                    let shown = contents.prefix(5).map { "\($0.key.kind) \($0.key.name)" }.joined(separator: ", ")
                    let more = contents.count > 5 ? " and \(contents.count - 5) more" : ""
                    throw APIError(.conflict, "namespace \(key.name) still holds \(contents.count) resource\(contents.count == 1 ? "" : "s") (\(shown)\(more)); delete them first")
                }
            }
            var mutations: [Mutation] = [.delete(key, expectedVersion: expected ?? current.resourceVersion)]
            if key.kind == ResourceKind.service.rawValue, case .service(let spec) = try current.decodedResource().spec, let vip = spec.virtualIP {
                mutations += try await release(vip, heldBy: key)
            }
            let result = try await commit(mutations)
            logger.info("delete", metadata: ["object": "\(ApplyPlanner.describe(key))", "revision": "\(result.revision)"])
            return .json(["revision": .int(result.revision)])
        }
    }

    static func kind(_ plural: String) throws(APIError) -> ResourceKind {
        guard let kind = ResourceKind.forPlural(plural) else {
            throw APIError(.notFound, "there is no resource type \"\(plural)\" (types: \(ResourceKind.apiPlurals))")
        }
        return kind
    }

    static func key(plural: String, name: String, namespace: String?) throws(APIError) -> ResourceKey {
        let kind = try kind(plural)
        guard kind.isNamespaced else { return ResourceKey(kind: kind.rawValue, name: name) }
        guard let namespace, !namespace.isEmpty else {
            throw APIError(.badRequest, "\(plural) live in a namespace: add ?namespace=NAME", field: "namespace")
        }
        return ResourceKey(kind: kind.rawValue, namespace: namespace, name: name)
    }

    // MARK: Tokens and joining

    func createToken(body: [UInt8]) async throws -> APIResponse {
        let reader = try BodyReader(body, allowed: ["ttlSeconds"], emptyIsObject: true)
        let ttl = try reader.integer("ttlSeconds", in: 60...Self.maximumTokenTTL).map { Duration.seconds($0) } ?? BootstrapTokens.defaultTTL
        let at = now()
        let (token, record) = try BootstrapTokens.create(ttl: ttl, now: at)
        try await writes.run {
            // Spent and expired tokens are kept until they expire (so a second
            // use is reported as such), then swept as new tokens are made.
            var mutations: [Mutation] = [
                .put(ResourceKey(kind: InternalKind.bootstrapToken, name: record.id),
                     body: try InternalJSON.encode(StoredToken(record: record)), expectedVersion: 0),
            ]
            for row in try await store.list(kind: InternalKind.bootstrapToken, namespace: nil) {
                if let stored = try? InternalJSON.decode(StoredToken.self, row.body), stored.record.isExpired(at: at) {
                    mutations.append(.delete(row.key, expectedVersion: row.resourceVersion))
                }
            }
            try await commit(mutations)
        }
        logger.info("bootstrap token created", metadata: ["token": "\(token)", "expiresAt": "\(RFC3339.string(record.expiresAt))"])
        return .json(["token": .string(token.text), "expiresAt": .string(RFC3339.string(record.expiresAt))], status: 201)
    }

    func join(body: [UInt8]) async throws -> APIResponse {
        let reader = try BodyReader(body, allowed: ["token", "node", "csr"])
        let tokenText = try reader.requiredString("token", "the bootstrap token printed by `weftctl token create`")
        let node = try reader.requiredString("node", "this node's name (weftd's node: setting)")
        let csrPEM = try reader.requiredString("csr", "a PEM certificate request (CERTIFICATE REQUEST) for the node's key")
        let token: BootstrapToken
        do {
            token = try BootstrapToken(parsing: tokenText)
        } catch {
            throw APIError(.unauthorized, error.message, field: "token")
        }

        return try await writes.run {
            let at = now()
            // The token first: without a valid one, nothing else about the request matters.
            let tokenKey = ResourceKey(kind: InternalKind.bootstrapToken, name: token.id)
            let row = try await store.get(tokenKey)
            var stored = try row.map { try InternalJSON.decode(StoredToken.self, $0.body) }
            do throws(IdentityError) {
                let redeemed = try BootstrapTokens.redeem(tokenText, records: stored.map { [$0.record] } ?? [], now: at)
                stored?.record = redeemed
                stored?.usedBy = node
            } catch {
                logger.warning("join refused", metadata: ["node": "\(node)", "token": "\(token)", "reason": "\(error.code)"])
                throw APIError(.unauthorized, error.message, field: "token")
            }
            guard let row, let stored else { throw APIError(.unauthorized, "bootstrap token \(token) is not known", field: "token") }

            guard DNSLabel.isValid(node) else {
                throw APIError(.invalid, "\"\(node)\" is not a node name (a DNS label: lower-case letters, digits and '-', at most 63 characters)", field: "node")
            }
            let csr = try Self.checkedJoinCSR(csrPEM, node: node, trustDomain: trustDomain)
            let certificate: Certificate
            do throws(IdentityError) {
                certificate = try ca.issueNodeCredential(node: node, publicKey: csr.publicKey, now: at)
            } catch {
                throw APIError(.invalid, error.message, field: "csr")
            }
            let nodeKey = ResourceKey(kind: InternalKind.node, name: node)
            let existingNode = try await store.get(nodeKey)
            var record = try existingNode.map { try InternalJSON.decode(NodeRecord.self, $0.body) }
                ?? NodeRecord(name: node, joinedAt: RFC3339.string(at), credentialNotAfter: "")
            record.joinedAt = RFC3339.string(at)
            record.credentialNotAfter = RFC3339.string(certificate.notValidAfter)
            // The compare-and-swap on the token's version is what makes it single-use
            // even if two joins raced past the serializer.
            try await commit([
                .put(tokenKey, body: try InternalJSON.encode(stored), bumpGeneration: false, expectedVersion: row.resourceVersion),
                .put(nodeKey, body: try InternalJSON.encode(record), bumpGeneration: false, expectedVersion: existingNode?.resourceVersion ?? 0),
            ])
            logger.info("node joined", metadata: ["node": "\(node)", "token": "\(token)", "notAfter": "\(record.credentialNotAfter)"])
            return .json([
                "certificate": .string(try PEM.encode(certificate)),
                "caBundle": .string(ca.certificatePEM),
                "trustDomain": .string(trustDomain.name),
            ])
        }
    }

    /// A join CSR must prove possession of its key, and may ask for nothing but
    /// the node's own identity (or for no name at all: the server decides it).
    static func checkedJoinCSR(_ pem: String, node: String, trustDomain: TrustDomain) throws(APIError) -> CertificateSigningRequest {
        let csr: CertificateSigningRequest
        do {
            csr = try PEM.decodeCSR(pem)
        } catch {
            throw APIError(.invalid, error.message, field: "csr")
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw APIError(.invalid, "the CSR does not carry a valid signature by its own key: it was altered after signing or signed with another key; generate a fresh key and CSR", field: "csr")
        }
        let expected = "spiffe://\(trustDomain.name)/node/\(node)"
        let requested = (try? csr.attributes.extensionRequest?.extensions.subjectAlternativeNames) ?? nil
        for name in requested ?? SubjectAlternativeNames() {
            guard case .uniformResourceIdentifier(let uri) = name, uri == expected else {
                throw APIError(.invalid, "the CSR requests the name \(name); a node credential carries only \(expected) (or leave the CSR without names)", field: "csr")
            }
        }
        return csr
    }

    // MARK: Nodes

    func snapshot(node: String, after: Int64?, timeout: Duration) async throws -> APIResponse {
        // An agent ahead of this replica came from one that has read the log
        // further: catch up before answering.
        if let after, after > versions.current.version {
            try await versions.refresh(from: store)
        }
        var version = versions.current.version
        // Wait only when the agent already has the current version: older or
        // unknown (ahead of us, after a data-dir reset) versions are answered at once.
        if let after, after == version {
            let wait = min(timeout, Self.maximumPoll)
            _ = try await drain.wait { [versions] in await versions.wait(above: after, timeout: wait) }
            version = versions.current.version
        }
        let answered = version
        let view = try await views.view(version: answered) { [self] in try await loadView(version: answered) }
        return try .encoded(NodeSnapshotBuilder.build(view, node: node, trustDomain: trustDomain.name))
    }

    private func loadView(version: Int64) async throws -> ClusterView {
        // One read of the store for every kind (SQLite: one query): each read
        // is a hop to the store's queue, and a long poll waits for all of them.
        var byKind: [ResourceKind: [Resource]] = [:]
        for row in try await store.list(kinds: ResourceKind.allCases.map(\.rawValue)) {
            guard let kind = ResourceKind(rawValue: row.key.kind) else { continue }
            do {
                byKind[kind, default: []].append(try row.decodedResource())
            } catch {
                // One unreadable object must not stop every node's sync.
                logger.error("left out of node snapshots", metadata: ["object": "\(row.key)", "error": "\(error)"])
            }
        }
        func read(_ kind: ResourceKind) -> [Resource] { byKind[kind] ?? [] }
        return ClusterView(version: version, namespaces: read(.namespace), workloads: read(.workload), services: read(.service),
                           routes: read(.httpRoute), policies: read(.authorizationPolicy) + read(.peerAuthentication),
                           faultInjections: read(.faultInjection), destinationRules: read(.destinationRule))
    }

    func putStatus(node: String, body: [UInt8], credentialNotAfter: Date?) async throws -> APIResponse {
        _ = try parseJSON(body)
        let status: NodeStatus
        do {
            status = try JSONDecoder().decode(NodeStatus.self, from: Data(body))
        } catch let error as DecodingError {
            throw Self.invalid(error)
        }
        // Matched against the resources of the current snapshot version, decoded
        // once per version for every node's report (and snapshot).
        let version = versions.current.version
        let view = try await views.view(version: version) { [self] in try await loadView(version: version) }
        let found = WorkloadReports.discovered(node: node, reported: status.workloads, existing: view.workloads,
                                               namespaces: Set(view.namespaces.map(\.metadata.name)))
        // A report that registers nothing writes only the node's own record, with
        // compare-and-swap: no need to queue behind applies (at 1,000 nodes, every
        // change is followed by 1,000 reports).
        if found.new.isEmpty {
            return try await report(node: node, status: status, registering: found, credentialNotAfter: credentialNotAfter)
        }
        return try await writes.run {
            try await report(node: node, status: status, registering: found, credentialNotAfter: credentialNotAfter)
        }
    }

    private func report(node: String, status: NodeStatus, registering found: (new: [Resource], skipped: [(String, String)]),
                        credentialNotAfter: Date?) async throws -> APIResponse {
        let at = now()
        let key = ResourceKey(kind: InternalKind.node, name: node)
        let row = try await store.get(key)
        // A node with a valid credential but no record (the store was replaced)
        // is taken at its word: the certificate is the proof of joining.
        var record = try row.map { try InternalJSON.decode(NodeRecord.self, $0.body) }
            ?? NodeRecord(name: node, joinedAt: RFC3339.string(at), credentialNotAfter: credentialNotAfter.map(RFC3339.string) ?? "")
        record.lastSeen = RFC3339.string(at)
        record.status = status
        var mutations: [Mutation] = [
            .put(key, body: try InternalJSON.encode(record), bumpGeneration: false, expectedVersion: row?.resourceVersion ?? 0),
        ]
        for var w in found.new {
            w.metadata.uid = UUID().uuidString.lowercased()
            w.metadata.creationTimestamp = RFC3339.string(at)
            mutations.append(.put(w.storeKey, body: w.storedBody, expectedVersion: 0))
        }
        let result = try await commit(mutations)
        for w in found.new {
            logger.info("registered a discovered workload", metadata: ["node": "\(node)", "workload": "\(w.metadata.namespace?.rawValue ?? "")/\(w.metadata.name)"])
        }
        for (ref, reason) in found.skipped {
            logger.debug("discovered workload not registered", metadata: ["node": "\(node)", "workload": "\(ref)", "reason": "\(reason)"])
        }
        return .json([
            "revision": .int(result.revision),
            "registered": .array(found.new.map { .string("\($0.metadata.namespace?.rawValue ?? "")/\($0.metadata.name)") }),
        ])
    }

    func issueWorkloadCertificate(node: String, body: [UInt8]) async throws -> APIResponse {
        let reader = try BodyReader(body, allowed: ["namespace", "workload", "csr"])
        let namespace = try reader.requiredString("namespace", "the workload's namespace")
        let workload = try reader.requiredString("workload", "the Workload resource's name")
        let csrPEM = try reader.requiredString("csr", "a PEM certificate request for the workload's key")

        let key = ResourceKey(kind: ResourceKind.workload.rawValue, namespace: namespace, name: workload)
        let resource = try await store.get(key).map { try $0.decodedResource() }
        guard let resource, case .workload(let spec) = resource.spec, spec.node == node else {
            var where_ = "does not exist"
            if case .workload(let spec)? = resource?.spec { where_ = "runs on node \(spec.node)" }
            logger.warning("refused a workload certificate to a node the workload is not on", metadata: [
                "node": "\(node)", "workload": "\(namespace)/\(workload)", "found": "\(where_)",
            ])
            throw APIError(.forbidden, "node \(node) may get certificates only for Workloads whose spec.node is \(node); Workload \(namespace)/\(workload) \(where_)")
        }
        let id: SpiffeID
        do throws(ValidationError) {
            id = SpiffeID.workload(trustDomain: trustDomain, namespace: try NamespaceName(namespace),
                                   serviceAccount: try ServiceAccountName(spec.serviceAccount))
        } catch {
            throw APIError(.invalid, error.message, field: error.field)
        }
        let certificate: Certificate
        do throws(IdentityError) {
            certificate = try ca.signWorkloadCSR(csrPEM, expected: id, ttl: workloadCertificateTTL, now: now())
        } catch {
            throw APIError(.invalid, error.message, field: "csr")
        }
        logger.info("workload certificate issued", metadata: ["node": "\(node)", "spiffeID": "\(id)", "notAfter": "\(RFC3339.string(certificate.notValidAfter))"])
        return .json(["certificate": .string(try PEM.encode(certificate)), "caBundle": .string(ca.certificatePEM)])
    }

    // MARK: Status

    func status() async throws -> APIResponse {
        // Another replica may have written since this one last read the log.
        try await versions.refresh(from: store)
        let revision = try await store.revision()
        var nodes: [NodeRecord] = []
        for row in try await store.list(kind: InternalKind.node, namespace: nil) {
            if let n = try? InternalJSON.decode(NodeRecord.self, row.body) { nodes.append(n) }
        }
        var workloads: [Resource] = []
        for row in try await store.list(kind: ResourceKind.workload.rawValue, namespace: nil) {
            workloads.append(try row.decodedResource())
        }
        return .json(StatusReportBuilder.build(revision: revision, version: versions.current.version, nodes: nodes, workloads: workloads))
    }

    func health() async throws -> APIResponse {
        let revision = try await store.revision()
        return .json(["status": "ok", "revision": .int(revision)])
    }

    /// A body that is JSON but not the shape asked for: 422 with the path.
    static func invalid(_ error: DecodingError) -> APIError {
        func path(_ keys: [any CodingKey]) -> String {
            var s = ""
            for k in keys {
                if let i = k.intValue { s += "[\(i)]" } else { s += (s.isEmpty ? "" : ".") + k.stringValue }
            }
            return s
        }
        switch error {
        case .keyNotFound(let key, let context):
            return APIError(.invalid, "is required", field: path(context.codingPath + [key]))
        case .typeMismatch(let type, let context):
            return APIError(.invalid, "expected \(type)", field: path(context.codingPath))
        case .valueNotFound(let type, let context):
            return APIError(.invalid, "expected \(type), found null", field: path(context.codingPath))
        case .dataCorrupted(let context):
            return APIError(.invalid, context.debugDescription, field: path(context.codingPath))
        @unknown default:
            return APIError(.invalid, "\(error)")
        }
    }
}
