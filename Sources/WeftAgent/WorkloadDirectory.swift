import Synchronization
import WeftCore

/// cgroup id → workload, for every cgroup of every known workload (a unit's
/// sub-cgroups included). Read by the proxy on each accepted connection;
/// rebuilt by the agent on each reconcile. On a miss (a unit started since
/// the last reconcile) it rescans once before answering "unknown".
public final class WorkloadDirectory: WorkloadResolver {
    private struct State {
        var byCgroup: [UInt64: WorkloadRef] = [:]
        var rescan: (@Sendable () -> [UInt64: WorkloadRef])?
    }

    private let state = Mutex(State())

    public init() {}

    public func replace(_ table: [UInt64: WorkloadRef], rescan: @escaping @Sendable () -> [UInt64: WorkloadRef]) {
        state.withLock {
            $0.byCgroup = table
            $0.rescan = rescan
        }
    }

    public func workload(cgroupID: UInt64) -> WorkloadRef? {
        let (hit, rescan) = state.withLock { ($0.byCgroup[cgroupID], $0.rescan) }
        if let hit { return hit }
        guard let rescan else { return nil }
        let fresh = rescan()
        state.withLock { $0.byCgroup.merge(fresh) { _, new in new } }
        return fresh[cgroupID]
    }
}
