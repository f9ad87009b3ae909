import Synchronization
import WeftCore

/// Counters the admin API reads. Atomics on the data path; the per-workload
/// table takes a lock once per connection, never per byte.
public final class ProxyStats: Sendable {
    public let accepted = Atomic<Int>(0)
    public let active = Atomic<Int>(0)
    public let noOriginalDestination = Atomic<Int>(0)
    public let upstreamConnectFailures = Atomic<Int>(0)
    public let unknownWorkload = Atomic<Int>(0)
    /// Connections to a service with no endpoint that answered (Envoy's UH/UF).
    public let noHealthyEndpoint = Atomic<Int>(0)
    public let bytesFromWorkloads = Atomic<Int>(0)
    public let bytesToWorkloads = Atomic<Int>(0)
    private let byWorkload = Mutex<[WorkloadRef: Int]>([:])

    public init() {}

    func countConnection(from workload: WorkloadRef?) {
        accepted.add(1, ordering: .relaxed)
        guard let workload else {
            unknownWorkload.add(1, ordering: .relaxed)
            return
        }
        byWorkload.withLock { $0[workload, default: 0] += 1 }
    }

    public func connections(by workload: WorkloadRef) -> Int {
        byWorkload.withLock { $0[workload] ?? 0 }
    }

    public struct Snapshot: Sendable, Codable {
        public var accepted: Int
        public var active: Int
        public var noOriginalDestination: Int
        public var upstreamConnectFailures: Int
        public var unknownWorkload: Int
        public var noHealthyEndpoint: Int
    }

    public func snapshot() -> Snapshot {
        Snapshot(
            accepted: accepted.load(ordering: .relaxed),
            active: active.load(ordering: .relaxed),
            noOriginalDestination: noOriginalDestination.load(ordering: .relaxed),
            upstreamConnectFailures: upstreamConnectFailures.load(ordering: .relaxed),
            unknownWorkload: unknownWorkload.load(ordering: .relaxed),
            noHealthyEndpoint: noHealthyEndpoint.load(ordering: .relaxed))
    }
}
