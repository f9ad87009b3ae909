@_exported import WeftEtcdHarness
import Testing

/// Gives the suite it is attached to a three-member etcd cluster, torn down
/// when the suite ends, whatever its tests did. Tests reach it with
/// ``EtcdClusterTrait/required()``.
///
/// Suites share one cluster (stopped when the last of them ends), so that a
/// test run does not start a dozen etcd processes on a two-core machine at
/// once; a suite that kills members or compacts history asks for a
/// `.dedicatedEtcdCluster` of its own.
public struct EtcdClusterTrait: SuiteTrait, TestScoping {
    @TaskLocal public static var current: EtcdCluster?

    let dedicated: Bool

    public var isRecursive: Bool { false }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let cluster = dedicated ? try await EtcdCluster.start(members: 3, goMaxProcs: 1) : try await SharedCluster.instance.acquire()
        do {
            try await Self.$current.withValue(cluster) { try await function() }
        } catch {
            if dedicated { cluster.stop() } else { await SharedCluster.instance.release() }
            throw error
        }
        if dedicated { cluster.stop() } else { await SharedCluster.instance.release() }
    }

    public static func required() throws -> EtcdCluster {
        guard let current else { throw HarnessError("no etcd cluster: the suite needs the .etcdCluster trait") }
        return current
    }
}

/// The cluster the suites share, and how many of them are using it.
actor SharedCluster {
    static let instance = SharedCluster()
    private var starting: Task<EtcdCluster, any Error>?
    private var users = 0

    func acquire() async throws -> EtcdCluster {
        users += 1
        if starting == nil { starting = Task { try await EtcdCluster.start(members: 3, goMaxProcs: 1) } }
        do {
            return try await starting!.value
        } catch {
            users -= 1
            if users == 0 { starting = nil }
            throw error
        }
    }

    func release() async {
        users -= 1
        guard users == 0, let starting else { return }
        self.starting = nil
        (try? await starting.value)?.stop()
    }
}

extension Trait where Self == EtcdClusterTrait {
    /// The cluster shared with other suites.
    public static var etcdCluster: Self { EtcdClusterTrait(dedicated: false) }
    /// A cluster of the suite's own, for tests that kill members or compact.
    public static var dedicatedEtcdCluster: Self { EtcdClusterTrait(dedicated: true) }
}
