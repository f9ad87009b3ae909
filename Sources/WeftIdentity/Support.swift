import Foundation
import X509

extension Duration {
    var timeInterval: TimeInterval {
        let (s, atto) = components
        return TimeInterval(s) + TimeInterval(atto) * 1e-18
    }

    static func hours(_ h: Int) -> Duration { .seconds(h * 3600) }
    static func days(_ d: Int) -> Duration { .seconds(d * 86400) }
}

extension RandomNumberGenerator {
    mutating func bytes(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count + 8)
        while out.count < count {
            withUnsafeBytes(of: next()) { out.append(contentsOf: $0) }
        }
        return Array(out.prefix(count))
    }
}

extension Certificate.SerialNumber {
    /// 128 random bits. The DER encoder treats the bytes as unsigned and prepends a zero when
    /// the top bit is set, so the serial is always positive without giving up a bit of entropy.
    static func random128() -> Self {
        var rng = SystemRandomNumberGenerator()
        while true {
            let b = rng.bytes(16)
            // A serial of zero is invalid in RFC 5280; 2^-128 odds, but cheap to rule out.
            if b.contains(where: { $0 != 0 }) { return Self(bytes: b) }
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths, so that a caller
/// probing a secret learns nothing from how long a mismatch takes to report.
func constantTimeEqual(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}

/// Runs a throwing call from swift-certificates or swift-crypto and reports its failure as an
/// ``IdentityError`` carrying the given advice and the library's own reason.
func mapError<T>(_ code: IdentityError.Code, _ advice: @autoclosure () -> String, _ body: () throws -> T) throws(IdentityError) -> T {
    do {
        return try body()
    } catch let e as IdentityError {
        throw e
    } catch {
        throw IdentityError(code, "\(advice()) (\(error))")
    }
}

extension Date {
    /// RFC 3339 in UTC, for messages operators compare with `date -u` and `openssl x509 -dates`.
    var rfc3339: String {
        ISO8601DateFormatter().string(from: self)
    }
}
