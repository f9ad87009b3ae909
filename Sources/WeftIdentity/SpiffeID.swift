import WeftCore

/// A SPIFFE trust domain: the `<trust-domain>` of `spiffe://<trust-domain>/...`.
///
/// The SPIFFE ID spec allows only lower-case letters, digits, '.', '-' and '_', so a trust
/// domain compares byte for byte: no case folding, no percent-decoding, no port.
public struct TrustDomain: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let name: String

    public init(_ name: String, field: String = "trustDomain") throws(ValidationError) {
        guard !name.isEmpty else {
            throw ValidationError(field: field, "the trust domain is empty (expected a name such as \"cluster.local\" or \"example.org\")")
        }
        guard name.utf8.count <= SpiffeID.maxTrustDomainBytes else {
            throw ValidationError(field: field, "the trust domain is \(name.utf8.count) bytes long; the SPIFFE ID spec allows at most \(SpiffeID.maxTrustDomainBytes)")
        }
        if let bad = name.unicodeScalars.first(where: { !SpiffeID.isTrustDomainScalar($0) }) {
            throw ValidationError(field: field, "\"\(name)\" is not a valid trust domain: \(SpiffeID.describe(bad)) is not allowed (only lower-case letters, digits, '.', '-' and '_')")
        }
        self.name = name
    }

    /// `spiffe://<trust-domain>`, the ID a trust domain's signing certificates may carry.
    public var id: SpiffeID { SpiffeID(unchecked: self, segments: []) }

    public var description: String { name }
    public static func < (a: Self, b: Self) -> Bool { a.name < b.name }
}

/// A Kubernetes-style service account name: an RFC 1123 subdomain (lower-case letters, digits,
/// '-' and '.', at most 253 characters, starting and ending with a letter or digit), so that
/// names users already have in their manifests carry over, and every one is a valid SPIFFE
/// path segment.
public struct ServiceAccountName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(_ value: String, field: String = "serviceAccount") throws(ValidationError) {
        guard Self.isValid(value) else {
            throw ValidationError(field: field, "\"\(value)\" is not a valid service account name (lower-case letters, digits, '-' and '.', 1 to 253 characters, starting and ending with a letter or digit)")
        }
        self.rawValue = value
    }

    static func isValid(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard (1...253).contains(bytes.count) else { return false }
        // A subdomain is dot-separated DNS labels; the label rule already pins first and last.
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { DNSLabel.isValid(String($0)) }
    }

    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A SPIFFE ID (`spiffe://<trust-domain>/<path>`), validated against the SPIFFE ID spec.
///
/// Weft gives out two shapes, recognised by ``kind``:
/// - workloads: `spiffe://<td>/ns/<namespace>/sa/<service-account>` (Istio's shape, so
///   AuthorizationPolicy principals carry over);
/// - nodes: `spiffe://<td>/node/<node-name>`, the identity weftd presents to the control plane.
///
/// Any other valid SPIFFE ID parses as ``Kind/other`` so that peers from other meshes can be
/// named in policy; the CA only issues the two shapes above.
public struct SpiffeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let trustDomain: TrustDomain
    /// The path segments, without separators: `["ns", "shop", "sa", "frontend"]`.
    public let segments: [String]

    public enum Kind: Hashable, Sendable {
        /// `spiffe://<td>` alone: names the trust domain itself (root and intermediate CAs).
        case trustDomain
        case workload(namespace: NamespaceName, serviceAccount: ServiceAccountName)
        case node(name: String)
        /// A valid SPIFFE ID that is neither of Weft's shapes.
        case other
    }

    static let scheme = "spiffe://"
    static let maxTrustDomainBytes = 255
    static let maxIDBytes = 2048

    /// Parses and validates `spiffe://<trust-domain>[/<segment>...]`.
    public init(parsing uri: String, field: String = "spiffeID") throws(ValidationError) {
        guard uri.hasPrefix(Self.scheme) else {
            throw ValidationError(field: field, "\"\(uri)\" is not a SPIFFE ID: it must start with \"spiffe://\" (lower case)")
        }
        guard uri.utf8.count <= Self.maxIDBytes else {
            throw ValidationError(field: field, "the SPIFFE ID is \(uri.utf8.count) bytes long; the spec allows at most \(Self.maxIDBytes)")
        }
        let rest = uri.dropFirst(Self.scheme.count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let td: TrustDomain
        do {
            td = try TrustDomain(String(rest[..<slash]), field: field)
        } catch {
            // Say which part of the URI was wrong: ':' means a port, '@' user info, '?' and '#' query and fragment.
            throw ValidationError(field: field, "in \"\(uri)\": \(error.message)")
        }
        let path = rest[slash...]
        var segments: [String] = []
        if !path.isEmpty {
            // path starts with "/"; splitting keeps empty pieces so "a//b" and a trailing "/" are caught.
            for segment in path.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
                do {
                    try Self.validateSegment(segment, field: field)
                } catch {
                    throw ValidationError(field: field, "in \"\(uri)\": \(error.message)")
                }
                segments.append(String(segment))
            }
        }
        self.init(unchecked: td, segments: segments)
    }

    /// Builds an ID from a trust domain and path segments, validating each segment.
    public init(trustDomain: TrustDomain, segments: [String], field: String = "spiffeID") throws(ValidationError) {
        for s in segments { try Self.validateSegment(s[...], field: field) }
        let id = SpiffeID(unchecked: trustDomain, segments: segments)
        guard id.uri.utf8.count <= Self.maxIDBytes else {
            throw ValidationError(field: field, "the SPIFFE ID is \(id.uri.utf8.count) bytes long; the spec allows at most \(Self.maxIDBytes)")
        }
        self = id
    }

    init(unchecked trustDomain: TrustDomain, segments: [String]) {
        self.trustDomain = trustDomain
        self.segments = segments
    }

    /// `spiffe://<td>/ns/<namespace>/sa/<service-account>`.
    public static func workload(trustDomain: TrustDomain, namespace: NamespaceName, serviceAccount: ServiceAccountName) -> SpiffeID {
        // Both names are subsets of the SPIFFE segment alphabet and bounded in length, so no
        // validation is needed; the total stays under 2048 bytes (255 + 63 + 253 + separators).
        SpiffeID(unchecked: trustDomain, segments: ["ns", namespace.rawValue, "sa", serviceAccount.rawValue])
    }

    /// `spiffe://<td>/node/<name>`; the node name is a DNS label, as in weftd's config.
    public static func node(trustDomain: TrustDomain, name: String, field: String = "node") throws(ValidationError) -> SpiffeID {
        guard DNSLabel.isValid(name) else {
            throw ValidationError(field: field, "\"\(name)\" is not a valid node name (lower-case letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit)")
        }
        return SpiffeID(unchecked: trustDomain, segments: ["node", name])
    }

    public var kind: Kind {
        switch segments.count {
        case 0:
            return .trustDomain
        case 2 where segments[0] == "node" && DNSLabel.isValid(segments[1]):
            return .node(name: segments[1])
        case 4 where segments[0] == "ns" && segments[2] == "sa":
            guard let ns = try? NamespaceName(segments[1]), let sa = try? ServiceAccountName(segments[3]) else {
                return .other
            }
            return .workload(namespace: ns, serviceAccount: sa)
        default:
            return .other
        }
    }

    /// The path, with its leading '/', or "" for a trust domain ID.
    public var path: String { segments.isEmpty ? "" : "/" + segments.joined(separator: "/") }

    public var uri: String { Self.scheme + trustDomain.name + path }
    public var description: String { uri }
    public static func < (a: Self, b: Self) -> Bool { a.uri < b.uri }

    // MARK: Spec rules

    static func validateSegment(_ segment: Substring, field: String) throws(ValidationError) {
        if segment.isEmpty {
            throw ValidationError(field: field, "the path has an empty segment (no \"//\" and no trailing '/')")
        }
        if segment == "." || segment == ".." {
            throw ValidationError(field: field, "the path has a \"\(segment)\" segment, which the SPIFFE ID spec forbids")
        }
        if let bad = segment.unicodeScalars.first(where: { !isPathScalar($0) }) {
            throw ValidationError(field: field, "path segment \"\(segment)\" contains \(describe(bad)); only letters, digits, '.', '-' and '_' are allowed (no percent-encoding)")
        }
    }

    static func isTrustDomainScalar(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("0"..."9").contains(c) || c == "." || c == "-" || c == "_"
    }

    static func isPathScalar(_ c: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(c) || ("A"..."Z").contains(c) || ("0"..."9").contains(c) || c == "." || c == "-" || c == "_"
    }

    static func describe(_ c: Unicode.Scalar) -> String {
        switch c {
        case ":": return "':' (a port is not allowed)"
        case "@": return "'@' (user info is not allowed)"
        case "?": return "'?' (a query is not allowed)"
        case "#": return "'#' (a fragment is not allowed)"
        case "%": return "'%' (percent-encoding is not allowed)"
        case " ": return "a space"
        case _ where c.value < 0x20 || c.value == 0x7f || c.value > 0x7e:
            return "the character U+\(String(c.value, radix: 16, uppercase: true))"
        case _ where ("A"..."Z").contains(c): return "'\(c)' (upper case is not allowed in a trust domain)"
        default: return "'\(c)'"
        }
    }
}

extension SpiffeID: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        do {
            try self.init(parsing: s)
        } catch {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(uri)
    }
}
