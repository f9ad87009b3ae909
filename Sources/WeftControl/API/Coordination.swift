import Synchronization
import WeftStore

/// Runs the server's writes one at a time, in this process.
///
/// Checks that span several objects (virtual IPs unique across Services, a
/// Namespace empty before it is deleted, a token redeemed once) read the store,
/// decide, then commit; two such writes interleaving could each pass its check
/// and together break the rule. With the embedded store this process is the
/// only writer, so serialising here is enough. With replicas sharing etcd it is
/// not: there the compare-and-swap versions every commit carries are the guard
/// (each object read is expected at the version read, a virtual IP is claimed
/// by creating `_VirtualIP/<address>`, a token is spent by a swap on its
/// record), and a lost race is a 409 Conflict, never a silent overwrite.
final class WriteSerializer: Sendable {
    private struct State {
        var busy = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        do {
            let value = try await body()
            release()
            return value
        } catch {
            release()
            throw error
        }
    }

    private func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let runNow = state.withLock { s -> Bool in
                if s.busy { s.waiting.append(c); return false }
                s.busy = true
                return true
            }
            if runNow { c.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty { s.busy = false; return nil }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}

/// The snapshot version: the store revision of the last change to a user
/// resource.
///
/// Agents long-poll on it rather than on the raw store revision because node
/// status reports are stored too: if every report moved the version, each report
/// would wake every agent, which would re-apply and report again, for ever.
///
/// `seen` is the store revision up to which `version` is exact: every commit up
/// to it was read from the store's change log. Commits after it — this
/// process's own, or another replica's — are found in the log by ``refresh(from:)``.
/// Versions are store revisions, so replicas sharing a store agree on them and
/// an agent keeps its place when it moves to another replica.
final class SnapshotVersion: Sendable {
    private struct State {
        var version: Int64
        var seen: Int64
        var refreshing: (id: Int, task: Task<Void, any Error>)?
        var refreshCount = 0
    }

    private let state: Mutex<State>
    /// Long polls wait here, on the version itself: a node report moves the
    /// store's revision but wakes none of them.
    private let waiters = RevisionNotifier()

    init(version: Int64, seen: Int64) {
        state = Mutex(State(version: version, seen: seen))
        waiters.publish(version)
    }

    /// The version once it is above `above`, or at `timeout`.
    func wait(above: Int64, timeout: Duration) async -> Int64 {
        await waiters.wait(above: above, timeout: timeout)
    }

    /// Reads the change log each time the store's revision moves, for as long as
    /// the task runs: one reader per process, however many polls wait.
    func follow(_ store: any ResourceStore) async {
        while !Task.isCancelled {
            let seen = current.seen
            do {
                if try await store.waitForRevision(above: seen, timeout: .seconds(10)) > seen {
                    try await refresh(from: store)
                }
            } catch {
                // The store is unreachable for now; polls keep the version they have.
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Reads the version from the store's change log (once, at start).
    static func load(from store: any ResourceStore) async throws -> SnapshotVersion {
        let revision = try await store.revision()
        do {
            let changes = try await store.changes(after: 0)
            let last = changes.last { !InternalKind.isInternal($0.key.kind) }?.revision ?? 0
            return SnapshotVersion(version: last, seen: max(revision, changes.last?.revision ?? 0))
        } catch let error as StoreError where error.code == .compacted {
            // The log no longer reaches back: take the revision itself, so every
            // agent fetches one (identical) snapshot and carries on.
            return SnapshotVersion(version: revision, seen: revision)
        }
    }

    var current: (version: Int64, seen: Int64) { state.withLock { ($0.version, $0.seen) } }

    /// Called after each commit of this process. `seen` is left alone: another
    /// replica may have committed just before, and only the log says what.
    func record(revision: Int64, touchesResources: Bool) {
        guard touchesResources else { return }
        let version = state.withLock { s in
            s.version = max(s.version, revision)
            return s.version
        }
        waiters.publish(version)
    }

    /// Catches up with the store's change log. Callers arriving while a read is
    /// under way share the *next* read (after an apply, every waiting poll asks
    /// at once): the one under way may have read the log before the commit
    /// the caller must see, so it is waited for, not taken as the answer.
    func refresh(from store: any ResourceStore) async throws {
        let before = state.withLock { $0.refreshing }
        if let before { _ = try? await before.task.value }
        let task = state.withLock { s -> Task<Void, any Error> in
            // One started after this caller arrived reads everything it must see.
            if let running = s.refreshing, running.id != before?.id { return running.task }
            s.refreshCount += 1
            let id = s.refreshCount
            let task = Task { [self] in
                defer { state.withLock { if $0.refreshing?.id == id { $0.refreshing = nil } } }
                try await catchUp(store)
            }
            s.refreshing = (id, task)
            return task
        }
        try await task.value
    }

    private func catchUp(_ store: any ResourceStore) async throws {
        let seen = current.seen
        do {
            let changes = try await store.changes(after: seen)
            guard let last = changes.last?.revision else { return }
            let resource = changes.last { !InternalKind.isInternal($0.key.kind) }?.revision
            let version = state.withLock { s in
                if let resource { s.version = max(s.version, resource) }
                s.seen = max(s.seen, last)
                return s.version
            }
            waiters.publish(version)
        } catch let error as StoreError where error.code == .compacted {
            // Too far behind for the log: every agent takes the current state.
            let revision = try await store.revision()
            let version = state.withLock { s in
                s.version = max(s.version, revision)
                s.seen = max(s.seen, revision)
                return s.version
            }
            waiters.publish(version)
        }
    }
}

/// One ``ClusterView`` per snapshot version, loaded once however many agents
/// ask for it at the same moment (after an apply, all of them do).
final class ClusterViewCache: Sendable {
    private let entry = Mutex<(version: Int64, task: Task<ClusterView, any Error>)?>(nil)

    func view(version: Int64, load: @escaping @Sendable () async throws -> ClusterView) async throws -> ClusterView {
        let task = entry.withLock { e -> Task<ClusterView, any Error> in
            if let e, e.version == version { return e.task }
            let t = Task { try await load() }
            // A late request for an older version must not evict the newest.
            if (e?.version ?? .min) < version { e = (version, t) }
            return t
        }
        do {
            return try await task.value
        } catch {
            // Do not keep a failure: the next caller tries again.
            entry.withLock { e in if e?.version == version { e = nil } }
            throw error
        }
    }
}

/// Lets graceful shutdown answer every waiting long poll at once.
///
/// A poll sleeps in a wait for the snapshot version; that wait runs in its own
/// task and the poll waits for whichever comes first: the version or the drain.
final class LongPollDrain: Sendable {
    private struct State {
        var draining = false
        var next: UInt64 = 0
        var waiting: [UInt64: CheckedContinuation<Int64?, any Error>] = [:]
    }

    private let state = Mutex(State())

    var isDraining: Bool { state.withLock { $0.draining } }

    func drain() {
        let waiting = state.withLock { s in
            s.draining = true
            defer { s.waiting = [:] }
            return s.waiting
        }
        for c in waiting.values { c.resume(returning: nil) }
    }

    /// What `waiting` answers, or nil when draining.
    func wait(_ waiting: @escaping @Sendable () async throws -> Int64) async throws -> Int64? {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Int64?, any Error>) in
            let id = state.withLock { s -> UInt64? in
                if s.draining { return nil }
                s.next += 1
                s.waiting[s.next] = c
                return s.next
            }
            guard let id else { return c.resume(returning: nil) }
            Task { [self] in
                let result: Result<Int64?, any Error>
                do {
                    result = .success(try await waiting())
                } catch {
                    result = .failure(error)
                }
                let waiter = state.withLock { $0.waiting.removeValue(forKey: id) }
                waiter?.resume(with: result)
            }
        }
    }
}
