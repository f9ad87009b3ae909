/// Every refusal of the identity layer: loading or saving the CA, issuing, parsing PEM,
/// redeeming bootstrap tokens, verifying a peer.
///
/// Match on ``code``; show ``message``, which says what happened and what to check. The codes
/// wrap a private enum so that new ones can be added without breaking callers' switches.
public struct IdentityError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable {
            case invalidIdentity
            case wrongTrustDomain
            case invalidTTL
            case unsupportedKey
            case malformedPEM
            case malformedCSR
            case csrSignatureInvalid
            case csrMissingIdentity
            case csrIdentityMismatch
            case csrExtraNames
            case csrForbiddenExtension
            case caFileMissing
            case caFileUnreadable
            case caAlreadyExists
            case caWriteFailed
            case insecureKeyPermissions
            case malformedCertificate
            case malformedKey
            case keyDoesNotMatchCertificate
            case notACertificateAuthority
            case caExpired
            case caNotYetValid
            case signingFailed
            case tokenMalformed
            case tokenUnknown
            case tokenSecretMismatch
            case tokenExpired
            case tokenAlreadyUsed
            case peerNotTrusted
            case peerIdentityInvalid
        }

        fileprivate let base: Base
        fileprivate init(_ base: Base) { self.base = base }

        /// A node name or SPIFFE ID is not one the CA issues.
        public static let invalidIdentity = Code(.invalidIdentity)
        /// A SPIFFE ID belongs to another trust domain than the CA's.
        public static let wrongTrustDomain = Code(.wrongTrustDomain)
        /// A lifetime is zero or negative.
        public static let invalidTTL = Code(.invalidTTL)
        /// A key is not ECDSA P-256.
        public static let unsupportedKey = Code(.unsupportedKey)
        /// Text is not PEM of the expected kind.
        public static let malformedPEM = Code(.malformedPEM)
        /// Bytes are not a PKCS#10 certificate signing request.
        public static let malformedCSR = Code(.malformedCSR)
        /// A CSR's signature does not verify with the public key it carries.
        public static let csrSignatureInvalid = Code(.csrSignatureInvalid)
        /// A CSR requests no URI subject alternative name.
        public static let csrMissingIdentity = Code(.csrMissingIdentity)
        /// A CSR requests another SPIFFE ID than the one the caller authorised.
        public static let csrIdentityMismatch = Code(.csrIdentityMismatch)
        /// A CSR requests names beyond its one SPIFFE ID (DNS, IP, e-mail, a second URI...).
        public static let csrExtraNames = Code(.csrExtraNames)
        /// A CSR requests an extension the CA will not grant (CA:true, certificate signing...).
        public static let csrForbiddenExtension = Code(.csrForbiddenExtension)
        public static let caFileMissing = Code(.caFileMissing)
        public static let caFileUnreadable = Code(.caFileUnreadable)
        /// `save` would replace an existing CA.
        public static let caAlreadyExists = Code(.caAlreadyExists)
        public static let caWriteFailed = Code(.caWriteFailed)
        /// The CA key file is open to group or others.
        public static let insecureKeyPermissions = Code(.insecureKeyPermissions)
        public static let malformedCertificate = Code(.malformedCertificate)
        public static let malformedKey = Code(.malformedKey)
        public static let keyDoesNotMatchCertificate = Code(.keyDoesNotMatchCertificate)
        /// The certificate offered as the CA is not allowed to sign certificates.
        public static let notACertificateAuthority = Code(.notACertificateAuthority)
        public static let caExpired = Code(.caExpired)
        public static let caNotYetValid = Code(.caNotYetValid)
        /// Producing a signature failed; nothing the caller sent is at fault.
        public static let signingFailed = Code(.signingFailed)
        public static let tokenMalformed = Code(.tokenMalformed)
        public static let tokenUnknown = Code(.tokenUnknown)
        public static let tokenSecretMismatch = Code(.tokenSecretMismatch)
        public static let tokenExpired = Code(.tokenExpired)
        public static let tokenAlreadyUsed = Code(.tokenAlreadyUsed)
        /// A peer's chain does not lead to a trusted root under RFC 5280 rules.
        public static let peerNotTrusted = Code(.peerNotTrusted)
        /// A peer's certificate chains correctly but does not carry exactly one usable SPIFFE ID.
        public static let peerIdentityInvalid = Code(.peerIdentityInvalid)

        public var description: String { base.rawValue }
    }

    public let code: Code
    /// What happened and what to check, for an operator's eyes.
    public let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
