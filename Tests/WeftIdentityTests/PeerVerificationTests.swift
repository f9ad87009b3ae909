import Crypto
import Foundation
import Testing
import WeftIdentity
import X509

@Suite("Verifying a peer's certificate")
struct PeerVerificationTests {
    let ca: MeshCA
    init() throws { ca = try MeshCA.create(trustDomain: td, now: t0) }

    func workloadLeaf(from ca: MeshCA, _ id: SpiffeID = workloadID()) throws -> Certificate {
        try ca.signWorkloadCSR(id.makeKeyAndCSR().csr, expected: id, now: t0)
    }

    @Test func peerOfTheSameMeshVerifiesAsItsSpiffeID() async throws {
        let bundle = try TrustBundle(trustDomain: td, pem: ca.certificatePEM)
        let leaf = try workloadLeaf(from: ca)
        #expect(try await bundle.verifyPeer([leaf], role: .server, at: t0) == workloadID())
        #expect(try await bundle.verifyPeer([leaf], role: .client, at: t0) == workloadID())
    }

    @Test func peerFromAnotherMeshIsRejected() async throws {
        let otherTD = try TrustDomain("other.example")
        let other = try MeshCA.create(trustDomain: otherTD, now: t0)
        let leaf = try workloadLeaf(from: other, workloadID(in: otherTD))
        let error = await #expect(throws: IdentityError.self) { try await ca.trustBundle.verifyPeer([leaf], role: .server, at: t0) }
        #expect(error?.code == .peerNotTrusted)
    }

    @Test func peerFromAnotherTrustDomainSignedByATrustedRootIsRejected() async throws {
        // A bundle for cluster.local that (mis)contains a root which signs for another domain.
        let otherTD = try TrustDomain("other.example")
        let other = try MeshCA.create(trustDomain: otherTD, now: t0)
        let bundle = TrustBundle(trustDomain: td, roots: [ca.certificate, other.certificate])
        let leaf = try workloadLeaf(from: other, workloadID(in: otherTD))
        let error = await #expect(throws: IdentityError.self) { try await bundle.verifyPeer([leaf], role: .server, at: t0) }
        #expect(error?.code == .peerIdentityInvalid)
    }

    @Test func expiredPeerIsRejected() async throws {
        let leaf = try workloadLeaf(from: ca)
        let error = await #expect(throws: IdentityError.self) {
            try await ca.trustBundle.verifyPeer([leaf], role: .server, at: leaf.notValidAfter.addingTimeInterval(1))
        }
        #expect(error?.code == .peerNotTrusted)
    }

    @Test func nodeCredentialCannotServeMeshTraffic() async throws {
        let node = try ca.issueNodeCredential(node: "node-a", publicKey: .init(P256.Signing.PrivateKey().publicKey), now: t0)
        #expect(try await ca.trustBundle.verifyPeer([node], role: .client, at: t0) == SpiffeID.node(trustDomain: td, name: "node-a"))
        let error = await #expect(throws: IdentityError.self) { try await ca.trustBundle.verifyPeer([node], role: .server, at: t0) }
        #expect(error?.code == .peerIdentityInvalid)
    }

    @Test func theRootItselfIsNotAcceptedAsAPeer() async throws {
        let error = await #expect(throws: IdentityError.self) { try await ca.trustBundle.verifyPeer([ca.certificate], role: .client, at: t0) }
        #expect(error?.code == .peerIdentityInvalid)
    }

    @Test func emptyChainIsRejected() async {
        let error = await #expect(throws: IdentityError.self) { try await ca.trustBundle.verifyPeer([], role: .client, at: t0) }
        #expect(error?.code == .peerNotTrusted)
    }
}
