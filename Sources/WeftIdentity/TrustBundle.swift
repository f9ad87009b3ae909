import Foundation
@_spi(FixedExpiryValidationTime) import X509

/// The CA certificates a node trusts for one trust domain, and the check it applies to a
/// peer's certificate chain in mutual TLS.
public struct TrustBundle: Sendable {
    public let trustDomain: TrustDomain
    public let roots: [Certificate]

    public enum PeerRole: Sendable {
        /// The peer accepted our connection: its certificate must allow serverAuth.
        case server
        /// The peer connected to us: its certificate must allow clientAuth.
        case client
    }

    public init(trustDomain: TrustDomain, roots: [Certificate]) {
        self.trustDomain = trustDomain
        self.roots = roots
    }

    /// A bundle from PEM text holding one or more CA certificates (`ca.crt`).
    public init(trustDomain: TrustDomain, pem: String) throws(IdentityError) {
        self.init(trustDomain: trustDomain, roots: try PEM.decodeCertificates(pem))
    }

    /// Verifies a peer's chain (leaf first, then any intermediates) at `time` and returns the
    /// peer's SPIFFE ID.
    ///
    /// The chain must lead to one of ``roots`` under RFC 5280 rules (signatures, validity
    /// periods, CA constraints), and the leaf must be an end-entity certificate carrying
    /// exactly one URI SAN, a SPIFFE ID in this bundle's trust domain, with the EKU for `role`.
    /// The identity is returned for authorization; this function does not decide whether the
    /// peer may talk to us.
    public func verifyPeer(_ chain: [Certificate], role: PeerRole, at time: Date = Date()) async throws(IdentityError) -> SpiffeID {
        guard let leaf = chain.first else {
            throw IdentityError(.peerNotTrusted, "the peer presented no certificate; mesh connections require mutual TLS")
        }
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy(fixedExpiryValidationTime: time)
        }
        let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
        if case .couldNotValidate(let failures) = result {
            let reasons = failures.map { String(describing: $0.policyFailureReason) }
            let detail = reasons.isEmpty
                ? "no chain leads to a trusted root: it was issued by \(leaf.issuer), which is not this mesh's CA (another trust domain, or a rotated root this node does not have yet)"
                : reasons.joined(separator: "; ")
            throw IdentityError(.peerNotTrusted, "the peer's certificate (\((try? leaf.spiffeID().uri) ?? "no SPIFFE ID")) does not verify: \(detail); check that both nodes use the same ca.crt and that their clocks agree")
        }

        if case .isCertificateAuthority = try? leaf.extensions.basicConstraints {
            throw IdentityError(.peerIdentityInvalid, "the peer presented a CA certificate as its own; a peer must present a workload or node certificate")
        }
        let id = try leaf.spiffeID()
        guard id.trustDomain == trustDomain else {
            throw IdentityError(.peerIdentityInvalid, "the peer is \(id), outside this mesh's trust domain \"\(trustDomain)\"")
        }
        let usage: ExtendedKeyUsage.Usage = role == .server ? .serverAuth : .clientAuth
        // No EKU extension means no restriction (RFC 5280 4.2.1.12).
        if let eku = try? leaf.extensions.extendedKeyUsage, !eku.contains(usage), !eku.contains(.any) {
            throw IdentityError(.peerIdentityInvalid, "the peer's certificate for \(id) does not allow \(role == .server ? "serverAuth" : "clientAuth"); a node credential cannot serve mesh traffic, use the workload's certificate")
        }
        return id
    }
}

extension MeshCA {
    /// What nodes should trust: this CA's certificate.
    public var trustBundle: TrustBundle { TrustBundle(trustDomain: trustDomain, roots: [certificate]) }
}

extension Certificate {
    /// The certificate's SPIFFE ID: its one URI SAN, as the X.509-SVID spec requires.
    public func spiffeID() throws(IdentityError) -> SpiffeID {
        let sans: SubjectAlternativeNames?
        do {
            sans = try extensions.subjectAlternativeNames
        } catch {
            throw IdentityError(.peerIdentityInvalid, "the certificate's subjectAltName is unreadable (\(error))")
        }
        let uris = (sans ?? SubjectAlternativeNames()).compactMap { name -> String? in
            if case .uniformResourceIdentifier(let uri) = name { return uri }
            return nil
        }
        guard uris.count == 1, let uri = uris.first else {
            throw IdentityError(.peerIdentityInvalid, "the certificate carries \(uris.count) URI SANs; an X.509 SVID carries exactly one, its SPIFFE ID")
        }
        do {
            return try SpiffeID(parsing: uri, field: "subjectAltName")
        } catch {
            throw IdentityError(.peerIdentityInvalid, "the certificate's URI SAN is not a SPIFFE ID: \(error.message)")
        }
    }
}
