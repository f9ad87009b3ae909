import Synchronization
import Testing
import WeftCore
@testable import WeftAgent

@Suite struct WorkloadDirectoryLookup {
    let app = WorkloadRef(namespace: try! NamespaceName("shop"), name: try! WorkloadName("app.service"))
    let late = WorkloadRef(namespace: try! NamespaceName("shop"), name: try! WorkloadName("late.service"))

    final class Counter: Sendable {
        let n = Atomic<Int>(0)
    }

    @Test func aUnitStartedSinceTheLastReconcileIsFoundByRescanning() {
        let dir = WorkloadDirectory()
        let late = self.late
        dir.replace([1: app]) { [1: self.app, 2: late] }
        #expect(dir.workload(cgroupID: 1) == app)
        #expect(dir.workload(cgroupID: 2) == late)
    }

    @Test func unknownCgroupsDoNotRescanOnEveryConnection() {
        let dir = WorkloadDirectory(rescanInterval: .seconds(60))
        let calls = Counter()
        dir.replace([1: app]) {
            calls.n.add(1, ordering: .relaxed)
            return [:]
        }
        for _ in 0..<1000 { #expect(dir.workload(cgroupID: 99) == nil) }
        #expect(calls.n.load(ordering: .relaxed) == 1)
    }
}
