import Crypto
import Foundation
import SwiftASN1
import WeftCore
import X509

extension MeshCA {
    /// Node credentials are renewed by weftd itself, and a node that was down for a while must
    /// still be able to authenticate when it comes back, hence a month rather than a day.
    public static let defaultNodeTTL: Duration = .days(30)
    /// Istio's default workload certificate lifetime.
    public static let defaultWorkloadTTL: Duration = .hours(24)

    /// Issues the certificate a node (weftd) presents to the control plane:
    /// URI SAN `spiffe://<td>/node/<node>`, EKU clientAuth only (a node credential authenticates
    /// weftd as a client, it never serves mesh traffic), keyUsage digitalSignature, CA:false.
    ///
    /// The caller has already established which node this is (a redeemed bootstrap token, or
    /// the node's current credential) and that it holds the key for `publicKey`.
    public func issueNodeCredential(
        node: String,
        publicKey: Certificate.PublicKey,
        ttl: Duration = defaultNodeTTL,
        now: Date = Date()
    ) throws(IdentityError) -> Certificate {
        let id: SpiffeID
        do {
            id = try SpiffeID.node(trustDomain: trustDomain, name: node)
        } catch {
            throw IdentityError(.invalidIdentity, "cannot issue a node credential: \(error.message); node names come from the `node:` field of weftd's config")
        }
        return try issueLeaf(for: id, publicKey: publicKey, usages: [.clientAuth], ttl: ttl, now: now)
    }

    /// Signs a workload's CSR after checking it, and returns the workload certificate (X.509 SVID).
    ///
    /// The CSR must carry a valid self-signature (proof that the requester holds the key) and
    /// request, in its extensionRequest, a subjectAltName of exactly one URI equal to
    /// `expected`. It is refused if it also asks for DNS, IP, e-mail or other names (the mesh
    /// authenticates by SPIFFE ID only, and a DNS name would let a workload key impersonate
    /// that host to any TLS client that trusts the mesh root), for CA:true, for keyCertSign or
    /// cRLSign, for EKUs other than serverAuth and clientAuth, for name constraints, or for any
    /// critical extension Weft does not know. Other non-critical requests and the CSR's subject
    /// are ignored: nothing but the public key is ever copied from a CSR into the certificate.
    ///
    /// The certificate: URI SAN `expected` only, EKU serverAuth and clientAuth, keyUsage
    /// digitalSignature (critical), basicConstraints CA:false (critical), subject and authority
    /// key identifiers, a random positive 128-bit serial, valid from one minute before `now` for
    /// `ttl` (never past the CA's own expiry).
    ///
    /// - Parameter expected: the workload identity the caller has authorised this requester
    ///   to hold (`spiffe://<td>/ns/<ns>/sa/<sa>` in this CA's trust domain).
    public func signWorkloadCSR(
        _ csr: CertificateSigningRequest,
        expected: SpiffeID,
        ttl: Duration = defaultWorkloadTTL,
        now: Date = Date()
    ) throws(IdentityError) -> Certificate {
        try checkWorkloadCSR(csr, expected: expected)
        return try issueLeaf(for: expected, publicKey: csr.publicKey, usages: [.serverAuth, .clientAuth], ttl: ttl, now: now)
    }

    /// As ``signWorkloadCSR(_:expected:ttl:now:)-(CertificateSigningRequest,_,_,_)``, for a CSR as PEM text or DER bytes.
    public func signWorkloadCSR(
        _ csr: [UInt8],
        expected: SpiffeID,
        ttl: Duration = defaultWorkloadTTL,
        now: Date = Date()
    ) throws(IdentityError) -> Certificate {
        try signWorkloadCSR(PEM.decodeCSR(pemOrDER: csr), expected: expected, ttl: ttl, now: now)
    }

    /// As ``signWorkloadCSR(_:expected:ttl:now:)-(CertificateSigningRequest,_,_,_)``, for a CSR as PEM text.
    public func signWorkloadCSR(
        _ csrPEM: String,
        expected: SpiffeID,
        ttl: Duration = defaultWorkloadTTL,
        now: Date = Date()
    ) throws(IdentityError) -> Certificate {
        try signWorkloadCSR(PEM.decodeCSR(csrPEM), expected: expected, ttl: ttl, now: now)
    }

    // MARK: Checks

    func checkWorkloadCSR(_ csr: CertificateSigningRequest, expected: SpiffeID) throws(IdentityError) {
        guard case .workload = expected.kind else {
            throw IdentityError(.invalidIdentity, "signWorkloadCSR issues workload identities (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>) only, but was asked for \(expected); node credentials come from issueNodeCredential")
        }
        guard expected.trustDomain == trustDomain else {
            throw IdentityError(.wrongTrustDomain, "\(expected) is in trust domain \"\(expected.trustDomain)\" but this CA signs for \"\(trustDomain)\"; check the trust domain in the control plane's and the node's config")
        }
        // Proof of possession first: nothing in the request is worth reading until we know the
        // requester holds the key it wants certified and the content is what it signed.
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw IdentityError(.csrSignatureInvalid, "the CSR for \(expected) does not carry a valid signature by its own key: it was altered after signing or signed with another key; have the node generate a fresh key and CSR")
        }
        guard P256.Signing.PublicKey(csr.publicKey) != nil else {
            throw IdentityError(.unsupportedKey, "the CSR for \(expected) holds a \(csr.publicKey); mesh certificates use ECDSA P-256 keys only")
        }

        let requests = csr.attributes.filter { $0.oid == .CSRAttributes.extensionRequest }
        guard requests.count <= 1 else {
            throw IdentityError(.malformedCSR, "the CSR for \(expected) has \(requests.count) extensionRequest attributes; a well-formed CSR has at most one")
        }
        let extensions: Certificate.Extensions
        do {
            extensions = try csr.attributes.extensionRequest?.extensions ?? Certificate.Extensions()
        } catch {
            throw IdentityError(.malformedCSR, "the CSR for \(expected) has an unreadable extensionRequest (\(error))")
        }

        var sawSAN = false
        for ext in extensions {
            switch ext.oid {
            case .X509ExtensionID.subjectAlternativeName:
                sawSAN = true
                try checkRequestedNames(ext, expected: expected)
            case .X509ExtensionID.basicConstraints:
                if case .isCertificateAuthority = try decode(ext, expected, as: BasicConstraints.init) {
                    throw IdentityError(.csrForbiddenExtension, "the CSR for \(expected) requests basicConstraints CA:true; workload certificates are never CAs")
                }
            case .X509ExtensionID.keyUsage:
                let usage = try decode(ext, expected, as: KeyUsage.init)
                if usage.keyCertSign || usage.cRLSign {
                    throw IdentityError(.csrForbiddenExtension, "the CSR for \(expected) requests keyUsage \(usage); keyCertSign and cRLSign are for CAs only")
                }
            case .X509ExtensionID.extendedKeyUsage:
                let eku = try decode(ext, expected, as: ExtendedKeyUsage.init)
                let other = eku.filter { $0 != .serverAuth && $0 != .clientAuth }
                if !other.isEmpty {
                    throw IdentityError(.csrForbiddenExtension, "the CSR for \(expected) requests extended key usage \(other.map { String(describing: $0) }.joined(separator: ", ")); mesh certificates carry serverAuth and clientAuth only")
                }
            case .X509ExtensionID.nameConstraints:
                throw IdentityError(.csrForbiddenExtension, "the CSR for \(expected) requests nameConstraints, which only a CA certificate carries")
            default:
                if ext.critical {
                    throw IdentityError(.csrForbiddenExtension, "the CSR for \(expected) requests critical extension \(ext.oid), which Weft does not grant; remove it from the request")
                }
            }
        }
        guard sawSAN else {
            throw IdentityError(.csrMissingIdentity, "the CSR requests no subjectAltName; it must request exactly the URI SAN \(expected) (weftd's SpiffeID.makeCSR does this; with openssl: -addext \"subjectAltName=URI:\(expected)\")")
        }
    }

    private func checkRequestedNames(_ ext: Certificate.Extension, expected: SpiffeID) throws(IdentityError) {
        let names = try decode(ext, expected, as: SubjectAlternativeNames.init)
        var uris: [String] = []
        var others: [String] = []
        for name in names {
            if case .uniformResourceIdentifier(let uri) = name { uris.append(uri) } else { others.append(Self.describe(name)) }
        }
        guard others.isEmpty else {
            throw IdentityError(.csrExtraNames, "the CSR for \(expected) also requests \(others.joined(separator: ", ")); mesh certificates carry exactly one URI SAN, the SPIFFE ID, and no DNS, IP or other names")
        }
        guard let uri = uris.first else {
            throw IdentityError(.csrMissingIdentity, "the CSR's subjectAltName holds no URI; it must request exactly the URI SAN \(expected)")
        }
        guard uris.count == 1 else {
            throw IdentityError(.csrExtraNames, "the CSR requests \(uris.count) URI SANs (\(uris.joined(separator: ", "))); a mesh certificate carries exactly one SPIFFE ID, \(expected)")
        }
        let requested: SpiffeID
        do {
            requested = try SpiffeID(parsing: uri, field: "subjectAltName")
        } catch {
            throw IdentityError(.csrIdentityMismatch, "the CSR requests URI SAN \"\(uri)\", which is not a valid SPIFFE ID (\(error.message)); expected \(expected)")
        }
        guard requested == expected else {
            throw IdentityError(.csrIdentityMismatch, "the CSR requests \(requested) but the caller authorised \(expected); check which workload the node asked for and that its namespace and service account match the workload's config")
        }
    }

    private func decode<T>(_ ext: Certificate.Extension, _ expected: SpiffeID, as parse: (Certificate.Extension) throws -> T) throws(IdentityError) -> T {
        try mapError(.malformedCSR, "the CSR for \(expected) requests an unreadable \(ext.oid) extension") { try parse(ext) }
    }

    static func describe(_ name: GeneralName) -> String {
        switch name {
        case .dnsName(let s): return "DNS:\(s)"
        case .rfc822Name(let s): return "email:\(s)"
        case .ipAddress(let b): return "IP:\(b.bytes.map { String($0) }.joined(separator: "."))"
        case .uniformResourceIdentifier(let s): return "URI:\(s)"
        case .directoryName(let dn): return "DirName:\(dn)"
        case .registeredID(let oid): return "RID:\(oid)"
        case .otherName(let o): return "otherName:\(o.typeID)"
        case .x400Address: return "an X.400 address"
        case .ediPartyName: return "an EDI party name"
        }
    }

    // MARK: Issuing

    func issueLeaf(
        for id: SpiffeID,
        publicKey: Certificate.PublicKey,
        usages: [ExtendedKeyUsage.Usage],
        ttl: Duration,
        now: Date
    ) throws(IdentityError) -> Certificate {
        guard ttl > .zero else {
            throw IdentityError(.invalidTTL, "the certificate lifetime for \(id) must be positive, got \(ttl)")
        }
        guard P256.Signing.PublicKey(publicKey) != nil else {
            throw IdentityError(.unsupportedKey, "the key to certify for \(id) is a \(publicKey); mesh certificates use ECDSA P-256 keys only")
        }
        guard now < certificate.notValidAfter else {
            throw IdentityError(.caExpired, "the CA certificate expired at \(certificate.notValidAfter.rfc3339), so nothing it signs would verify; create or supply a new root and roll it out to all nodes")
        }
        guard now >= certificate.notValidBefore else {
            throw IdentityError(.caNotYetValid, "the CA certificate is not valid until \(certificate.notValidBefore.rfc3339) (now \(now.rfc3339)); check this host's clock (`timedatectl`)")
        }
        // A leaf outliving its issuer would fail verification after the CA expires anyway;
        // capping keeps the renewal schedule (half of the real lifetime) honest.
        let notAfter = min(now.addingTimeInterval(ttl.timeInterval), certificate.notValidAfter)
        let notBefore = now.addingTimeInterval(-Self.clockSkewAllowance.timeInterval)
        let aki = keyIdentifier
        return try mapError(.signingFailed, "could not sign the certificate for \(id)") {
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage(usages)
                SubjectKeyIdentifier(hash: publicKey)
                AuthorityKeyIdentifier(keyIdentifier: aki)
                // Not critical, so the subject below must be non-empty (RFC 5280 4.2.1.6); a
                // critical SAN would also trip verifiers that do not process SANs as a policy.
                SubjectAlternativeNames([.uniformResourceIdentifier(id.uri)])
            }
            return try Certificate(
                version: .v3,
                serialNumber: .random128(),
                publicKey: publicKey,
                notValidBefore: notBefore,
                notValidAfter: notAfter,
                issuer: certificate.subject,
                subject: try DistinguishedName { OrganizationName("Weft") },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: extensions,
                issuerPrivateKey: privateKey
            )
        }
    }
}
