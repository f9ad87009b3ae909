import Foundation
import Testing
import WeftControlClient
import WeftCore
import WeftIdentity

#if canImport(Glibc)
import Glibc
#endif

/// A loopback port nothing listens on: bound, then closed.
func weftctlUnusedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw WeftctlTestError("socket failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
            bind(fd, p, length) == 0 && getsockname(fd, p, &length) == 0
        }
    }
    guard bound else { throw WeftctlTestError("bind failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}

func foreignCAPEM() throws -> String {
    try MeshCA.create(trustDomain: try TrustDomain("example.test")).certificatePEM
}

@Suite("Client: transport errors")
struct ClientTransportTests {
    @Test("a refused connection says so, and asks whether the server runs and --server is right")
    func connectionRefused() async throws {
        let port = try weftctlUnusedPort()
        let endpoint = ControlEndpoint(url: "https://127.0.0.1:\(port)", caBundlePEM: try foreignCAPEM())
        let client = try ControlClient(endpoint: endpoint, credentials: .adminToken("t"))
        let error = await controlError { _ = try await client.status() }
        #expect(error?.kind == .unreachable)
        #expect(error?.description == "cannot reach weft-control at https://127.0.0.1:\(port): connection refused — is it running, and is --server right?")
        try await client.shutdown()
    }

    @Test("a CA bundle without a certificate is refused before anything is sent")
    func unreadableCABundle() {
        #expect {
            _ = try ControlClient(endpoint: ControlEndpoint(url: "https://127.0.0.1:1", caBundlePEM: "not pem"), credentials: .none)
        } throws: { error in
            let e = error as? ControlError
            return e?.kind == .usage && e?.description.contains("--ca-file") == true
        }
    }

    @Test("a URL that is not https is refused with the expected form")
    func badURL() throws {
        let pem = try foreignCAPEM()
        #expect {
            _ = try ControlClient(endpoint: ControlEndpoint(url: "http://127.0.0.1:15443", caBundlePEM: pem), credentials: .none)
        } throws: { error in
            (error as? ControlError)?.description.contains("write --server as https://HOST:PORT") == true
        }
    }

    @Test("a bare host:port is taken as https, and a trailing slash is dropped")
    func endpointNormalisation() {
        #expect(ControlEndpoint(url: "10.0.0.5:15443", caBundlePEM: "").url == "https://10.0.0.5:15443")
        #expect(ControlEndpoint(url: "https://weft-control:15443/", caBundlePEM: "").url == "https://weft-control:15443")
    }

    @Test("a node key that is not PEM is refused before anything is sent")
    func badNodeKey() throws {
        let pem = try foreignCAPEM()
        #expect {
            _ = try ControlClient(endpoint: ControlEndpoint(url: "https://127.0.0.1:1", caBundlePEM: pem),
                                  credentials: .nodeCertificate(certificatePEM: pem, privateKeyPEM: "nope"))
        } throws: { error in
            (error as? ControlError)?.kind == .usage
        }
    }
}
