import Crypto
import Foundation
import Testing
@_spi(FixedExpiryValidationTime) import X509
import WeftIdentity

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed instant, so that no test depends on the wall clock.
let t0 = Date(timeIntervalSince1970: 1_750_000_000)

let td = try! TrustDomain("cluster.local")

func workloadID(_ ns: String = "shop", _ sa: String = "frontend", in domain: TrustDomain = td) -> SpiffeID {
    SpiffeID.workload(trustDomain: domain, namespace: try! .init(ns), serviceAccount: try! .init(sa))
}

/// SplitMix64: a small deterministic generator for tests that inject randomness.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Validates `leaf` against `root` with swift-certificates' own verifier and RFC 5280 policy,
/// at a fixed time.
func verifies(_ leaf: Certificate, root: Certificate, at time: Date) async -> Bool {
    var verifier = Verifier(rootCertificates: CertificateStore([root])) {
        RFC5280Policy(fixedExpiryValidationTime: time)
    }
    if case .validCertificate = await verifier.validate(leaf: leaf, intermediates: CertificateStore()) { return true }
    return false
}

/// A CSR with exactly the given requested extensions, signed by `key` — for requests weftd
/// would never make.
func csr(requesting extensions: [Certificate.Extension], key: P256.Signing.PrivateKey = .init()) throws -> CertificateSigningRequest {
    let attributes: CertificateSigningRequest.Attributes = extensions.isEmpty
        ? .init()
        : .init([try .init(ExtensionRequest(extensions: Certificate.Extensions(extensions)))])
    return try CertificateSigningRequest(
        version: .v1,
        subject: DistinguishedName(),
        privateKey: .init(key),
        attributes: attributes,
        signatureAlgorithm: .ecdsaWithSHA256
    )
}

func sanExtension(_ names: [GeneralName]) throws -> Certificate.Extension {
    try SubjectAlternativeNames(names).makeCertificateExtension()
}

/// A fresh private directory, removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) throws -> T) throws -> T {
    var template = Array((NSTemporaryDirectory() + "/weft-identity-XXXXXX").utf8CString)
    guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
    let dir = String(cString: p)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    return try body(dir)
}

func fileMode(_ path: String) -> mode_t {
    var st = stat()
    precondition(stat(path, &st) == 0, "stat \(path)")
    return st.st_mode & 0o7777
}

extension Duration {
    static func hours(_ h: Int) -> Duration { .seconds(h * 3600) }
    static func days(_ d: Int) -> Duration { .seconds(d * 86400) }
}
