import Crypto
import X509

extension SpiffeID {
    /// A PKCS#10 request for this identity, signed by `privateKey`: an empty subject and an
    /// extensionRequest holding exactly one URI SAN, this ID — the shape
    /// ``MeshCA/signWorkloadCSR(_:expected:ttl:now:)-(CertificateSigningRequest,_,_,_)`` accepts.
    public func makeCSR(privateKey: P256.Signing.PrivateKey) throws(IdentityError) -> CertificateSigningRequest {
        try mapError(.signingFailed, "could not build a CSR for \(self)") {
            let extensions = try Certificate.Extensions {
                SubjectAlternativeNames([.uniformResourceIdentifier(uri)])
            }
            let attributes = CertificateSigningRequest.Attributes(
                [try CertificateSigningRequest.Attribute(ExtensionRequest(extensions: extensions))]
            )
            return try CertificateSigningRequest(
                version: .v1,
                subject: DistinguishedName(),
                privateKey: Certificate.PrivateKey(privateKey),
                attributes: attributes,
                signatureAlgorithm: .ecdsaWithSHA256
            )
        }
    }

    /// A fresh P-256 key and a CSR for it. The key never leaves the node; only the CSR is sent.
    public func makeKeyAndCSR() throws(IdentityError) -> (privateKey: P256.Signing.PrivateKey, csr: CertificateSigningRequest) {
        let key = P256.Signing.PrivateKey()
        return (key, try makeCSR(privateKey: key))
    }
}
