import Crypto
import Foundation
import Glibc
import SwiftASN1
import WeftCore
import WeftIdentity
import X509

/// The TLS server certificate of weft-control, issued by the mesh CA so that
/// agents and weftctl need to trust one file, `ca/ca.crt`.
///
/// Lives here rather than in WeftIdentity because only weft-control serves TLS
/// under DNS and IP names; the mesh CA itself issues SPIFFE identities only.
enum ServerCertificate {
    /// A year: the server renews it at start when less than ``renewBefore`` is left.
    static let validity: TimeInterval = 365 * 86_400
    static let renewBefore: TimeInterval = 30 * 86_400

    struct Names: Equatable {
        var dns: [String]
        var ips: [IPAddress]
    }

    /// DNS `weft-control` and `localhost`, and the address the server listens on,
    /// or that name if it is one. Listening on every address, it names
    /// loopback and `hostAddresses` (the host's own addresses and host name,
    /// so that nodes can reach it by any of them, as the README's quick start does).
    static func names(listenHost: String, hostAddresses: () -> (names: [String], ips: [IPAddress]) = localHost) -> Names {
        var dns = ["weft-control", "localhost"]
        var ips: [IPAddress] = []
        if let ip = IPAddress(listenHost) {
            let unspecified = ip.isIPv4 ? ip.bytes[12...].allSatisfy { $0 == 0 } : ip.bytes.allSatisfy { $0 == 0 }
            if unspecified {
                ips = [IPAddress(ipv4: 127, 0, 0, 1), IPAddress("::1")!]
                let host = hostAddresses()
                for ip in host.ips where !ips.contains(ip) { ips.append(ip) }
                for name in host.names where !dns.contains(name) { dns.append(name) }
            } else {
                ips = [ip]
            }
        } else if !dns.contains(listenHost) {
            dns.append(listenHost)
        }
        return Names(dns: dns, ips: ips)
    }

    /// This host's name and interface addresses (link-local IPv6 left out:
    /// it needs a zone to be dialled).
    static func localHost() -> (names: [String], ips: [IPAddress]) {
        var names: [String] = []
        var buffer = [CChar](repeating: 0, count: 256)
        if gethostname(&buffer, buffer.count) == 0 {
            let name = String(cString: buffer).lowercased()
            if !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }) { names.append(name) }
        }
        var ips: [IPAddress] = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return (names, ips) }
        defer { freeifaddrs(list) }
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            var ip: IPAddress?
            if sa.pointee.sa_family == sa_family_t(AF_INET) {
                ip = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                    var a = p.pointee.sin_addr
                    let b = withUnsafeBytes(of: &a) { Array($0) }
                    return IPAddress(ipv4: b[0], b[1], b[2], b[3])
                }
            } else if sa.pointee.sa_family == sa_family_t(AF_INET6) {
                ip = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                    var a = p.pointee.sin6_addr
                    let b = withUnsafeBytes(of: &a) { Array($0) }
                    return b[0] == 0xfe && (b[1] & 0xc0) == 0x80 ? nil : IPAddress(mapped: b)
                }
            }
            if let ip, !ip.isLoopback, !ips.contains(ip) { ips.append(ip) }
        }
        return (names, ips)
    }

    /// A fresh key and certificate, as PEM.
    static func issue(names: Names, caCertificate: Certificate, caKey: P256.Signing.PrivateKey, now: Date = Date()) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        var sans: [GeneralName] = names.dns.map { .dnsName($0) }
        for ip in names.ips {
            sans.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip.ipv4Bytes ?? ip.bytes))))
        }
        let caKeyID = (try? caCertificate.extensions.subjectKeyIdentifier)?.keyIdentifier
            ?? SubjectKeyIdentifier(hash: caCertificate.publicKey).keyIdentifier
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth])
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: caKeyID)
            SubjectAlternativeNames(sans)
        }
        let notAfter = min(now.addingTimeInterval(validity), caCertificate.notValidAfter)
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-60),
            notValidAfter: notAfter,
            issuer: caCertificate.subject,
            subject: try DistinguishedName {
                OrganizationName("Weft")
                CommonName("weft-control")
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(caKey))
        return (try PEM.encode(certificate), PEM.encode(key))
    }

    /// Whether a stored certificate can keep serving: issued by this CA, holding
    /// every name, and not within ``renewBefore`` of expiring.
    static func isUsable(_ pem: String, names: Names, caCertificate: Certificate, now: Date = Date()) -> Bool {
        guard let cert = try? PEM.decodeCertificate(pem),
              cert.issuer == caCertificate.subject,
              caCertificate.publicKey.isValidSignature(cert.signature, for: cert),
              cert.notValidAfter.timeIntervalSince(now) > renewBefore,
              let sans = try? cert.extensions.subjectAlternativeNames else { return false }
        var dns: Set<String> = []
        var ips: Set<[UInt8]> = []
        for name in sans {
            switch name {
            case .dnsName(let d): dns.insert(d)
            case .ipAddress(let octets): ips.insert(Array(octets.bytes))
            default: break
            }
        }
        return names.dns.allSatisfy(dns.contains) && names.ips.allSatisfy { ips.contains($0.ipv4Bytes ?? $0.bytes) }
    }
}
