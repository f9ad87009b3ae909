import Crypto
import Foundation
import WeftCore
import WeftIdentity
import X509

#if canImport(Glibc)
import Glibc
#endif

/// weft-control's data dir (docs/control-api.md, "Running"): made on first
/// start, reused afterwards.
///
///     weft.db               the SQLite store
///     ca/ca.crt, ca/ca.key  the mesh CA (generated, or the operator's pair placed there first)
///     server.crt, .key      the TLS server certificate, issued by the CA
///     admin.token           the operators' bearer token (0600)
struct DataDirectory {
    let path: String

    var storePath: String { path + "/weft.db" }
    var caDirectory: String { path + "/ca" }
    var serverCertificatePath: String { path + "/server.crt" }
    var serverKeyPath: String { path + "/server.key" }
    var adminTokenPath: String { path + "/admin.token" }

    struct Material {
        var ca: MeshCA
        var caKey: P256.Signing.PrivateKey
        var serverCertificatePEM: String
        var serverKeyPEM: String
        var adminToken: String
    }

    /// Creates whatever is missing and loads the rest.
    func prepare(trustDomain: TrustDomain, listenHost: String, now: Date = Date()) throws -> Material {
        try Self.makeDirectory(path)

        let ca: MeshCA
        if FileManager.default.fileExists(atPath: caDirectory + "/" + MeshCA.certificateFileName)
            || FileManager.default.fileExists(atPath: caDirectory + "/" + MeshCA.keyFileName) {
            ca = try MeshCA.load(from: caDirectory, trustDomain: trustDomain, now: now)
        } else {
            ca = try MeshCA.create(trustDomain: trustDomain, now: now)
            try ca.save(to: caDirectory)
        }
        // MeshCA keeps its key to itself; the server certificate is signed with
        // the same key, read from the file MeshCA.load has just checked.
        let caKey = try PEM.decodePrivateKey(try Self.read(caDirectory + "/" + MeshCA.keyFileName))

        let names = ServerCertificate.names(listenHost: listenHost)
        var certPEM = (try? Self.read(serverCertificatePath)) ?? ""
        var keyPEM = (try? Self.read(serverKeyPath)) ?? ""
        let keyMatches = (try? PEM.decodePrivateKey(keyPEM)).map { key in
            (try? PEM.decodeCertificate(certPEM)).map { $0.publicKey == Certificate.PublicKey(key.publicKey) } ?? false
        } ?? false
        if !keyMatches || !ServerCertificate.isUsable(certPEM, names: names, caCertificate: ca.certificate, now: now) {
            (certPEM, keyPEM) = try ServerCertificate.issue(names: names, caCertificate: ca.certificate, caKey: caKey, now: now)
            try Self.write(keyPEM, to: serverKeyPath, mode: 0o600)
            try Self.write(certPEM, to: serverCertificatePath, mode: 0o644)
        }

        let token: String
        if FileManager.default.fileExists(atPath: adminTokenPath) {
            try Self.requirePrivate(adminTokenPath, what: "admin token")
            token = try Self.read(adminTokenPath).trimmingCharacters(in: .whitespacesAndNewlines)
            guard token.count >= 22 else {
                throw BootstrapError("\(adminTokenPath) holds \(token.count) characters; an admin token needs at least 128 random bits. Delete the file and restart weft-control to generate one")
            }
        } else {
            token = Self.randomToken()
            try Self.write(token + "\n", to: adminTokenPath, mode: 0o600)
        }
        return Material(ca: ca, caKey: caKey, serverCertificatePEM: certPEM, serverKeyPEM: keyPEM, adminToken: token)
    }

    /// 256 random bits, hex.
    static func randomToken() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let s = String(rng.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined()
    }

    static func makeDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw BootstrapError("the data dir \(path) exists but is not a directory") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw BootstrapError("cannot create the data dir \(path): \(error.localizedDescription); check that its parent is writable by this user")
        }
    }

    static func read(_ path: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw BootstrapError("cannot read \(path): \(error.localizedDescription)")
        }
    }

    /// Refuses a secret that group or others can read, as MeshCA does for its key.
    static func requirePrivate(_ path: String, what: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw BootstrapError("cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & 0o077 == 0 else {
            throw BootstrapError("the \(what) \(path) has mode \(String(st.st_mode & 0o777, radix: 8)), readable by group or others; run `chmod 600 \(path)` and consider the token exposed (delete it to get a new one)")
        }
    }

    /// Writes through a temporary file created with `mode` from the start (a
    /// secret is never briefly world-readable), then renames it into place.
    static func write(_ text: String, to path: String, mode: mode_t) throws {
        let tmp = path + ".tmp-\(getpid())"
        unlink(tmp)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw BootstrapError("cannot create \(tmp): \(String(cString: strerror(errno))); check that the data dir is writable") }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(tmp)
                throw BootstrapError("cannot write \(path): \(reason); check free space")
            }
            offset += n
        }
        if mode & 0o077 != 0 { fchmod(fd, mode) }
        fsync(fd)
        close(fd)
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw BootstrapError("cannot move \(tmp) to \(path): \(reason)")
        }
    }
}

/// A failure to prepare the data dir, saying which file and what to do.
public struct BootstrapError: Error, CustomStringConvertible, Sendable {
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}
