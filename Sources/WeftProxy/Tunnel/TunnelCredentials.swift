import Foundation
import NIOCore
import NIOSSL
import Synchronization
import WeftCore
import WeftIdentity
import X509

/// One workload identity's certificate and key, ready for TLS.
public struct TunnelCredential: Sendable {
    public let identity: String
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    public let notAfter: Date
    /// Bumped on every install: a tunnel made with an older generation is
    /// not reused for new connections after a rotation.
    let generation: Int
}

/// The workload certificates this node holds and the mesh's trust bundle,
/// replaced as the agent renews them. The data path reads them once per new
/// tunnel or handshake, never per byte.
public final class TunnelCredentials: Sendable {
    private struct State {
        var byIdentity: [String: TunnelCredential] = [:]
        var trust: TrustBundle?
        var roots: [NIOSSLCertificate] = []
        var rootsPEM = ""
        var generation = 0
        var rootsVersion = 0
        var clientContexts: [String: (generation: Int, context: NIOSSLContext)] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Installs (or replaces) the certificate of one identity. The CA bundle
    /// comes with each certificate; when it changes, every context is rebuilt.
    public func install(identity: String, certificatePEM: String, privateKeyPEM: String, caBundlePEM: String,
                        trustDomain: String, notAfter: Date) throws {
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
        let key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
        let td = try TrustDomain(trustDomain)
        let bundle = try TrustBundle(trustDomain: td, pem: caBundlePEM)
        let roots = try NIOSSLCertificate.fromPEMBytes(Array(caBundlePEM.utf8))
        state.withLock { s in
            s.generation += 1
            if s.rootsPEM != caBundlePEM || s.trust?.trustDomain != td {
                s.rootsPEM = caBundlePEM
                s.roots = roots
                s.trust = bundle
                s.rootsVersion += 1
                s.clientContexts = [:]
            }
            s.byIdentity[identity] = TunnelCredential(identity: identity, chain: chain, key: key, notAfter: notAfter,
                                                      generation: s.generation)
        }
    }

    /// Forgets identities no longer on this node.
    public func retain(only identities: Set<String>) {
        state.withLock { s in
            s.byIdentity = s.byIdentity.filter { identities.contains($0.key) }
            s.clientContexts = s.clientContexts.filter { identities.contains($0.key) }
        }
    }

    public func credential(for identity: String) -> TunnelCredential? {
        state.withLock { $0.byIdentity[identity] }
    }

    public var identities: [String] { state.withLock { $0.byIdentity.keys.sorted() } }

    var trustBundle: TrustBundle? { state.withLock { $0.trust } }

    var rootsVersion: Int { state.withLock { $0.rootsVersion } }

    /// The client context presenting `credential`, built once per generation.
    func clientContext(for credential: TunnelCredential) throws -> NIOSSLContext {
        if let cached = state.withLock({ $0.clientContexts[credential.identity] }), cached.generation == credential.generation {
            return cached.context
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.maximumTLSVersion = .tlsv13
        tls.certificateChain = credential.chain.map { .certificate($0) }
        tls.privateKey = .privateKey(credential.key)
        tls.trustRoots = .certificates(state.withLock { $0.roots })
        // The verification callback checks chain, trust domain, key usage and
        // the expected identity; hostnames mean nothing in the mesh.
        tls.certificateVerification = .noHostnameVerification
        tls.applicationProtocols = ["h2"]
        let context = try NIOSSLContext(configuration: tls)
        state.withLock { $0.clientContexts[credential.identity] = (credential.generation, context) }
        return context
    }

    /// A server context whose certificate is chosen per handshake from the
    /// client's server name, so a certificate renewed a moment ago is the one
    /// the next connection sees. `choose` maps the server name (nil when the
    /// client sent none) to an identity; no identity fails the handshake.
    func serverContext(choose: @escaping @Sendable (String?) -> String?) throws -> NIOSSLContext? {
        guard let any = state.withLock({ $0.byIdentity.values.first }) else { return nil }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: any.chain.map { .certificate($0) }, privateKey: .privateKey(any.key))
        tls.minimumTLSVersion = .tlsv13
        tls.maximumTLSVersion = .tlsv13
        tls.trustRoots = .certificates(state.withLock { $0.roots })
        // Requires a client certificate (plaintext and anonymous TLS fail the
        // handshake); the callback decides whether it is a mesh identity.
        tls.certificateVerification = .noHostnameVerification
        tls.applicationProtocols = ["h2"]
        tls.sslContextCallback = { [self] values, promise in
            guard let identity = choose(values.serverHostname), let cred = credential(for: identity) else {
                promise.fail(TunnelError.noCertificate(serverName: values.serverHostname))
                return
            }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = cred.chain.map { .certificate($0) }
            override.privateKey = .privateKey(cred.key)
            promise.succeed(override)
        }
        return try NIOSSLContext(configuration: tls)
    }

    /// The verification both sides run on the peer's chain: it must lead to
    /// the mesh root, be valid now, carry a SPIFFE ID of the mesh's trust
    /// domain and the right key usage. Returns the peer's identity.
    func verify(_ peer: [NIOSSLCertificate], role: TrustBundle.PeerRole) async throws -> SpiffeID {
        guard let bundle = trustBundle else {
            throw TunnelError.peerRefused("this node holds no trust bundle yet")
        }
        let chain: [Certificate]
        do {
            chain = try peer.map { try Certificate(derEncoded: try $0.toDERBytes()) }
        } catch {
            throw TunnelError.peerRefused("unreadable peer certificate: \(error)")
        }
        do {
            return try await bundle.verifyPeer(chain, role: role)
        } catch {
            throw TunnelError.peerRefused("\(error)")
        }
    }
}

public enum TunnelError: Error, CustomStringConvertible {
    case noCertificate(serverName: String?)
    case peerRefused(String)
    case wrongPeer(expected: String, got: String)
    case connectRefused(status: String, authority: String)
    case noSourceIdentity(String)
    case ambiguousDestination(String)

    public var description: String {
        switch self {
        case .noCertificate(let name):
            return "no workload certificate on this node for server name \(name ?? "(none)")"
        case .peerRefused(let why):
            return "peer refused: \(why)"
        case .wrongPeer(let expected, let got):
            return "the destination node presented \(got), but the control plane says the destination is \(expected); refusing to send traffic to it"
        case .connectRefused(let status, let authority):
            return "the destination node answered CONNECT \(authority) with HTTP \(status)"
        case .noSourceIdentity(let why):
            return "no certificate for the source workload yet (\(why)); refusing to send its traffic without mTLS"
        case .ambiguousDestination(let what):
            return "several workloads with different identities share \(what) and none declares the port; declare the workloads' ports"
        }
    }
}
