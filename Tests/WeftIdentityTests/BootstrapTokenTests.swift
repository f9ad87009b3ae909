import Foundation
import Testing
import WeftIdentity

@Suite("Bootstrap tokens")
struct BootstrapTokenTests {
    @Test func tokenIsPrintableWithAtLeast128BitsOfSecret() throws {
        let (token, record) = try BootstrapTokens.create(ttl: .hours(1), now: t0)
        let parts = token.text.split(separator: ".")
        #expect(parts.count == 3)
        #expect(parts[0] == "weft")
        #expect(parts[1] == Substring(token.id))
        #expect(parts[2] == Substring(token.secret))
        let alphabet = Set("abcdefghijklmnopqrstuvwxyz234567")
        #expect(token.secret.allSatisfy { alphabet.contains($0) })
        #expect(token.secret.count * 5 >= 128, "base32 carries 5 bits a character")
        #expect(record.id == token.id)
        #expect(record.expiresAt == t0.addingTimeInterval(3600))
        #expect(record.usedAt == nil)
    }

    @Test func recordKeepsOnlyAHashOfTheSecret() throws {
        let (token, record) = try BootstrapTokens.create(now: t0)
        let stored = String(decoding: try JSONEncoder().encode(record), as: UTF8.self)
        #expect(!stored.contains(token.secret))
        #expect(record.secretSHA256.count == 64)
        #expect(try JSONDecoder().decode(BootstrapTokenRecord.self, from: Data(stored.utf8)) == record)
    }

    @Test func tokenDescriptionRedactsTheSecret() throws {
        let (token, _) = try BootstrapTokens.create(now: t0)
        #expect(!"\(token)".contains(token.secret))
        #expect("\(token)".contains(token.id))
    }

    @Test func validTokenRedeemsOnceAndIsMarkedUsed() throws {
        let (token, record) = try BootstrapTokens.create(ttl: .hours(1), now: t0)
        let used = try BootstrapTokens.redeem(token.text, records: [record], now: t0.addingTimeInterval(60))
        #expect(used.id == record.id)
        #expect(used.usedAt == t0.addingTimeInterval(60))

        let again = #expect(throws: IdentityError.self) { try BootstrapTokens.redeem(token.text, records: [used], now: t0.addingTimeInterval(120)) }
        #expect(again?.code == .tokenAlreadyUsed)
    }

    @Test func tokenExpiresAtItsTTL() throws {
        let (token, record) = try BootstrapTokens.create(ttl: .hours(1), now: t0)
        _ = try BootstrapTokens.redeem(token.text, records: [record], now: t0.addingTimeInterval(3599))
        let error = #expect(throws: IdentityError.self) { try BootstrapTokens.redeem(token.text, records: [record], now: t0.addingTimeInterval(3600)) }
        #expect(error?.code == .tokenExpired)
    }

    @Test func wrongSecretFailsEvenForAnExpiredOrUsedToken() throws {
        let (token, record) = try BootstrapTokens.create(ttl: .hours(1), now: t0)
        var forged = Array(token.secret)
        forged[0] = forged[0] == "a" ? "b" : "a"
        let wrong = "weft.\(token.id).\(String(forged))"
        for (r, when) in [(record, t0), (record, t0.addingTimeInterval(7200))] {
            let error = #expect(throws: IdentityError.self) { try BootstrapTokens.redeem(wrong, records: [r], now: when) }
            #expect(error?.code == .tokenSecretMismatch)
        }
        var used = record
        used.usedAt = t0
        let error = #expect(throws: IdentityError.self) { try BootstrapTokens.redeem(wrong, records: [used], now: t0) }
        #expect(error?.code == .tokenSecretMismatch, "the state of a token is not revealed without its secret")
    }

    @Test func tokenIsMatchedToItsOwnRecordAmongMany() throws {
        var rng = SplitMix64(seed: 7)
        let made = try (0..<5).map { _ in try BootstrapTokens.create(ttl: .hours(1), now: t0, using: &rng) }
        let records = made.map(\.record)
        let used = try BootstrapTokens.redeem(made[3].token.text, records: records, now: t0)
        #expect(used.id == made[3].token.id)

        // A secret is only good for its own id.
        let crossed = "weft.\(made[0].token.id).\(made[1].token.secret)"
        let error = #expect(throws: IdentityError.self) { try BootstrapTokens.redeem(crossed, records: records, now: t0) }
        #expect(error?.code == .tokenSecretMismatch)
    }

    @Test func unknownAndMalformedTokensAreRefused() throws {
        let (token, record) = try BootstrapTokens.create(now: t0)
        let (other, _) = try BootstrapTokens.create(now: t0)
        let unknown = #expect(throws: IdentityError.self) { try BootstrapTokens.redeem(other.text, records: [record], now: t0) }
        #expect(unknown?.code == .tokenUnknown)

        for bad in ["", "weft", "weft..", "kube.\(token.id).\(token.secret)", "weft.\(token.id)", "weft.\(token.id).\(token.secret).x",
                    "weft.\(token.id.uppercased()).\(token.secret)", "weft.\(token.id).\(token.secret.dropLast())"] {
            let error = #expect(throws: IdentityError.self, "\(bad)") { try BootstrapTokens.redeem(bad, records: [record], now: t0) }
            #expect(error?.code == .tokenMalformed)
        }
        // Surrounding whitespace from a copy-paste is forgiven.
        _ = try BootstrapTokens.redeem(" \(token.text)\n", records: [record], now: t0)
    }

    @Test func injectedRandomnessMakesTokensReproducible() throws {
        var a = SplitMix64(seed: 42), b = SplitMix64(seed: 42), c = SplitMix64(seed: 43)
        let ta = try BootstrapTokens.create(ttl: .hours(1), now: t0, using: &a).token
        let tb = try BootstrapTokens.create(ttl: .hours(1), now: t0, using: &b).token
        let tc = try BootstrapTokens.create(ttl: .hours(1), now: t0, using: &c).token
        #expect(ta == tb)
        #expect(ta != tc)
    }

    @Test func nonPositiveTTLIsRefused() {
        let error = #expect(throws: IdentityError.self) { try BootstrapTokens.create(ttl: .seconds(0), now: t0) }
        #expect(error?.code == .invalidTTL)
    }
}
