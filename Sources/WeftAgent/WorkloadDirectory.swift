import Synchronization
import WeftCore

/// cgroup id → workload, for every cgroup of every known workload (a unit's
/// sub-cgroups included). Read by the proxy on each accepted connection;
/// rebuilt by the agent on each reconcile. On a miss (a unit started since
/// the last reconcile) it rescans, at most once per `rescanInterval`, so a
/// stream of connections from an unknown cgroup cannot turn into a stream of
/// filesystem walks on the data path.
public final class WorkloadDirectory: WorkloadResolver {
    private struct State {
        var byCgroup: [UInt64: WorkloadRef] = [:]
        var rescan: (@Sendable () -> [UInt64: WorkloadRef])?
        var lastRescan: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    private let rescanInterval: Duration

    public init(rescanInterval: Duration = .milliseconds(100)) {
        self.rescanInterval = rescanInterval
    }

    public func replace(_ table: [UInt64: WorkloadRef], rescan: @escaping @Sendable () -> [UInt64: WorkloadRef]) {
        state.withLock {
            $0.byCgroup = table
            $0.rescan = rescan
        }
    }

    public func workload(cgroupID: UInt64) -> WorkloadRef? {
        let now = ContinuousClock.now
        let (hit, rescan) = state.withLock { s -> (WorkloadRef?, (@Sendable () -> [UInt64: WorkloadRef])?) in
            if let hit = s.byCgroup[cgroupID] { return (hit, nil) }
            if let last = s.lastRescan, now - last < rescanInterval { return (nil, nil) }
            s.lastRescan = now
            return (nil, s.rescan)
        }
        if let hit { return hit }
        guard let rescan else { return nil }
        let fresh = rescan()
        state.withLock { $0.byCgroup.merge(fresh) { _, new in new } }
        return fresh[cgroupID]
    }
}
