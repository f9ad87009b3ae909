import Crypto
import Foundation
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension MeshCA {
    public static let certificateFileName = "ca.crt"
    public static let keyFileName = "ca.key"

    /// Writes `ca.crt` (mode 0644) and `ca.key` (mode 0600) into `directory`, creating the
    /// directory with mode 0700 if it does not exist.
    ///
    /// The key is written to a temporary file created 0600 from the start, never widened and
    /// narrowed afterwards, so there is no moment when another user could open it; then moved
    /// into place, so a crash leaves either the old file or the new one, never half a key.
    /// Replacing an existing CA is refused unless `overwrite` is set: a new root invalidates
    /// every certificate in the mesh.
    public func save(to directory: String, overwrite: Bool = false) throws(IdentityError) {
        let certPath = directory + "/" + Self.certificateFileName
        let keyPath = directory + "/" + Self.keyFileName
        try SecureFiles.ensureDirectory(directory)
        if !overwrite {
            for path in [keyPath, certPath] where SecureFiles.exists(path) {
                throw IdentityError(.caAlreadyExists, "\(path) already exists; a new root would invalidate every certificate in the mesh. Load the existing CA, or move the old files away first if replacing it is intended")
            }
        }
        let keyPEM = try mapError(.caWriteFailed, "could not encode the CA key") { try privateKey.serializeAsPEM().pemString }
        try SecureFiles.writeFile(Array((keyPEM + "\n").utf8), to: keyPath, mode: 0o600, replace: overwrite)
        let mode = try SecureFiles.mode(of: keyPath)
        guard mode & 0o077 == 0 else {
            throw IdentityError(.insecureKeyPermissions, "\(keyPath) was written but has mode \(SecureFiles.octal(mode)), open to group or others; check the file system's mount options (ACLs, or a FAT/SMB mount that ignores modes) and run `chmod 600 \(keyPath)`")
        }
        do {
            try SecureFiles.writeFile(Array((certificatePEM + "\n").utf8), to: certPath, mode: 0o644, replace: overwrite)
        } catch {
            // Do not leave a key without its certificate: the next load would fail confusingly.
            if !overwrite { unlink(keyPath) }
            throw error
        }
    }

    /// Loads `ca.crt` and `ca.key` from `directory`, with the checks of
    /// ``init(certificatePEM:privateKeyPEM:trustDomain:now:)``, after refusing a key file that
    /// group or others may access.
    public static func load(
        from directory: String,
        trustDomain: TrustDomain? = nil,
        now: Date = Date()
    ) throws(IdentityError) -> MeshCA {
        let certPath = directory + "/" + certificateFileName
        let keyPath = directory + "/" + keyFileName

        // The mode is read from the open descriptor, so it is the file whose bytes we use.
        let key = try SecureFiles.readFile(keyPath, what: "CA key")
        guard key.mode & 0o077 == 0 else {
            throw IdentityError(.insecureKeyPermissions, "the CA key \(keyPath) has mode \(SecureFiles.octal(key.mode)), so group or others can read or change it; run `chmod 600 \(keyPath)` and consider the key exposed if other users had access")
        }
        let cert = try SecureFiles.readFile(certPath, what: "CA certificate")

        let certificate: Certificate
        do {
            certificate = try PEM.decodeCertificate(String(decoding: cert.bytes, as: UTF8.self))
        } catch {
            throw IdentityError(error.code, "\(certPath): \(error.message)")
        }
        let privateKey: P256.Signing.PrivateKey
        do {
            privateKey = try PEM.decodePrivateKey(String(decoding: key.bytes, as: UTF8.self))
        } catch {
            throw IdentityError(error.code, "\(keyPath): \(error.message)")
        }
        return try MeshCA(certificate: certificate, privateKey: privateKey, trustDomain: trustDomain, now: now, source: (certPath, keyPath))
    }
}

/// The few POSIX file operations the CA needs, with errors that name the path.
enum SecureFiles {
    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func octal(_ mode: mode_t) -> String {
        let s = String(mode & 0o7777, radix: 8)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    static func mode(of path: String) throws(IdentityError) -> mode_t {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw IdentityError(.caWriteFailed, "cannot stat \(path): \(String(cString: strerror(errno)))")
        }
        return st.st_mode
    }

    static func ensureDirectory(_ dir: String) throws(IdentityError) {
        var st = stat()
        if stat(dir, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFDIR else {
                throw IdentityError(.caWriteFailed, "\(dir) exists but is not a directory")
            }
            return
        }
        guard errno == ENOENT, mkdir(dir, 0o700) == 0 else {
            throw IdentityError(.caWriteFailed, "cannot create the CA directory \(dir): \(String(cString: strerror(errno))); check that its parent exists and is writable by this user")
        }
    }

    /// Writes through a temporary file created with `mode` and moves it into place: with
    /// `replace`, by rename (atomic replacement); without, by link, which fails if the path
    /// exists, so a concurrent writer cannot be overwritten either.
    static func writeFile(_ bytes: [UInt8], to path: String, mode: mode_t, replace: Bool) throws(IdentityError) {
        var rng = SystemRandomNumberGenerator()
        let suffix = rng.bytes(6).map { String($0, radix: 16) }.joined()
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let tmp = (dir.isEmpty ? "" : dir + "/") + ".\(name).tmp-\(suffix)"

        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw IdentityError(.caWriteFailed, "cannot create \(tmp): \(String(cString: strerror(errno))); check that the CA directory is writable by this user")
        }
        func fail(_ what: String) -> IdentityError {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(tmp)
            return IdentityError(.caWriteFailed, "cannot write \(path) (\(what)): \(reason); check free space and permissions of the CA directory")
        }
        // The umask can only narrow the mode given to open; a public file (the certificate) is
        // set explicitly so that nodes can read it whatever the umask. The key is never chmodded.
        if mode & 0o077 != 0, fchmod(fd, mode) != 0 { throw fail("fchmod") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("write")
            }
            offset += n
        }
        if fsync(fd) != 0 { throw fail("fsync") }
        close(fd)

        if replace {
            guard rename(tmp, path) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(tmp)
                throw IdentityError(.caWriteFailed, "cannot move \(tmp) to \(path): \(reason)")
            }
        } else {
            let linked = link(tmp, path) == 0
            let err = errno
            unlink(tmp)
            guard linked else {
                if err == EEXIST {
                    throw IdentityError(.caAlreadyExists, "\(path) appeared while saving the CA; another process is writing a CA into the same directory")
                }
                throw IdentityError(.caWriteFailed, "cannot create \(path): \(String(cString: strerror(err)))")
            }
        }
        // Make the new directory entry durable too, not only the file's bytes.
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    static func readFile(_ path: String, what: String) throws(IdentityError) -> (bytes: [UInt8], mode: mode_t) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT {
                throw IdentityError(.caFileMissing, "the \(what) \(path) does not exist; create a CA (or copy the operator's ca.crt and ca.key there) first")
            }
            throw IdentityError(.caFileUnreadable, "cannot open the \(what) \(path): \(String(cString: strerror(e)))\(e == EACCES ? "; run as the user that owns it" : "")")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw IdentityError(.caFileUnreadable, "cannot stat the \(what) \(path): \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            throw IdentityError(.caFileUnreadable, "the \(what) \(path) is not a regular file")
        }
        // A CA certificate or key is a few kilobytes; a huge file is a mistake, not a CA.
        guard st.st_size <= 1 << 20 else {
            throw IdentityError(.caFileUnreadable, "the \(what) \(path) is \(st.st_size) bytes; expected a PEM file of a few kilobytes")
        }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw IdentityError(.caFileUnreadable, "cannot read the \(what) \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            out += buf[..<n]
        }
        return (out, st.st_mode)
    }
}
