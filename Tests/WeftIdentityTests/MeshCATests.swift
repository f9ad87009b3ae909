import Crypto
import Foundation
import SwiftASN1
import Testing
import WeftIdentity
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Mesh CA: the root")
struct RootTests {
    @Test func generatedRootVerifiesAgainstItselfUnderRFC5280() async throws {
        let ca = try MeshCA.create(trustDomain: td, now: t0)
        #expect(await verifies(ca.certificate, root: ca.certificate, at: t0))
        #expect(ca.certificate.publicKey.isValidSignature(ca.certificate.signature, for: ca.certificate))
        #expect(ca.certificate.issuer == ca.certificate.subject)
    }

    @Test func generatedRootIsAP256CAWithCriticalConstraintsAndSpiffeSAN() throws {
        let root = try MeshCA.create(trustDomain: td, now: t0).certificate
        #expect(P256.Signing.PublicKey(root.publicKey) != nil)
        #expect(root.signatureAlgorithm == .ecdsaWithSHA256)

        let bc = try #require(root.extensions[oid: .X509ExtensionID.basicConstraints])
        #expect(bc.critical)
        #expect(try BasicConstraints(bc) == .isCertificateAuthority(maxPathLength: 0))

        let ku = try #require(root.extensions[oid: .X509ExtensionID.keyUsage])
        #expect(ku.critical)
        #expect(try KeyUsage(ku) == KeyUsage(keyCertSign: true, cRLSign: true))

        let ski = try #require(try root.extensions.subjectKeyIdentifier)
        #expect(ski == SubjectKeyIdentifier(hash: root.publicKey))
        #expect(try root.extensions.subjectAlternativeNames == SubjectAlternativeNames([.uniformResourceIdentifier("spiffe://cluster.local")]))
    }

    @Test func rootValidityDefaultsToTenYearsAndIsConfigurable() throws {
        let tenYears = try MeshCA.create(trustDomain: td, now: t0).certificate
        #expect(tenYears.notValidAfter == t0.addingTimeInterval(3650 * 86400))
        #expect(tenYears.notValidBefore == t0.addingTimeInterval(-60))

        let oneYear = try MeshCA.create(trustDomain: td, validity: .days(365), now: t0).certificate
        #expect(oneYear.notValidAfter == t0.addingTimeInterval(365 * 86400))

        let error = #expect(throws: IdentityError.self) { try MeshCA.create(trustDomain: td, validity: .zero, now: t0) }
        #expect(error?.code == .invalidTTL)
    }

    @Test func eachGeneratedRootHasItsOwnKeyAndSerial() throws {
        let a = try MeshCA.create(trustDomain: td, now: t0).certificate
        let b = try MeshCA.create(trustDomain: td, now: t0).certificate
        #expect(a.publicKey != b.publicKey)
        #expect(a.serialNumber != b.serialNumber)
    }
}

@Suite("Mesh CA: saving and loading")
struct StorageTests {
    @Test func saveThenLoadPreservesTheRootAndItsSigningKey() async throws {
        try await withTemporaryDirectoryAsync { dir in
            let ca = try MeshCA.create(trustDomain: td, now: t0)
            try ca.save(to: dir)
            let loaded = try MeshCA.load(from: dir, now: t0)
            #expect(loaded.certificate == ca.certificate)
            #expect(loaded.trustDomain == td, "the trust domain is recovered from the root's URI SAN")

            // The loaded key is the root's: what it signs verifies against the original root.
            let (_, request) = try workloadID().makeKeyAndCSR()
            let leaf = try loaded.signWorkloadCSR(request, expected: workloadID(), now: t0)
            #expect(await verifies(leaf, root: ca.certificate, at: t0))
        }
    }

    @Test func savedKeyIsOwnerOnlyAndCertificateIsWorldReadable() throws {
        try withTemporaryDirectory { dir in
            try MeshCA.create(trustDomain: td, now: t0).save(to: dir + "/ca")
            #expect(fileMode(dir + "/ca/ca.key") == 0o600)
            #expect(fileMode(dir + "/ca/ca.crt") == 0o644)
            #expect(fileMode(dir + "/ca") == 0o700)
            // No temporary files are left beside them.
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/ca").sorted() == ["ca.crt", "ca.key"])
        }
    }

    @Test(arguments: [0o644, 0o640, 0o604, 0o620] as [mode_t])
    func keyFileOpenToGroupOrOthersIsRefusedOnLoad(_ mode: mode_t) throws {
        try withTemporaryDirectory { dir in
            try MeshCA.create(trustDomain: td, now: t0).save(to: dir)
            #expect(chmod(dir + "/ca.key", mode) == 0)
            let error = #expect(throws: IdentityError.self) { try MeshCA.load(from: dir, now: t0) }
            #expect(error?.code == .insecureKeyPermissions)
            #expect(error?.message.contains("\(dir)/ca.key") == true)
            #expect(error?.message.contains("chmod 600 \(dir)/ca.key") == true, "\(String(describing: error))")
        }
    }

    @Test func saveRefusesToReplaceAnExistingCAUnlessAskedTo() throws {
        try withTemporaryDirectory { dir in
            let first = try MeshCA.create(trustDomain: td, now: t0)
            try first.save(to: dir)
            let second = try MeshCA.create(trustDomain: td, now: t0)
            let error = #expect(throws: IdentityError.self) { try second.save(to: dir) }
            #expect(error?.code == .caAlreadyExists)
            #expect(try MeshCA.load(from: dir, now: t0).certificate == first.certificate)

            try second.save(to: dir, overwrite: true)
            #expect(try MeshCA.load(from: dir, now: t0).certificate == second.certificate)
            #expect(fileMode(dir + "/ca.key") == 0o600)
        }
    }

    @Test func loadNamesTheMissingFile() throws {
        try withTemporaryDirectory { dir in
            let error = #expect(throws: IdentityError.self) { try MeshCA.load(from: dir, now: t0) }
            #expect(error?.code == .caFileMissing)
            #expect(error?.message.contains("\(dir)/ca.key") == true)
        }
    }

    @Test func loadRefusesAKeyThatDoesNotBelongToTheCertificate() throws {
        try withTemporaryDirectory { dir in
            try MeshCA.create(trustDomain: td, now: t0).save(to: dir)
            let other = P256.Signing.PrivateKey().pemRepresentation
            try other.write(toFile: dir + "/ca.key", atomically: false, encoding: .utf8)
            let error = #expect(throws: IdentityError.self) { try MeshCA.load(from: dir, now: t0) }
            #expect(error?.code == .keyDoesNotMatchCertificate)
        }
    }
}

@Suite("Mesh CA: operator-supplied roots")
struct OperatorRootTests {
    /// A CA certificate built by hand, the way an operator's own tooling might.
    static func makeCA(
        key: Certificate.PrivateKey,
        isCA: Bool = true,
        san: String? = nil,
        notBefore: Date = t0.addingTimeInterval(-3600),
        notAfter: Date = t0.addingTimeInterval(86400 * 365)
    ) throws -> Certificate {
        let name = try DistinguishedName { CommonName("Example Corp mesh CA") }
        let extensions = try Certificate.Extensions {
            Critical(isCA ? BasicConstraints.isCertificateAuthority(maxPathLength: nil) : .notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: !isCA, keyCertSign: isCA))
            if let san { SubjectAlternativeNames([.uniformResourceIdentifier(san)]) }
        }
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key.publicKey,
            notValidBefore: notBefore, notValidAfter: notAfter,
            issuer: name, subject: name, extensions: extensions, issuerPrivateKey: key
        )
    }

    @Test func operatorRootWithoutSpiffeSANIsUsedWithAConfiguredTrustDomain() async throws {
        let key = P256.Signing.PrivateKey()
        let cert = try Self.makeCA(key: .init(key))
        let pem = try PEM.encode(cert)

        let missing = #expect(throws: IdentityError.self) { try MeshCA(certificatePEM: pem, privateKeyPEM: key.pemRepresentation, now: t0) }
        #expect(missing?.code == .wrongTrustDomain)

        let ca = try MeshCA(certificatePEM: pem, privateKeyPEM: key.pemRepresentation, trustDomain: td, now: t0)
        #expect(ca.trustDomain == td)
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        #expect(await verifies(leaf, root: cert, at: t0))
        #expect(try leaf.extensions.authorityKeyIdentifier?.keyIdentifier == cert.extensions.subjectKeyIdentifier?.keyIdentifier ?? SubjectKeyIdentifier(hash: cert.publicKey).keyIdentifier)
    }

    @Test func rootMadeWithOpenSSLLoadsAndSignsAnOpenSSLCSR() async throws {
        let now = Date(timeIntervalSince1970: 1_750_000_000)
        let ca = try MeshCA(certificatePEM: OpenSSLFixtures.rootCertificate, privateKeyPEM: OpenSSLFixtures.rootKeySEC1, now: now)
        #expect(ca.trustDomain == td, "taken from the root's spiffe://cluster.local SAN")

        let leaf = try ca.signWorkloadCSR(OpenSSLFixtures.workloadCSR, expected: workloadID(), now: now)
        let opensslRoot = try PEM.decodeCertificate(OpenSSLFixtures.rootCertificate)
        #expect(ca.certificate == opensslRoot)
        #expect(await verifies(leaf, root: opensslRoot, at: now))
        #expect(try leaf.spiffeID() == workloadID())
        // The CSR's subject (CN=frontend) is not copied: identity lives in the SAN only.
        #expect(leaf.subject != (try PEM.decodeCSR(OpenSSLFixtures.workloadCSR)).subject)
        // AKI names OpenSSL's own SKI, so OpenSSL-style chain building by key id works.
        #expect(try leaf.extensions.authorityKeyIdentifier?.keyIdentifier == ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
    }

    @Test func rootNamingAnotherTrustDomainThanConfiguredIsRefused() throws {
        let key = P256.Signing.PrivateKey()
        let cert = try Self.makeCA(key: .init(key), san: "spiffe://other.example")
        let error = #expect(throws: IdentityError.self) {
            try MeshCA(certificatePEM: PEM.encode(cert), privateKeyPEM: key.pemRepresentation, trustDomain: td, now: t0)
        }
        #expect(error?.code == .wrongTrustDomain)
    }

    @Test func certificateThatIsNotACAIsRefusedAsRoot() throws {
        let key = P256.Signing.PrivateKey()
        let cert = try Self.makeCA(key: .init(key), isCA: false, san: "spiffe://cluster.local")
        let error = #expect(throws: IdentityError.self) {
            try MeshCA(certificatePEM: PEM.encode(cert), privateKeyPEM: key.pemRepresentation, now: t0)
        }
        #expect(error?.code == .notACertificateAuthority)
    }

    @Test func issuedWorkloadLeafIsRefusedAsRoot() throws {
        let ca = try MeshCA.create(trustDomain: td, now: t0)
        let (key, request) = try workloadID().makeKeyAndCSR()
        let leaf = try ca.signWorkloadCSR(request, expected: workloadID(), now: t0)
        let error = #expect(throws: IdentityError.self) {
            try MeshCA(certificatePEM: PEM.encode(leaf), privateKeyPEM: key.pemRepresentation, trustDomain: td, now: t0)
        }
        #expect(error?.code == .notACertificateAuthority)
    }

    @Test func p384RootIsRefused() throws {
        let key = P384.Signing.PrivateKey()
        let cert = try Self.makeCA(key: .init(key), san: "spiffe://cluster.local")
        let error = #expect(throws: IdentityError.self) {
            try MeshCA(certificatePEM: PEM.encode(cert), privateKeyPEM: key.pemRepresentation, now: t0)
        }
        #expect(error?.code == .unsupportedKey)
        #expect(error?.message.contains("P-256") == true)
    }

    @Test func expiredRootIsRefused() throws {
        let key = P256.Signing.PrivateKey()
        let cert = try Self.makeCA(key: .init(key), san: "spiffe://cluster.local",
                                   notBefore: t0.addingTimeInterval(-7200), notAfter: t0.addingTimeInterval(-1))
        let error = #expect(throws: IdentityError.self) {
            try MeshCA(certificatePEM: PEM.encode(cert), privateKeyPEM: key.pemRepresentation, now: t0)
        }
        #expect(error?.code == .caExpired)
    }

    @Test func expiredGeneratedRootIsRefusedOnLoad() throws {
        try withTemporaryDirectory { dir in
            try MeshCA.create(trustDomain: td, validity: .hours(1), now: t0).save(to: dir)
            let error = #expect(throws: IdentityError.self) { try MeshCA.load(from: dir, now: t0.addingTimeInterval(7200)) }
            #expect(error?.code == .caExpired)
            #expect(error?.message.contains("\(dir)/ca.crt") == true)
        }
    }

    @Test func encryptedOrRSAKeysAreExplained() {
        let encrypted = PEMDocument(type: "ENCRYPTED PRIVATE KEY", derBytes: [0x30, 0x00]).pemString
        let e1 = #expect(throws: IdentityError.self) { try PEM.decodePrivateKey(encrypted) }
        #expect(e1?.message.contains("openssl pkey") == true)
        let rsa = PEMDocument(type: "RSA PRIVATE KEY", derBytes: [0x30, 0x00]).pemString
        let e2 = #expect(throws: IdentityError.self) { try PEM.decodePrivateKey(rsa) }
        #expect(e2?.code == .unsupportedKey)
    }
}

func withTemporaryDirectoryAsync(_ body: (String) async throws -> Void) async throws {
    var template = Array((NSTemporaryDirectory() + "/weft-identity-XXXXXX").utf8CString)
    guard let p = mkdtemp(&template) else { throw POSIXError(.EIO) }
    let dir = String(cString: p)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try await body(dir)
}
