import Foundation
import X509

/// When to renew a certificate, and how long to wait between attempts when the CA cannot be
/// reached. Pure: the caller owns the clock and the timers, and keeps serving with the last
/// valid certificate while retrying.
///
/// Renewal at half-life follows Istio: with the 24-hour default a workload has 12 hours of
/// CA outage in hand before anything expires. (Linkerd renews at 70%; pass `fraction: 0.7`.)
public struct RenewalSchedule: Hashable, Sendable {
    /// The share of the lifetime after which to renew, in [0, 1].
    public var fraction: Double
    /// The first retry delay; each further attempt doubles it.
    public var initialBackoff: Duration
    /// No retry waits longer than this, so a node notices a recovered CA within one cap.
    public var maxBackoff: Duration
    /// How much of each delay is randomised, in [0, 1]: the delay is drawn uniformly from
    /// [(1 - jitter)·d, d]. It spreads a fleet's retries after a CA outage instead of having
    /// every node knock at the same instant.
    public var jitter: Double

    public init(
        fraction: Double = 0.5,
        initialBackoff: Duration = .seconds(1),
        maxBackoff: Duration = .seconds(300),
        jitter: Double = 0.5
    ) {
        self.fraction = fraction
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
        self.jitter = jitter
    }

    /// The moment to start renewing: `fraction` of the way from notBefore to notAfter. If it is
    /// already past (say weftd restarted with an old certificate), renew now.
    public func renewAt(notBefore: Date, notAfter: Date) -> Date {
        let lifetime = max(0, notAfter.timeIntervalSince(notBefore))
        // Clamped here, not in init, because the properties are settable.
        return notBefore.addingTimeInterval(lifetime * min(max(fraction, 0), 1))
    }

    /// The mesh CA back-dates notBefore by ``MeshCA/clockSkewAllowance``; the
    /// lifetime that counts is from issuance, or a short-lived certificate
    /// would fall due the moment it arrives.
    public func renewAt(_ certificate: Certificate) -> Date {
        let issued = min(certificate.notValidBefore.addingTimeInterval(MeshCA.clockSkewAllowance.timeInterval),
                         certificate.notValidAfter)
        return renewAt(notBefore: issued, notAfter: certificate.notValidAfter)
    }

    /// The delay before retry number `attempt` (0 for the first retry), before jitter:
    /// `initialBackoff · 2^attempt`, capped at `maxBackoff`.
    public func baseDelay(attempt: Int) -> Duration {
        let initial = initialBackoff.timeInterval, cap = maxBackoff.timeInterval
        // Past 2^62 the product only overflows; the cap has long been reached by then.
        let grown = initial * pow(2, Double(min(max(attempt, 0), 62)))
        return .seconds(min(grown, cap))
    }

    /// The delay before retry number `attempt`, with jitter drawn from `rng`. Never more than
    /// `maxBackoff`, never less than `(1 - jitter)` times ``baseDelay(attempt:)``.
    public func retryDelay(attempt: Int, using rng: inout some RandomNumberGenerator) -> Duration {
        let base = baseDelay(attempt: attempt).timeInterval
        let u = Double.random(in: 0..<1, using: &rng)
        return .seconds(base * (1 - min(max(jitter, 0), 1) * u))
    }

    public func retryDelay(attempt: Int) -> Duration {
        var rng = SystemRandomNumberGenerator()
        return retryDelay(attempt: attempt, using: &rng)
    }
}
