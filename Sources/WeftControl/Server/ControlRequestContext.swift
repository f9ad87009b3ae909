import Hummingbird
import NIOCore
import NIOSSL
import X509

/// The request context: Hummingbird's core storage plus the connection, which
/// is where the TLS client certificate is (node endpoints authenticate by it).
public struct ControlRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// The client certificate the TLS handshake verified against the mesh CA, if
    /// the client sent one (client certificates are optional at the TLS layer so
    /// that operators and joining nodes can connect without one).
    func peerCertificate() async -> Certificate? {
        guard let nio = try? await channel.nioSSL_peerCertificate().get(),
              let der = try? nio.toDERBytes() else { return nil }
        return try? Certificate(derEncoded: der)
    }
}
