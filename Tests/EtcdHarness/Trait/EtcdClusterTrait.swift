@_exported import WeftEtcdHarness
import Testing

/// Starts a three-member etcd cluster around the suite it is attached to and
/// tears it down when the suite ends, whatever its tests did. Tests reach it
/// with ``EtcdClusterTrait/required()``.
public struct EtcdClusterTrait: SuiteTrait, TestScoping {
    @TaskLocal public static var current: EtcdCluster?

    public var isRecursive: Bool { false }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let cluster = try await EtcdCluster.start(members: 3)
        defer { cluster.stop() }
        try await Self.$current.withValue(cluster) { try await function() }
    }

    public static func required() throws -> EtcdCluster {
        guard let current else { throw HarnessError("no etcd cluster: the suite needs the .etcdCluster trait") }
        return current
    }
}

extension Trait where Self == EtcdClusterTrait {
    public static var etcdCluster: Self { EtcdClusterTrait() }
}
