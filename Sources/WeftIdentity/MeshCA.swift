import Crypto
import Foundation
import WeftCore
import X509

/// The mesh's certificate authority: one ECDSA P-256 root that signs node and workload
/// certificates (X.509 SVIDs) directly.
///
/// Authorization — which node may ask for which identity — is the caller's job: the CA
/// checks only that a request is well formed, proves possession of its key, and asks for
/// exactly the identity the caller says it has authorised.
///
/// Leaves are signed by the root itself, with no intermediate: one key to protect, one
/// certificate to distribute, and chains a verifier builds in a single step. An operator who
/// wants an offline root can hand Weft an intermediate instead (``init(certificatePEM:privateKeyPEM:trustDomain:now:)``);
/// the mesh then treats that certificate as its trust anchor.
public struct MeshCA: Sendable {
    public let trustDomain: TrustDomain
    /// The CA certificate: what nodes and workloads trust, distributed as `ca.crt`.
    public let certificate: Certificate
    // Certificate.PrivateKey rather than P256.Signing.PrivateKey: only the former is Sendable
    // in swift-crypto 3.x on Linux. It is always P-256 here; every initialiser checks that.
    let privateKey: Certificate.PrivateKey

    /// How long a generated root lives unless told otherwise.
    public static let defaultRootValidity: Duration = .days(3650)
    /// Every certificate the CA makes, its own root included, starts this far in the past, so
    /// that a peer whose clock is a little behind the CA's does not reject one issued moments ago.
    public static let clockSkewAllowance: Duration = .seconds(60)

    /// Generates a new self-signed root.
    ///
    /// The root carries basicConstraints CA:true with a path length of 0 (it signs leaves only,
    /// so a leaked leaf key can never mint further certificates even if a CA:true leaf slipped
    /// out), keyUsage keyCertSign and cRLSign, both critical, a subject key identifier, and the
    /// URI SAN `spiffe://<trust-domain>`, which is how ``load(from:trustDomain:now:)`` knows the trust
    /// domain again later.
    public static func create(
        trustDomain: TrustDomain,
        validity: Duration = defaultRootValidity,
        now: Date = Date()
    ) throws(IdentityError) -> MeshCA {
        guard validity > .zero else {
            throw IdentityError(.invalidTTL, "the root's validity must be positive, got \(validity)")
        }
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let cert: Certificate = try mapError(.signingFailed, "could not create the root certificate") {
            let name = try DistinguishedName {
                OrganizationName("Weft")
                CommonName("Weft mesh root CA")
            }
            let extensions = try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
                SubjectAlternativeNames([.uniformResourceIdentifier(trustDomain.id.uri)])
            }
            return try Certificate(
                version: .v3,
                serialNumber: .random128(),
                publicKey: publicKey,
                notValidBefore: now.addingTimeInterval(-clockSkewAllowance.timeInterval),
                notValidAfter: now.addingTimeInterval(validity.timeInterval),
                issuer: name,
                subject: name,
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: extensions,
                issuerPrivateKey: Certificate.PrivateKey(key)
            )
        }
        return MeshCA(trustDomain: trustDomain, certificate: cert, privateKey: Certificate.PrivateKey(key))
    }

    /// Uses an operator-supplied CA certificate and key (PEM).
    ///
    /// Refused unless the certificate is a CA (basicConstraints CA:true, and keyCertSign if it
    /// has a keyUsage), holds an ECDSA P-256 key matching `privateKeyPEM`, and is valid at
    /// `now`. The trust domain comes from the certificate's `spiffe://<td>` URI SAN if it has
    /// one; otherwise `trustDomain` must be given. If both are present they must agree.
    public init(
        certificatePEM: String,
        privateKeyPEM: String,
        trustDomain: TrustDomain? = nil,
        now: Date = Date()
    ) throws(IdentityError) {
        let cert = try PEM.decodeCertificate(certificatePEM)
        let key = try PEM.decodePrivateKey(privateKeyPEM)
        try self.init(certificate: cert, privateKey: key, trustDomain: trustDomain, now: now, source: nil)
    }

    init(trustDomain: TrustDomain, certificate: Certificate, privateKey: Certificate.PrivateKey) {
        self.trustDomain = trustDomain
        self.certificate = certificate
        self.privateKey = privateKey
    }

    /// `source` names the files the material came from, so that messages point at them.
    init(
        certificate cert: Certificate,
        privateKey key: P256.Signing.PrivateKey,
        trustDomain: TrustDomain?,
        now: Date,
        source: (cert: String, key: String)?
    ) throws(IdentityError) {
        let certName = source.map { "the CA certificate \($0.cert)" } ?? "the CA certificate"
        let keyName = source.map { "the CA key \($0.key)" } ?? "the CA key"

        guard let certKey = P256.Signing.PublicKey(cert.publicKey) else {
            throw IdentityError(.unsupportedKey, "\(certName) holds a \(cert.publicKey) but Weft's CA must be ECDSA P-256; issue the root (or intermediate) with a prime256v1 key")
        }
        let basicConstraints: BasicConstraints?
        do {
            basicConstraints = try cert.extensions.basicConstraints
        } catch {
            throw IdentityError(.malformedCertificate, "\(certName) has an unreadable basicConstraints extension (\(error))")
        }
        guard case .isCertificateAuthority = basicConstraints else {
            throw IdentityError(.notACertificateAuthority, "\(certName) (subject \(cert.subject)) is not a CA: it lacks basicConstraints CA:true; supply the root or intermediate certificate, not a leaf")
        }
        if let usage = try? cert.extensions.keyUsage, !usage.keyCertSign {
            throw IdentityError(.notACertificateAuthority, "\(certName) has a keyUsage without keyCertSign, so verifiers will reject what it signs; reissue it with keyUsage keyCertSign, cRLSign")
        }
        guard now >= cert.notValidBefore else {
            throw IdentityError(.caNotYetValid, "\(certName) is not valid until \(cert.notValidBefore.rfc3339) (now \(now.rfc3339)); check this host's clock (`timedatectl`) or the certificate's notBefore")
        }
        guard now < cert.notValidAfter else {
            throw IdentityError(.caExpired, "\(certName) expired at \(cert.notValidAfter.rfc3339); every mesh certificate it signed has expired too — create or supply a new root and roll it out to all nodes")
        }
        guard key.publicKey.rawRepresentation == certKey.rawRepresentation else {
            throw IdentityError(.keyDoesNotMatchCertificate, "\(keyName) is not the private key of \(certName); check that the two files belong together (`openssl x509 -noout -pubkey` and `openssl pkey -pubout` print the same key)")
        }

        let named = Self.trustDomains(in: cert)
        let td: TrustDomain
        if let given = trustDomain {
            guard named.isEmpty || named.contains(given) else {
                throw IdentityError(.wrongTrustDomain, "\(certName) names trust domain \(named.map(\.name).joined(separator: ", ")) but \"\(given)\" was configured; configure the certificate's trust domain or supply a CA made for \"\(given)\"")
            }
            td = given
        } else if named.count == 1 {
            td = named[0]
        } else {
            throw IdentityError(.wrongTrustDomain, "\(certName) does not name exactly one trust domain in a spiffe://<trust-domain> URI SAN; configure the trust domain explicitly")
        }
        self.init(trustDomain: td, certificate: cert, privateKey: Certificate.PrivateKey(key))
    }

    /// Trust domains named by `spiffe://<td>` URI SANs (bare trust-domain IDs only).
    static func trustDomains(in cert: Certificate) -> [TrustDomain] {
        guard let sans = try? cert.extensions.subjectAlternativeNames else { return [] }
        return sans.compactMap { name in
            guard case .uniformResourceIdentifier(let uri) = name,
                  let id = try? SpiffeID(parsing: uri), id.kind == .trustDomain else { return nil }
            return id.trustDomain
        }
    }

    /// The CA certificate as PEM, for distribution to nodes.
    public var certificatePEM: String {
        // Encoding a certificate this type parsed or built cannot fail.
        (try? PEM.encode(certificate)) ?? ""
    }

    /// The key identifier leaves name in their authorityKeyIdentifier: the CA's own
    /// subjectKeyIdentifier when it has one (an operator's CA may use another derivation), so
    /// that verifiers matching AKI to SKI find it.
    var keyIdentifier: ArraySlice<UInt8> {
        if let ski = try? certificate.extensions.subjectKeyIdentifier { return ski.keyIdentifier }
        return SubjectKeyIdentifier(hash: certificate.publicKey).keyIdentifier
    }
}
