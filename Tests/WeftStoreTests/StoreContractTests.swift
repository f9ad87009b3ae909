import AsyncHTTPClient
import Foundation
import NIOCore
import Testing
import WeftEtcdTesting
@testable import WeftStore

/// The contract every ResourceStore keeps, run against each backend: the
/// embedded SQLite store and the etcd store (on a three-member etcd cluster
/// that the suite starts on loopback and always tears down). Each test takes a
/// fresh store: a new SQLite file, or a new key prefix in the shared cluster,
/// so etcd revisions are compared relative to where the store started.
@Suite(.etcdCluster) struct StoreContract {
    struct Backend: CustomTestStringConvertible, Sendable {
        let name: String
        let make: @Sendable () async throws -> (any ResourceStore, cleanup: @Sendable () async -> Void)
        var testDescription: String { name }
    }

    static let backends: [Backend] = [
        Backend(name: "sqlite") {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-store-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let store = try SQLiteStore(path: dir.appendingPathComponent("weft.db").path)
            return (store, { try? FileManager.default.removeItem(at: dir) })
        },
        Backend(name: "etcd") {
            let cluster = try EtcdClusterTrait.required()
            let store = try await EtcdStore.connect(endpoints: cluster.clientURLs, prefix: "/contract-\(UUID().uuidString)/")
            return (store, { await store.shutdown() })
        },
    ]

    let shop = ResourceKey(kind: "Namespace", name: "shop")
    let svc = ResourceKey(kind: "Service", namespace: "shop", name: "catalog")

    @Test(arguments: backends)
    func commitsBumpOneRevisionAndStampResourceVersions(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        #expect(try await store.revision() == 0, "a new store has written nothing")
        let r1 = try await store.commit([.put(shop, body: "{}"), .put(svc, body: "{\"a\":1}")])
        #expect(r1.revision > 0)
        #expect(try await store.revision() == r1.revision)
        #expect(try await store.get(svc)?.resourceVersion == r1.revision)
        #expect(try await store.get(svc)?.generation == 1)
        #expect(r1.written.map(\.key) == [shop, svc] && r1.written.allSatisfy { $0.resourceVersion == r1.revision })
        let r2 = try await store.commit([.put(svc, body: "{\"a\":2}")])
        #expect(r2.revision > r1.revision)
        #expect(try await store.revision() == r2.revision)
        let now = try #require(try await store.get(svc))
        #expect(now.resourceVersion == r2.revision && now.generation == 2 && now.createdRevision == r1.revision && now.body == "{\"a\":2}")
        #expect(try await store.get(shop)?.resourceVersion == r1.revision)
        // A put that does not bump the generation keeps it.
        let r3 = try await store.commit([.put(svc, body: "{\"a\":2,\"s\":1}", bumpGeneration: false)])
        #expect(r3.written.first?.generation == 2)
        #expect(try await store.get(svc)?.generation == 2)
    }

    @Test(arguments: backends)
    func aStaleResourceVersionIsAConflictAndWritesNothing(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        let v1 = try await store.commit([.put(svc, body: "v1")]).revision
        let v2 = try await store.commit([.put(svc, body: "v2", expectedVersion: v1)]).revision
        await #expect(throws: StoreError.self) {
            try await store.commit([.put(shop, body: "x"), .put(svc, body: "v3", expectedVersion: v1)])
        }
        #expect(try await store.get(svc)?.body == "v2")
        #expect(try await store.get(shop) == nil, "the whole batch must be refused")
        #expect(try await store.revision() == v2)
        do {
            try await store.commit([.put(svc, body: "again", expectedVersion: 0)])
            Issue.record("create over an existing resource was accepted")
        } catch let e as StoreError {
            #expect(e.code == .conflict)
            #expect(e.message.contains("resourceVersion \(v2)"))
        }
        do {
            try await store.commit([.delete(svc, expectedVersion: v1)])
            Issue.record("a delete at a stale version was accepted")
        } catch let e as StoreError {
            #expect(e.code == .conflict)
        }
        #expect(try await store.get(svc)?.body == "v2")
    }

    @Test(arguments: backends)
    func deletingTheMissingFailsAndDeletesAreLogged(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        let put = try await store.commit([.put(svc, body: "v1")]).revision
        do {
            try await store.commit([.delete(shop)])
            Issue.record("deleting a missing object was accepted")
        } catch let e as StoreError {
            #expect(e.code == .notFound)
        }
        let deleted = try await store.commit([.delete(svc)]).revision
        #expect(try await store.get(svc) == nil)
        let log = try await store.changes(after: 0)
        #expect(log.map(\.kind) == [.put, .delete])
        #expect(log.map(\.revision) == [put, deleted])
        #expect(log.allSatisfy { $0.key == svc })
        #expect(try await store.changes(after: put).map(\.revision) == [deleted])
        #expect(try await store.changes(after: deleted).isEmpty)
    }

    @Test(arguments: backends)
    func listFiltersByKindAndNamespace(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        try await store.commit([
            .put(shop, body: "{}"), .put(svc, body: "{}"),
            .put(ResourceKey(kind: "Service", namespace: "lab", name: "x"), body: "{}"),
        ])
        #expect(try await store.list(kind: "Service", namespace: nil).count == 2)
        #expect(try await store.list(kind: "Service", namespace: "shop").map(\.key) == [svc])
        #expect(try await store.list(kind: nil, namespace: nil).count == 3)
        // Several kinds at once: every one asked, in key order, nothing else.
        try await store.commit([.put(ResourceKey(kind: "_Node", name: "n1"), body: "{}")])
        let both = try await store.list(kinds: ["Service", shop.kind])
        #expect(both.map(\.key) == [shop, ResourceKey(kind: "Service", namespace: "lab", name: "x"), svc].sorted())
        #expect(try await store.list(kinds: []).isEmpty)
    }

    @Test(arguments: backends)
    func aWatcherWakesOnTheNextCommitAndTimesOutOtherwise(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        let start = ContinuousClock.now
        #expect(try await store.waitForRevision(above: 0, timeout: .milliseconds(100)) == 0)
        #expect(ContinuousClock.now - start >= .milliseconds(90))
        async let woke = store.waitForRevision(above: 0, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(50))
        let committed = try await store.commit([.put(shop, body: "{}")]).revision
        #expect(try await woke == committed)
        // Already above: answers at once.
        let again = ContinuousClock.now
        #expect(try await store.waitForRevision(above: 0, timeout: .seconds(10)) == committed)
        #expect(ContinuousClock.now - again < .seconds(5))
    }
}

@Suite struct SQLitePersistence {
    @Test func stateSurvivesReopeningTheFile() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("weft.db").path
        let key = ResourceKey(kind: "Service", namespace: "shop", name: "catalog")
        do {
            let store = try SQLiteStore(path: path)
            try await store.commit([.put(key, body: "{\"v\":1}")])
            try await store.commit([.put(key, body: "{\"v\":2}")])
        }
        let reopened = try SQLiteStore(path: path)
        #expect(try await reopened.revision() == 2)
        #expect(try await reopened.get(key)?.body == "{\"v\":2}")
        #expect(try await reopened.changes(after: 1).count == 1)
    }

    @Test func oldChangesAreCompactedAndWatchersAreToldToRelist() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: dir.appendingPathComponent("weft.db").path, retainedChanges: 3)
        let key = ResourceKey(kind: "Namespace", name: "shop")
        for i in 1...10 { try await store.commit([.put(key, body: "\(i)")]) }
        #expect(try await store.changes(after: 7).count == 3)
        do {
            _ = try await store.changes(after: 2)
            Issue.record("compacted changes were served")
        } catch let e as StoreError {
            #expect(e.code == .compacted)
        }
    }

    @Test func anUnwritableLocationNamesThePath() {
        do {
            _ = try SQLiteStore(path: "/nonexistent-dir-\(UUID().uuidString)/weft.db")
            Issue.record("opened a store in a missing folder")
        } catch let e as StoreError {
            #expect(e.message.contains("nonexistent-dir"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}

@Suite struct RevisionWatchCancellation {
    @Test func aCancelledWatcherReturnsAtOnceInsteadOfWaitingForTheNextChange() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = try SQLiteStore(path: dir.appendingPathComponent("weft.db").path)
        let watcher = Task { try await store.waitForRevision(above: 0, timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(50))
        let cancelled = ContinuousClock.now
        watcher.cancel()
        #expect(try await watcher.value == 0)
        // Well under the 30 s it would otherwise wait, with room for a full test
        // run (etcd clusters starting, servers under load) on two cores.
        let waited = ContinuousClock.now - cancelled
        #expect(waited < .seconds(15), "the cancelled watcher answered after \(waited)")
    }
}

extension StoreContract {
    @Test(arguments: backends)
    func keysRoundTripWhateverTheirCharacters(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        let odd = ResourceKey(kind: "_VirtualIP", namespace: "", name: "fd00::a/b%2Fc")
        let plain = ResourceKey(kind: "_VirtualIP", namespace: "", name: "fd00::a")
        try await store.commit([.put(odd, body: "1"), .put(plain, body: "2")])
        #expect(try await store.get(odd)?.body == "1")
        #expect(try await store.list(kind: "_VirtualIP", namespace: nil).map(\.key) == [plain, odd])
        #expect(try await store.changes(after: 0).map(\.key).sorted() == [plain, odd])
    }

    @Test(arguments: backends)
    func aKeyMutatedTwiceInOneCommitEndsAsItsLastMutation(backend: Backend) async throws {
        let (store, cleanup) = try await backend.make()
        defer { Task { await cleanup() } }
        let r = try await store.commit([.put(svc, body: "a"), .put(svc, body: "b")])
        #expect(try await store.get(svc)?.body == "b")
        #expect(r.written.last?.body == "b")
    }
}

/// What only a shared store can show: two stores (two weft-control replicas)
/// on the same etcd prefix.
@Suite(.etcdCluster) struct EtcdSharedStore {
    let key = ResourceKey(kind: "Service", namespace: "shop", name: "catalog")

    func pair() async throws -> (EtcdStore, EtcdStore) {
        let cluster = try EtcdClusterTrait.required()
        let prefix = "/shared-\(UUID().uuidString)/"
        // Each replica talks to a different member first.
        let a = try await EtcdStore.connect(endpoints: cluster.clientURLs, prefix: prefix)
        let b = try await EtcdStore.connect(endpoints: Array(cluster.clientURLs.reversed()), prefix: prefix)
        return (a, b)
    }

    @Test func aWatcherOnOneStoreWakesOnACommitThroughTheOther() async throws {
        let (a, b) = try await pair()
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let start = try await b.revision()
        async let woke = b.waitForRevision(above: start, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(100))
        let committed = try await a.commit([.put(key, body: "v1")]).revision
        #expect(try await woke == committed)
        #expect(try await b.get(key)?.resourceVersion == committed)
        #expect(try await b.changes(after: start).map(\.revision) == [committed])
    }

    @Test func racingCompareAndSwapsThroughTwoStoresLetExactlyOneWin() async throws {
        let (a, b) = try await pair()
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let v1 = try await a.commit([.put(key, body: "v1")]).revision
        for round in 0..<10 {
            let base = try #require(try await a.get(key)).resourceVersion
            async let fromA: Bool = { do { try await a.commit([.put(key, body: "a\(round)", expectedVersion: base)]); return true } catch let e as StoreError where e.code == .conflict { return false } }()
            async let fromB: Bool = { do { try await b.commit([.put(key, body: "b\(round)", expectedVersion: base)]); return true } catch let e as StoreError where e.code == .conflict { return false } }()
            let (wa, wb) = try await (fromA, fromB)
            #expect(wa != wb, "round \(round): exactly one of two writers at version \(base) may win (a: \(wa), b: \(wb))")
            let body = try await b.get(key)?.body
            #expect(body == (wa ? "a\(round)" : "b\(round)"))
        }
        #expect(try await a.get(key)!.resourceVersion > v1)
        // Creating what the other store just created is a conflict too.
        let other = ResourceKey(kind: "Namespace", name: "lab")
        try await a.commit([.put(other, body: "{}", expectedVersion: 0)])
        await #expect(throws: StoreError.self) { try await b.commit([.put(other, body: "{}", expectedVersion: 0)]) }
    }

    @Test func badEndpointsAreRefusedNamingTheFlag() async throws {
        for endpoints in [[], ["127.0.0.1:2379"], ["https://127.0.0.1:2379"], ["http://127.0.0.1"]] {
            do {
                _ = try await EtcdStore.connect(endpoints: endpoints)
                Issue.record("\(endpoints) was accepted")
            } catch let e as StoreError {
                #expect(e.message.contains("--etcd-endpoints"), "\(e)")
            }
        }
        // Nothing listens there: a clear error at connect, not later.
        let port = try EtcdCluster.freePorts(1)[0]
        do {
            _ = try await EtcdStore.connect(endpoints: ["http://127.0.0.1:\(port)"], requestTimeout: .seconds(2))
            Issue.record("connected to nothing")
        } catch let e as StoreError {
            #expect(e.message.contains("cannot reach etcd") && e.message.contains("\(port)"), "\(e)")
        }
    }
}

/// Its own cluster: compaction is cluster-wide, and would cut the history
/// other suites' stores are reading.
@Suite(.dedicatedEtcdCluster, .serialized) struct EtcdCompaction {
    let key = ResourceKey(kind: "Service", namespace: "shop", name: "catalog")

    func pair() async throws -> (EtcdStore, EtcdStore) {
        try await EtcdSharedStore().pair()
    }

    @Test func changesCompactedAwayInEtcdAreReportedAsCompacted() async throws {
        let (a, b) = try await pair()
        defer { Task { await a.shutdown(); await b.shutdown() } }
        let first = try await a.commit([.put(key, body: "1")]).revision
        try await a.commit([.put(key, body: "2")])
        let last = try await a.commit([.put(key, body: "3")]).revision
        try await compact(at: last, try EtcdClusterTrait.required())
        do {
            _ = try await b.changes(after: first)
            Issue.record("changes from before the compaction were served")
        } catch let e as StoreError {
            #expect(e.code == .compacted, "\(e)")
        }
        #expect(try await b.changes(after: last).isEmpty)
        #expect(try await b.get(key)?.body == "3", "compaction keeps the current values")
    }

    @Test func storesOpenedAfterACompactionStillWakeOnEachOthersCommits() async throws {
        let (a, b) = try await pair()
        let last = try await a.commit([.put(key, body: "1")]).revision
        try await compact(at: last, try EtcdClusterTrait.required())
        await a.shutdown()
        await b.shutdown()
        // A new prefix (its head watch starts from revision 1, long compacted) and a second store on it.
        let (c, d) = try await pair()
        defer { Task { await c.shutdown(); await d.shutdown() } }
        async let woke = d.waitForRevision(above: 0, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(200))
        let committed = try await c.commit([.put(key, body: "2")]).revision
        #expect(try await woke == committed)
    }

    private func compact(at revision: Int64, _ cluster: EtcdCluster) async throws {
        var request = HTTPClientRequest(url: cluster.clientURLs[0] + "/v3/kv/compaction")
        request.method = .POST
        request.body = .bytes(ByteBuffer(string: #"{"revision": "\#(revision)", "physical": true}"#))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        _ = try await response.body.collect(upTo: 1 << 20)
        #expect(response.status == .ok)
    }

}
