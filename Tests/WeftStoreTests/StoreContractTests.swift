import Foundation
import Testing
@testable import WeftStore

/// The contract every ResourceStore keeps. Each test takes a fresh store from
/// `makeStores`, so another backend joins by adding itself there.
@Suite struct StoreContract {
    struct Backend: CustomTestStringConvertible, Sendable {
        let name: String
        let make: @Sendable () throws -> (any ResourceStore, cleanup: @Sendable () -> Void)
        var testDescription: String { name }
    }

    static let backends: [Backend] = [
        Backend(name: "sqlite") {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("weft-store-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let store = try SQLiteStore(path: dir.appendingPathComponent("weft.db").path)
            return (store, { try? FileManager.default.removeItem(at: dir) })
        },
    ]

    let shop = ResourceKey(kind: "Namespace", name: "shop")
    let svc = ResourceKey(kind: "Service", namespace: "shop", name: "catalog")

    @Test(arguments: backends)
    func commitsBumpOneRevisionAndStampResourceVersions(backend: Backend) async throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        #expect(try await store.revision() == 0)
        let r1 = try await store.commit([.put(shop, body: "{}"), .put(svc, body: "{\"a\":1}")])
        #expect(r1.revision == 1)
        #expect(try await store.get(svc)?.resourceVersion == 1)
        #expect(try await store.get(svc)?.generation == 1)
        let r2 = try await store.commit([.put(svc, body: "{\"a\":2}")])
        #expect(r2.revision == 2)
        let now = try #require(try await store.get(svc))
        #expect(now.resourceVersion == 2 && now.generation == 2 && now.createdRevision == 1 && now.body == "{\"a\":2}")
        #expect(try await store.get(shop)?.resourceVersion == 1)
    }

    @Test(arguments: backends)
    func aStaleResourceVersionIsAConflictAndWritesNothing(backend: Backend) async throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        try await store.commit([.put(svc, body: "v1")])
        try await store.commit([.put(svc, body: "v2", expectedVersion: 1)])
        await #expect(throws: StoreError.self) {
            try await store.commit([.put(shop, body: "x"), .put(svc, body: "v3", expectedVersion: 1)])
        }
        #expect(try await store.get(svc)?.body == "v2")
        #expect(try await store.get(shop) == nil, "the whole batch must be refused")
        #expect(try await store.revision() == 2)
        do {
            try await store.commit([.put(svc, body: "again", expectedVersion: 0)])
            Issue.record("create over an existing resource was accepted")
        } catch let e as StoreError {
            #expect(e.code == .conflict)
            #expect(e.message.contains("resourceVersion 2"))
        }
    }

    @Test(arguments: backends)
    func deletingTheMissingFailsAndDeletesAreLogged(backend: Backend) async throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        try await store.commit([.put(svc, body: "v1")])
        await #expect(throws: StoreError.self) { try await store.commit([.delete(shop)]) }
        try await store.commit([.delete(svc)])
        #expect(try await store.get(svc) == nil)
        let log = try await store.changes(after: 0)
        #expect(log.map(\.kind) == [.put, .delete])
        #expect(log.map(\.revision) == [1, 2])
    }

    @Test(arguments: backends)
    func listFiltersByKindAndNamespace(backend: Backend) async throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        try await store.commit([
            .put(shop, body: "{}"), .put(svc, body: "{}"),
            .put(ResourceKey(kind: "Service", namespace: "lab", name: "x"), body: "{}"),
        ])
        #expect(try await store.list(kind: "Service", namespace: nil).count == 2)
        #expect(try await store.list(kind: "Service", namespace: "shop").map(\.key) == [svc])
        #expect(try await store.list(kind: nil, namespace: nil).count == 3)
    }

    @Test(arguments: backends)
    func aWatcherWakesOnTheNextCommitAndTimesOutOtherwise(backend: Backend) async throws {
        let (store, cleanup) = try backend.make()
        defer { cleanup() }
        let start = ContinuousClock.now
        #expect(try await store.waitForRevision(above: 0, timeout: .milliseconds(100)) == 0)
        #expect(ContinuousClock.now - start >= .milliseconds(90))
        async let woke = store.waitForRevision(above: 0, timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(50))
        try await store.commit([.put(shop, body: "{}")])
        #expect(try await woke == 1)
        // Already above: answers at once.
        #expect(try await store.waitForRevision(above: 0, timeout: .seconds(10)) == 1)
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
        let start = ContinuousClock.now
        let watcher = Task { try await store.waitForRevision(above: 0, timeout: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(50))
        watcher.cancel()
        #expect(try await watcher.value == 0)
        // Far below the 30 s the watch would otherwise wait; generous, because
        // other suites run at the same time on a 2-core machine.
        #expect(ContinuousClock.now - start < .seconds(15))
    }
}
