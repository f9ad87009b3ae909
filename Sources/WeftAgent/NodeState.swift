import Crypto
import Foundation
import Glibc
import WeftCore
import WeftIdentity
import X509

/// What a node keeps on disk between restarts when it is run by weft-control:
/// its credential (`node.crt`, `node.key` 0600, `ca.crt`) and the last snapshot
/// it applied (`snapshot.json`), so that it keeps enforcing the last known
/// state while the control API is unreachable.
struct NodeStateDir {
    let path: String

    var certificatePath: String { "\(path)/node.crt" }
    var keyPath: String { "\(path)/node.key" }
    var caPath: String { "\(path)/ca.crt" }
    var snapshotPath: String { "\(path)/snapshot.json" }

    func ensure() throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    }

    func credential() -> (certificatePEM: String, keyPEM: String, caPEM: String)? {
        guard let cert = try? String(contentsOfFile: certificatePath, encoding: .utf8),
              let key = try? String(contentsOfFile: keyPath, encoding: .utf8),
              let ca = try? String(contentsOfFile: caPath, encoding: .utf8) else { return nil }
        return (cert, key, ca)
    }

    func saveCredential(certificatePEM: String, keyPEM: String, caPEM: String) throws {
        try ensure()
        try write(keyPEM, to: keyPath, mode: 0o600)
        try write(certificatePEM, to: certificatePath, mode: 0o644)
        try write(caPEM, to: caPath, mode: 0o644)
    }

    func snapshot() -> NodeSnapshot? {
        guard let data = FileManager.default.contents(atPath: snapshotPath) else { return nil }
        return try? JSONDecoder().decode(NodeSnapshot.self, from: data)
    }

    func saveSnapshot(_ snapshot: NodeSnapshot) throws {
        try ensure()
        let data = try JSONEncoder().encode(snapshot)
        try write(String(decoding: data, as: UTF8.self), to: snapshotPath, mode: 0o600)
    }

    /// Written to a temporary file created with its final mode, then renamed:
    /// a crash leaves the old file or the new one, never half of one, and a
    /// key is never readable by others even for an instant.
    private func write(_ text: String, to target: String, mode: mode_t) throws {
        let tmp = "\(target).tmp.\(getpid())"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw AgentError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let ok = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) == $0.count } && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, target) == 0 else {
            unlink(tmp)
            throw AgentError("cannot write \(target): \(String(cString: strerror(errno)))")
        }
    }
}

enum NodeKey {
    /// A fresh P-256 key and a CSR naming the node only in its subject: the
    /// control API puts the node's SPIFFE ID in the certificate it issues.
    static func makeKeyAndCSR(node: String) throws -> (keyPEM: String, csrPEM: String) {
        let key = P256.Signing.PrivateKey()
        let csr = try CertificateSigningRequest(
            version: .v1,
            subject: try DistinguishedName { CommonName(node) },
            privateKey: Certificate.PrivateKey(key),
            attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256)
        return (PEM.encode(key), try PEM.encode(csr))
    }
}
