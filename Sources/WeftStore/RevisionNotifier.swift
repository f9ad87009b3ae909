import Synchronization

/// Wakes long-poll watchers when a revision (or any number that only grows)
/// moves. In-process: the stores feed it from their commits (and, for etcd,
/// from a watch); weft-control feeds one with snapshot versions.
public final class RevisionNotifier: Sendable {
    private struct Waiter {
        let above: Int64
        let continuation: CheckedContinuation<Int64, Never>
    }

    private struct State {
        var revision: Int64 = 0
        var waiters: [UInt64: Waiter] = [:]
        var nextID: UInt64 = 0
        /// Timed out before their waiter was registered.
        var expired: Set<UInt64> = []
    }

    private let state = Mutex(State())

    public init() {}

    public func publish(_ revision: Int64) {
        let ready = state.withLock { s -> [Waiter] in
            guard revision > s.revision else { return [] }
            s.revision = revision
            let due = s.waiters.filter { $0.value.above < revision }
            for id in due.keys { s.waiters[id] = nil }
            return Array(due.values)
        }
        for w in ready { w.continuation.resume(returning: revision) }
    }

    /// The number once it is above `above`, or at `timeout` (or when the task is cancelled) whatever it is then.
    public func wait(above: Int64, timeout: Duration) async -> Int64 {
        let id = state.withLock { s -> UInt64 in
            s.nextID += 1
            return s.nextID
        }
        let value = await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                do {
                    try await Task.sleep(for: timeout)
                    self.resume(id)
                } catch {}
            }
            // A cancelled watcher (its client went away) answers at once
            // rather than holding its waiter until the next change.
            let value = await withTaskCancellationHandler {
                await withCheckedContinuation { (c: CheckedContinuation<Int64, Never>) in
                    let now = state.withLock { s -> Int64? in
                        if s.revision > above || s.expired.remove(id) != nil { return s.revision }
                        s.waiters[id] = Waiter(above: above, continuation: c)
                        return nil
                    }
                    if let now { c.resume(returning: now) }
                }
            } onCancel: {
                self.resume(id)
            }
            group.cancelAll()
            return value
        }
        // The timer may have fired just as the revision moved.
        state.withLock { _ = $0.expired.remove(id) }
        return value
    }

    private func resume(_ id: UInt64) {
        let (waiter, rev) = state.withLock { s in
            let w = s.waiters.removeValue(forKey: id)
            if w == nil { s.expired.insert(id) }
            return (w, s.revision)
        }
        waiter?.continuation.resume(returning: rev)
    }
}
