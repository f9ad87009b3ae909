import Crypto
import Foundation

/// A one-time node join token, `weft.<id>.<secret>`, as handed to an operator once.
///
/// The id (40 bits) finds the record; the secret (160 bits, well over the 128 needed so that
/// guessing is hopeless even online) proves the holder was given the token. Both are lower-case
/// base32, so the token survives copy-paste, shells, YAML and URLs without quoting.
public struct BootstrapToken: Hashable, Sendable, CustomStringConvertible {
    public let id: String
    public let secret: String

    static let prefix = "weft"
    static let idBytes = 5
    static let secretBytes = 20
    static let idLength = 8
    static let secretLength = 32

    /// The full token, secret included: show it to the operator once, never log it.
    public var text: String { "\(Self.prefix).\(id).\(secret)" }

    /// Redacted, because tokens end up in string interpolation and logs by accident.
    public var description: String { "\(Self.prefix).\(id).<redacted>" }

    public init(parsing text: String) throws(IdentityError) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = trimmed.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == Self.prefix,
              parts[1].count == Self.idLength, parts[1].allSatisfy(Base32.isDigit),
              parts[2].count == Self.secretLength, parts[2].allSatisfy(Base32.isDigit) else {
            throw IdentityError(.tokenMalformed, "the bootstrap token is not of the form weft.<8 characters>.<32 characters> (lower-case letters and digits 2-7); copy the whole token as printed when it was created")
        }
        self.init(id: String(parts[1]), secret: String(parts[2]))
    }

    init(id: String, secret: String) {
        self.id = id
        self.secret = secret
    }
}

/// What the control plane stores for a token: never the secret, only its SHA-256.
///
/// A plain hash without salt or stretching is enough because the secret is 160 random bits,
/// not a password: there is no dictionary to precompute against.
public struct BootstrapTokenRecord: Hashable, Sendable, Codable {
    public var id: String
    /// SHA-256 of the secret's text, lower-case hex.
    public var secretSHA256: String
    public var createdAt: Date
    public var expiresAt: Date
    /// Set when the token is redeemed; a used token is kept (until it expires) so that a
    /// second use is reported as such rather than as an unknown token.
    public var usedAt: Date?

    public init(id: String, secretSHA256: String, createdAt: Date, expiresAt: Date, usedAt: Date? = nil) {
        self.id = id
        self.secretSHA256 = secretSHA256
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usedAt = usedAt
    }

    public var isUsed: Bool { usedAt != nil }
    public func isExpired(at now: Date) -> Bool { now >= expiresAt }
}

/// Creating and redeeming one-time node join tokens. Pure: persistence is the caller's, and
/// single use holds only if the caller stores the record ``redeem(_:records:now:)`` returns
/// before acting on it, atomically with respect to other redemptions (compare-and-swap on the
/// record, or one writer).
public enum BootstrapTokens {
    /// kubeadm's default: long enough to provision a node, short enough to go stale.
    public static let defaultTTL: Duration = .hours(24)

    public static func create(
        ttl: Duration = defaultTTL,
        now: Date = Date()
    ) throws(IdentityError) -> (token: BootstrapToken, record: BootstrapTokenRecord) {
        var rng = SystemRandomNumberGenerator()
        return try create(ttl: ttl, now: now, using: &rng)
    }

    /// As ``create(ttl:now:)`` with a chosen random source; for tests. In production the
    /// secret must come from the system's CSPRNG, which the other overload uses.
    public static func create(
        ttl: Duration,
        now: Date,
        using rng: inout some RandomNumberGenerator
    ) throws(IdentityError) -> (token: BootstrapToken, record: BootstrapTokenRecord) {
        guard ttl > .zero else {
            throw IdentityError(.invalidTTL, "a bootstrap token's lifetime must be positive, got \(ttl)")
        }
        let token = BootstrapToken(
            id: Base32.encode(rng.bytes(BootstrapToken.idBytes)),
            secret: Base32.encode(rng.bytes(BootstrapToken.secretBytes))
        )
        let record = BootstrapTokenRecord(
            id: token.id,
            secretSHA256: hash(token.secret),
            createdAt: now,
            expiresAt: now.addingTimeInterval(ttl.timeInterval)
        )
        return (token, record)
    }

    /// Checks `token` against `records` and returns its record marked used.
    ///
    /// The secret is compared in constant time and before anything else about the record is
    /// revealed, so someone who knows only a token's id learns nothing about its state.
    public static func redeem(
        _ token: String,
        records: some Sequence<BootstrapTokenRecord>,
        now: Date = Date()
    ) throws(IdentityError) -> BootstrapTokenRecord {
        let parsed = try BootstrapToken(parsing: token)
        guard var record = records.first(where: { $0.id == parsed.id }) else {
            throw IdentityError(.tokenUnknown, "bootstrap token \(parsed) is not known to this control plane; it was never created here, or was deleted after expiring — create a new one")
        }
        guard constantTimeEqual(Array(hash(parsed.secret).utf8), Array(record.secretSHA256.utf8)) else {
            throw IdentityError(.tokenSecretMismatch, "bootstrap token \(parsed) has the wrong secret; check that the whole token was copied")
        }
        if let used = record.usedAt {
            throw IdentityError(.tokenAlreadyUsed, "bootstrap token \(parsed) was already used at \(used.rfc3339); tokens join one node once — create a new one (and find out who used it if that was not you)")
        }
        guard !record.isExpired(at: now) else {
            throw IdentityError(.tokenExpired, "bootstrap token \(parsed) expired at \(record.expiresAt.rfc3339); create a new one")
        }
        record.usedAt = now
        return record
    }

    static func hash(_ secret: String) -> String {
        SHA256.hash(data: Array(secret.utf8)).map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
    }
}

/// RFC 4648 base32, lower case, without padding (callers use multiples of 5 bytes).
enum Base32 {
    static let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")

    static func isDigit(_ c: Character) -> Bool { alphabet.contains(c) }

    static func encode(_ bytes: [UInt8]) -> String {
        var out = ""
        var buffer: UInt32 = 0
        var bits = 0
        for b in bytes {
            buffer = (buffer << 8) | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return out
    }
}
