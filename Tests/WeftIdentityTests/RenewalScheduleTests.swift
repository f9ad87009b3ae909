import Crypto
import Foundation
import Testing
import WeftIdentity

@Suite("Renewal schedule")
struct RenewalScheduleTests {
    @Test func renewsAtHalfLifeLikeIstio() {
        let schedule = RenewalSchedule()
        #expect(schedule.renewAt(notBefore: t0, notAfter: t0.addingTimeInterval(86400)) == t0.addingTimeInterval(43200))
    }

    @Test func renewsAtHalfOfAnIssuedCertificatesRealLifetime() throws {
        let ca = try MeshCA.create(trustDomain: td, now: t0)
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        // Half of the lifetime from issuance; the one-minute backdate is not lifetime.
        #expect(RenewalSchedule().renewAt(leaf) == t0.addingTimeInterval(86400 / 2))
    }

    @Test func aShortLivedCertificateIsNotDueTheMomentItArrives() throws {
        let ca = try MeshCA.create(trustDomain: td, now: t0)
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), ttl: .seconds(30), now: t0)
        #expect(RenewalSchedule().renewAt(leaf) == t0.addingTimeInterval(15))
    }

    @Test func fractionIsConfigurableLikeLinkerdsSeventyPercent() {
        let linkerd = RenewalSchedule(fraction: 0.7)
        #expect(linkerd.renewAt(notBefore: t0, notAfter: t0.addingTimeInterval(1000)) == t0.addingTimeInterval(700))
    }

    @Test func backoffDoublesFromOneSecondAndCapsAtFiveMinutes() {
        let schedule = RenewalSchedule()
        let delays = (0..<12).map { schedule.baseDelay(attempt: $0) }
        #expect(delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map { Duration.seconds($0) })
        #expect(schedule.baseDelay(attempt: 10_000) == .seconds(300))
        #expect(schedule.baseDelay(attempt: Int.max) == .seconds(300))
        #expect(schedule.baseDelay(attempt: -3) == .seconds(1))
    }

    @Test func jitteredDelaysStayWithinTheirBandAndUnderTheCap() {
        let schedule = RenewalSchedule()
        var rng = SplitMix64(seed: 1)
        for attempt in 0..<40 {
            for _ in 0..<50 {
                let d = schedule.retryDelay(attempt: attempt, using: &rng)
                let base = schedule.baseDelay(attempt: attempt)
                #expect(d <= base)
                #expect(d >= base / 2)
                #expect(d <= .seconds(300))
            }
        }
    }

    @Test func jitterSpreadsRetriesAndIsDeterministicForASeed() {
        let schedule = RenewalSchedule()
        var a = SplitMix64(seed: 9), b = SplitMix64(seed: 9)
        let first = (0..<20).map { _ in schedule.retryDelay(attempt: 12, using: &a) }
        let second = (0..<20).map { _ in schedule.retryDelay(attempt: 12, using: &b) }
        #expect(first == second)
        #expect(Set(first).count > 15, "twenty nodes retrying after an outage do not all pick the same instant")
    }

    @Test func zeroJitterGivesExactDelays() {
        let schedule = RenewalSchedule(jitter: 0)
        var rng = SplitMix64(seed: 3)
        #expect(schedule.retryDelay(attempt: 3, using: &rng) == .seconds(8))
    }
}
