import Crypto
import Foundation
import SwiftASN1
import Testing
import WeftIdentity
import X509

@Suite("Issuing workload certificates from CSRs")
struct WorkloadIssuanceTests {
    let ca: MeshCA
    init() throws { ca = try MeshCA.create(trustDomain: td, now: t0) }

    func refusal(_ request: CertificateSigningRequest, expected: SpiffeID = workloadID()) -> IdentityError? {
        #expect(throws: IdentityError.self) { try ca.signWorkloadCSR(request, expected: expected, now: t0) }
    }

    @Test func workloadLeafFromCSRVerifiesAgainstRootAndCarriesOnlyItsSpiffeID() async throws {
        let (key, request) = try workloadID().makeKeyAndCSR()
        let leaf = try ca.signWorkloadCSR(request, expected: workloadID(), now: t0)

        #expect(await verifies(leaf, root: ca.certificate, at: t0))
        #expect(leaf.publicKey == Certificate.PublicKey(key.publicKey))
        #expect(try leaf.extensions.subjectAlternativeNames == SubjectAlternativeNames([.uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/frontend")]))
        #expect(try leaf.spiffeID() == workloadID())
        #expect(leaf.issuer == ca.certificate.subject)
        #expect(leaf.signatureAlgorithm == .ecdsaWithSHA256)
    }

    @Test func workloadLeafHasServerAndClientAuthDigitalSignatureAndIsNotACA() throws {
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)

        #expect(try leaf.extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth, .clientAuth]))
        let ku = try #require(leaf.extensions[oid: .X509ExtensionID.keyUsage])
        #expect(ku.critical)
        #expect(try KeyUsage(ku) == KeyUsage(digitalSignature: true))
        let bc = try #require(leaf.extensions[oid: .X509ExtensionID.basicConstraints])
        #expect(bc.critical)
        #expect(try BasicConstraints(bc) == .notCertificateAuthority)
        #expect(try leaf.extensions.subjectKeyIdentifier == SubjectKeyIdentifier(hash: leaf.publicKey))
        #expect(try leaf.extensions.authorityKeyIdentifier?.keyIdentifier == ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        // Exactly these six extensions: nothing from the CSR is carried over.
        #expect(leaf.extensions.count == 6)
    }

    @Test func workloadLeafLivesTwentyFourHoursByDefaultFromOneMinuteBeforeIssue() throws {
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        #expect(leaf.notValidBefore == t0.addingTimeInterval(-60))
        #expect(leaf.notValidAfter == t0.addingTimeInterval(24 * 3600))

        let short = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), ttl: .hours(1), now: t0)
        #expect(short.notValidAfter == t0.addingTimeInterval(3600))
    }

    @Test func leafNeverOutlivesTheCA() throws {
        let shortCA = try MeshCA.create(trustDomain: td, validity: .hours(2), now: t0)
        let leaf = try shortCA.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        #expect(leaf.notValidAfter == shortCA.certificate.notValidAfter)

        let error = #expect(throws: IdentityError.self) {
            try shortCA.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0.addingTimeInterval(3 * 3600))
        }
        #expect(error?.code == .caExpired)
    }

    @Test func serialNumbersAreRandomPositiveAndAtMost128Bits() throws {
        var serials = Set<Certificate.SerialNumber>()
        for _ in 0..<20 {
            let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
            #expect(leaf.serialNumber.bytes.count <= 16)
            #expect(leaf.serialNumber.bytes.contains { $0 != 0 })
            serials.insert(leaf.serialNumber)
        }
        #expect(serials.count == 20)

        // On the wire the serial is a positive INTEGER: re-parse the DER and read it back signed.
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        var serializer = DER.Serializer()
        try serializer.serialize(leaf)
        let reparsed = try Certificate(derEncoded: serializer.serializedBytes)
        #expect(reparsed.serialNumber == leaf.serialNumber)
        #expect(reparsed == leaf)
    }

    @Test func leafFailsVerificationBeforeNotBeforeAndAfterNotAfter() async throws {
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        #expect(await verifies(leaf, root: ca.certificate, at: leaf.notValidBefore.addingTimeInterval(1)))
        #expect(await verifies(leaf, root: ca.certificate, at: t0.addingTimeInterval(23 * 3600)))
        #expect(await !verifies(leaf, root: ca.certificate, at: leaf.notValidBefore.addingTimeInterval(-1)), "not yet valid")
        #expect(await !verifies(leaf, root: ca.certificate, at: leaf.notValidAfter.addingTimeInterval(1)), "expired")
    }

    @Test func leafDoesNotVerifyAgainstAnotherCA() async throws {
        let other = try MeshCA.create(trustDomain: td, now: t0)
        let leaf = try ca.signWorkloadCSR(workloadID().makeKeyAndCSR().csr, expected: workloadID(), now: t0)
        #expect(await !verifies(leaf, root: other.certificate, at: t0))
    }

    @Test func csrArrivesAsPEMTextPEMBytesOrDER() throws {
        let request = try workloadID().makeKeyAndCSR().csr
        let pem = try PEM.encode(request)
        #expect(pem.hasPrefix("-----BEGIN CERTIFICATE REQUEST-----"))
        var serializer = DER.Serializer()
        try serializer.serialize(request)

        for leaf in [
            try ca.signWorkloadCSR(pem, expected: workloadID(), now: t0),
            try ca.signWorkloadCSR(Array(pem.utf8), expected: workloadID(), now: t0),
            try ca.signWorkloadCSR(serializer.serializedBytes, expected: workloadID(), now: t0),
        ] {
            #expect(try leaf.spiffeID() == workloadID())
        }
        let garbage = #expect(throws: IdentityError.self) { try ca.signWorkloadCSR([0x30, 0x03, 0x02, 0x01, 0x00], expected: workloadID(), now: t0) }
        #expect(garbage?.code == .malformedCSR)
    }

    // MARK: Refusals

    @Test func csrWhoseContentWasChangedAfterSigningIsRefused() throws {
        let key = P256.Signing.PrivateKey()
        let signed = try workloadID().makeCSR(privateKey: key)
        let wanted = workloadID("payments", "admin")
        // An attacker on the path swaps the requested identity but cannot re-sign.
        let swapped = try CertificateSigningRequest(
            version: signed.version, subject: signed.subject, publicKey: signed.publicKey,
            attributes: wanted.makeCSR(privateKey: key).attributes,
            signatureAlgorithm: signed.signatureAlgorithm, signature: signed.signature
        )
        let error = refusal(swapped, expected: wanted)
        #expect(error?.code == .csrSignatureInvalid)
    }

    @Test func csrWithAFlippedSignatureByteIsRefused() throws {
        var serializer = DER.Serializer()
        try serializer.serialize(workloadID().makeKeyAndCSR().csr)
        var der = serializer.serializedBytes
        der[der.count - 1] ^= 0x01  // the last byte of the ECDSA signature's s
        let error = #expect(throws: IdentityError.self) { try ca.signWorkloadCSR(der, expected: workloadID(), now: t0) }
        #expect(error?.code == .csrSignatureInvalid)
    }

    @Test func csrWithAnotherKeySubstitutedIsRefused() throws {
        let signed = try workloadID().makeKeyAndCSR().csr
        let forged = try CertificateSigningRequest(
            version: signed.version, subject: signed.subject,
            publicKey: .init(P256.Signing.PrivateKey().publicKey),
            attributes: signed.attributes,
            signatureAlgorithm: signed.signatureAlgorithm, signature: signed.signature
        )
        #expect(refusal(forged)?.code == .csrSignatureInvalid)
    }

    @Test func csrAskingForADifferentSpiffeIDThanExpectedIsRefused() throws {
        let request = try workloadID("shop", "admin").makeKeyAndCSR().csr
        let error = refusal(request, expected: workloadID("shop", "frontend"))
        #expect(error?.code == .csrIdentityMismatch)
        #expect(error?.message.contains("spiffe://cluster.local/ns/shop/sa/admin") == true)
        #expect(error?.message.contains("spiffe://cluster.local/ns/shop/sa/frontend") == true)
    }

    @Test func csrAskingForTheSameIDInAnotherTrustDomainIsRefused() throws {
        let elsewhere = workloadID(in: try TrustDomain("evil.example"))
        let request = try elsewhere.makeKeyAndCSR().csr
        #expect(refusal(request)?.code == .csrIdentityMismatch)
    }

    @Test(arguments: [
        [GeneralName.uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/frontend"), .dnsName("frontend.shop.svc")],
        [.uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/frontend"), .ipAddress(ASN1OctetString(contentBytes: [10, 0, 0, 1]))],
        [.uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/frontend"), .rfc822Name("ops@example.org")],
        [.uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/frontend"), .uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/admin")],
        [.dnsName("frontend.shop.svc"), .uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/frontend")],
    ])
    func csrWithExtraSANsIsRefused(_ names: [GeneralName]) throws {
        let request = try csr(requesting: [sanExtension(names)])
        #expect(refusal(request)?.code == .csrExtraNames)
    }

    @Test func csrWithoutAnySANIsRefused() throws {
        let error = refusal(try csr(requesting: []))
        #expect(error?.code == .csrMissingIdentity)
        #expect(error?.message.contains("subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/frontend") == true)
        #expect(refusal(try csr(requesting: [sanExtension([.dnsName("a")])]))?.code == .csrExtraNames)
    }

    @Test func csrWithAnInvalidSpiffeURIIsRefused() throws {
        let request = try csr(requesting: [sanExtension([.uniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/../frontend")])])
        #expect(refusal(request)?.code == .csrIdentityMismatch)
    }

    @Test func csrAskingToBeACAIsRefused() throws {
        let san = try sanExtension([.uniformResourceIdentifier(workloadID().uri)])
        let ca = try Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil)).makeCertificateExtension()
        #expect(refusal(try csr(requesting: [san, ca]))?.code == .csrForbiddenExtension)

        let certSign = try Critical(KeyUsage(digitalSignature: true, keyCertSign: true)).makeCertificateExtension()
        #expect(refusal(try csr(requesting: [san, certSign]))?.code == .csrForbiddenExtension)

        let constraints = Certificate.Extension(oid: .X509ExtensionID.nameConstraints, critical: true, value: [0x30, 0x00])
        #expect(refusal(try csr(requesting: [san, constraints]))?.code == .csrForbiddenExtension)
    }

    @Test func csrAskingForOtherExtendedKeyUsagesIsRefused() throws {
        let san = try sanExtension([.uniformResourceIdentifier(workloadID().uri)])
        let eku = try ExtendedKeyUsage([.clientAuth, .codeSigning]).makeCertificateExtension()
        #expect(refusal(try csr(requesting: [san, eku]))?.code == .csrForbiddenExtension)
    }

    @Test func csrWithAnUnknownCriticalExtensionIsRefusedButNonCriticalOnesAreIgnored() throws {
        let san = try sanExtension([.uniformResourceIdentifier(workloadID().uri)])
        let unknownCritical = Certificate.Extension(oid: [1, 3, 6, 1, 4, 1, 99999, 1], critical: true, value: [0x05, 0x00])
        #expect(refusal(try csr(requesting: [san, unknownCritical]))?.code == .csrForbiddenExtension)

        // What OpenSSL's default req config adds is harmless, and is not copied into the leaf.
        let unknown = Certificate.Extension(oid: [1, 3, 6, 1, 4, 1, 99999, 1], critical: false, value: [0x05, 0x00])
        let openssl = [
            san, unknown,
            try BasicConstraints.notCertificateAuthority.makeCertificateExtension(),
            try KeyUsage(digitalSignature: true, nonRepudiation: true, keyEncipherment: true).makeCertificateExtension(),
            try ExtendedKeyUsage([.serverAuth]).makeCertificateExtension(),
        ]
        let leaf = try ca.signWorkloadCSR(csr(requesting: openssl), expected: workloadID(), now: t0)
        #expect(leaf.extensions[oid: [1, 3, 6, 1, 4, 1, 99999, 1]] == nil)
        #expect(try leaf.extensions.keyUsage == KeyUsage(digitalSignature: true))
        #expect(try leaf.extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth, .clientAuth]))
    }

    @Test func nodeIdentityCannotBeObtainedThroughAWorkloadCSR() throws {
        let node = try SpiffeID.node(trustDomain: td, name: "node-a")
        let request = try node.makeKeyAndCSR().csr
        #expect(refusal(request, expected: node)?.code == .invalidIdentity)
        let trustDomainID = td.id
        #expect(refusal(try trustDomainID.makeKeyAndCSR().csr, expected: trustDomainID)?.code == .invalidIdentity)
    }

    @Test func workloadOfAnotherTrustDomainIsRefusedEvenIfTheCSRMatches() throws {
        let elsewhere = workloadID(in: try TrustDomain("other.example"))
        #expect(refusal(try elsewhere.makeKeyAndCSR().csr, expected: elsewhere)?.code == .wrongTrustDomain)
    }

    @Test func csrWithANonP256KeyIsRefused() throws {
        let key = P384.Signing.PrivateKey()
        let attributes = try workloadID().makeKeyAndCSR().csr.attributes
        let request = try CertificateSigningRequest(
            version: .v1, subject: DistinguishedName(), privateKey: .init(key),
            attributes: attributes, signatureAlgorithm: .ecdsaWithSHA384
        )
        #expect(refusal(request)?.code == .unsupportedKey)
    }

    @Test func nonPositiveTTLIsRefused() throws {
        let request = try workloadID().makeKeyAndCSR().csr
        let error = #expect(throws: IdentityError.self) { try ca.signWorkloadCSR(request, expected: workloadID(), ttl: .zero, now: t0) }
        #expect(error?.code == .invalidTTL)
    }
}

@Suite("Issuing node credentials")
struct NodeCredentialTests {
    let ca: MeshCA
    init() throws { ca = try MeshCA.create(trustDomain: td, now: t0) }

    @Test func nodeCredentialCarriesTheNodeIDAndClientAuthOnly() async throws {
        let key = P256.Signing.PrivateKey()
        let cert = try ca.issueNodeCredential(node: "node-a", publicKey: .init(key.publicKey), now: t0)

        #expect(await verifies(cert, root: ca.certificate, at: t0))
        #expect(try cert.extensions.subjectAlternativeNames == SubjectAlternativeNames([.uniformResourceIdentifier("spiffe://cluster.local/node/node-a")]))
        #expect(try cert.spiffeID().kind == .node(name: "node-a"))
        #expect(try cert.extensions.extendedKeyUsage == ExtendedKeyUsage([.clientAuth]))
        #expect(try cert.extensions.keyUsage == KeyUsage(digitalSignature: true))
        #expect(try cert.extensions.basicConstraints == .notCertificateAuthority)
        #expect(try cert.extensions.authorityKeyIdentifier?.keyIdentifier == ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
    }

    @Test func nodeCredentialLastsThirtyDaysByDefaultBackdatedOneMinute() throws {
        let cert = try ca.issueNodeCredential(node: "node-a", publicKey: .init(P256.Signing.PrivateKey().publicKey), now: t0)
        #expect(cert.notValidBefore == t0.addingTimeInterval(-60))
        #expect(cert.notValidAfter == t0.addingTimeInterval(30 * 86400))
        let week = try ca.issueNodeCredential(node: "node-a", publicKey: .init(P256.Signing.PrivateKey().publicKey), ttl: .days(7), now: t0)
        #expect(week.notValidAfter == t0.addingTimeInterval(7 * 86400))
    }

    @Test(arguments: ["Node-A", "node.a", "", "node/a"])
    func invalidNodeNamesAreRefused(_ name: String) {
        let error = #expect(throws: IdentityError.self) {
            try ca.issueNodeCredential(node: name, publicKey: .init(P256.Signing.PrivateKey().publicKey), now: t0)
        }
        #expect(error?.code == .invalidIdentity)
    }

    @Test func nodeKeyMustBeP256() {
        let error = #expect(throws: IdentityError.self) {
            try ca.issueNodeCredential(node: "node-a", publicKey: .init(P384.Signing.PrivateKey().publicKey), now: t0)
        }
        #expect(error?.code == .unsupportedKey)
    }
}
