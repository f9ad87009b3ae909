import WeftProxy

/// `/debug/capture` (see docs/weftd.md).
public struct CaptureReport: Codable, Sendable {
    public struct NamespaceReport: Codable, Sendable {
        public var name: String
        public var mesh: Bool
        public var cgroup: String
        public var attached: Bool
    }

    public struct WorkloadReport: Codable, Sendable {
        public var namespace: String
        public var name: String
        public var cgroup: String
        public var cgroupID: UInt64
        public var netns: String
        public var captured: Bool
        public var hooks: [String]
        /// How many hooks a captured workload has.
        public var hooksExpected: Int
        public var connections: Int
        public var lastRepair: String?
        public var pids: Int
    }

    public struct ListenerReport: Codable, Sendable {
        public var netns: String
        public var addresses: [String]
    }

    public var node: String
    public var ready: Bool
    public var configGeneration: Int
    public var repairs: Int
    public var namespaces: [NamespaceReport]
    public var workloads: [WorkloadReport]
    public var listeners: [ListenerReport]
    public var maps: [String: Int]
    /// The weft-control snapshot applied (nil when the node runs from its file).
    public var appliedVersion: Int64?
    public var proxy: ProxyStats.Snapshot
    /// The DNS server's counters (nil when DNS is disabled).
    public var dns: DNSStats.Snapshot? = nil
}
