import Crypto
import SwiftASN1
import X509

/// PEM encoding and decoding of the objects the mesh moves around, with errors that say what
/// was found instead of what was expected.
public enum PEM {
    // MARK: Encoding

    public static func encode(_ certificate: Certificate) throws(IdentityError) -> String {
        try mapError(.malformedCertificate, "could not encode the certificate as PEM") {
            try certificate.serializeAsPEM().pemString
        }
    }

    /// A bundle: each certificate as its own PEM block, in order (leaf first for a chain).
    public static func encode(_ certificates: [Certificate]) throws(IdentityError) -> String {
        var out = ""
        for c in certificates { out += try encode(c) + "\n" }
        return out
    }

    public static func encode(_ csr: CertificateSigningRequest) throws(IdentityError) -> String {
        try mapError(.malformedCSR, "could not encode the CSR as PEM") {
            try csr.serializeAsPEM().pemString
        }
    }

    /// PKCS#8 (`-----BEGIN PRIVATE KEY-----`), what `openssl pkey` and most TLS stacks read.
    public static func encode(_ privateKey: P256.Signing.PrivateKey) -> String {
        privateKey.pemRepresentation
    }

    // MARK: Decoding

    public static func decodeCertificate(_ pem: String) throws(IdentityError) -> Certificate {
        let docs = try documents(pem, expecting: "a certificate (-----BEGIN CERTIFICATE-----)")
        guard docs.count == 1 else {
            throw IdentityError(.malformedCertificate, "expected one certificate but found \(docs.count) PEM blocks; keep only the CA certificate in this file")
        }
        return try certificate(docs[0])
    }

    /// Every certificate of a bundle, in file order.
    public static func decodeCertificates(_ pem: String) throws(IdentityError) -> [Certificate] {
        var out: [Certificate] = []
        for d in try documents(pem, expecting: "certificates (-----BEGIN CERTIFICATE-----)") { out.append(try certificate(d)) }
        return out
    }

    /// Reads a P-256 key in PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) form.
    public static func decodePrivateKey(_ pem: String) throws(IdentityError) -> P256.Signing.PrivateKey {
        let docs = try documents(pem, expecting: "a private key (-----BEGIN PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)")
        guard docs.count == 1, let doc = docs.first else {
            throw IdentityError(.malformedKey, "expected one private key but found \(docs.count) PEM blocks")
        }
        switch doc.discriminator {
        case "PRIVATE KEY", "EC PRIVATE KEY":
            if let key = try? P256.Signing.PrivateKey(pemRepresentation: doc.pemString) { return key }
            // Tell a valid key of the wrong kind apart from garbage: the fixes differ.
            if let other = try? Certificate.PrivateKey(pemDocument: doc) {
                throw IdentityError(.unsupportedKey, "the private key is \(other.publicKey) but Weft uses ECDSA P-256 only; generate one with `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`")
            }
            throw IdentityError(.malformedKey, "the \(doc.discriminator) block does not hold a readable key; check that the file was not truncated or edited")
        case "ENCRYPTED PRIVATE KEY":
            throw IdentityError(.malformedKey, "the private key is encrypted; Weft reads unencrypted keys protected by file permissions: decrypt it with `openssl pkey -in KEY -out ca.key` and `chmod 600 ca.key`")
        case "RSA PRIVATE KEY":
            throw IdentityError(.unsupportedKey, "the private key is RSA but Weft uses ECDSA P-256 only; create a P-256 CA key and root")
        default:
            throw IdentityError(.malformedKey, "expected a private key but found a \(doc.discriminator) PEM block")
        }
    }

    public static func decodeCSR(_ pem: String) throws(IdentityError) -> CertificateSigningRequest {
        let docs = try documents(pem, expecting: "a CSR (-----BEGIN CERTIFICATE REQUEST-----)")
        guard docs.count == 1, let doc = docs.first else {
            throw IdentityError(.malformedCSR, "expected one certificate request but found \(docs.count) PEM blocks")
        }
        // "NEW CERTIFICATE REQUEST" is what older OpenSSL and Netscape tools write; same DER inside.
        guard doc.discriminator == "CERTIFICATE REQUEST" || doc.discriminator == "NEW CERTIFICATE REQUEST" else {
            throw IdentityError(.malformedCSR, "expected a certificate request but found a \(doc.discriminator) PEM block")
        }
        return try decodeCSR(der: doc.derBytes)
    }

    /// Accepts either PEM text or raw DER, as CSRs arrive both ways over the wire.
    public static func decodeCSR(pemOrDER bytes: [UInt8]) throws(IdentityError) -> CertificateSigningRequest {
        // DER always starts with a SEQUENCE tag (0x30); PEM with text.
        if bytes.first == 0x30 { return try decodeCSR(der: bytes) }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw IdentityError(.malformedCSR, "the CSR is neither DER (it does not start with an ASN.1 SEQUENCE) nor UTF-8 PEM text")
        }
        return try decodeCSR(text)
    }

    static func decodeCSR(der: [UInt8]) throws(IdentityError) -> CertificateSigningRequest {
        try mapError(.malformedCSR, "the bytes are not a PKCS#10 certificate signing request") {
            try CertificateSigningRequest(derEncoded: der)
        }
    }

    // MARK: Helpers

    static func documents(_ pem: String, expecting what: String) throws(IdentityError) -> [PEMDocument] {
        let docs: [PEMDocument]
        do {
            docs = try PEMDocument.parseMultiple(pemString: pem)
        } catch {
            throw IdentityError(.malformedPEM, "expected PEM text holding \(what) but could not parse it (\(error)); check that the file is PEM, not DER, and was not truncated")
        }
        guard !docs.isEmpty else {
            throw IdentityError(.malformedPEM, "expected PEM text holding \(what) but found no PEM block")
        }
        return docs
    }

    static func certificate(_ doc: PEMDocument) throws(IdentityError) -> Certificate {
        guard doc.discriminator == Certificate.defaultPEMDiscriminator else {
            throw IdentityError(.malformedCertificate, "expected a certificate but found a \(doc.discriminator) PEM block")
        }
        return try mapError(.malformedCertificate, "the CERTIFICATE block is not a readable X.509 certificate") {
            try Certificate(derEncoded: doc.derBytes)
        }
    }
}
