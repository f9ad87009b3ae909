/// The string formats resources are made of, checked the way the projects
/// that defined them check them (Kubernetes apimachinery, Gateway API CRD
/// patterns, RFC 9110), so a manifest valid for them is valid for Weft.
public enum ResourceSyntax {
    static func isLowerAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) }
    static func isAlnum(_ b: UInt8) -> Bool { isLowerAlnum(b) || (b >= 0x41 && b <= 0x5A) }
    static func isLowerLetter(_ b: UInt8) -> Bool { b >= 0x61 && b <= 0x7A }

    /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, with no length limit of its own.
    private static func isLabelShape(_ bytes: some Collection<UInt8>) -> Bool {
        guard let first = bytes.first, let last = bytes.reversed().first else { return false }
        return isLowerAlnum(first) && isLowerAlnum(last) && bytes.allSatisfy { isLowerAlnum($0) || $0 == 0x2D }
    }

    /// RFC 1123 label as Kubernetes checks it (namespace names, node names).
    public static func isDNSLabel(_ s: String) -> Bool { DNSLabel.isValid(s) }

    /// RFC 1035 label: like a DNS label but starting with a letter. Kubernetes
    /// requires it of Service names, which become DNS names.
    public static func isDNS1035Label(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        return bytes.count <= 63 && isLabelShape(bytes) && isLowerLetter(bytes[0])
    }

    /// RFC 1123 subdomain as Kubernetes checks it: dot-separated labels, at
    /// most 253 characters in all (Kubernetes puts no limit on one label here).
    public static func isDNSSubdomain(_ s: String) -> Bool {
        guard (1...253).contains(s.utf8.count) else { return false }
        return s.utf8.split(separator: 0x2E, omittingEmptySubsequences: false).allSatisfy { isLabelShape($0) }
    }

    /// IANA service name (RFC 6335), the form Kubernetes requires of a port
    /// name that a Service's `targetPort` may refer to: at most 15 lower-case
    /// letters, digits and '-', at least one letter, no '-' at either end or twice in a row.
    public static func isIANAServiceName(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard (1...15).contains(bytes.count), isLabelShape(bytes), bytes.contains(where: isLowerLetter) else { return false }
        return !s.contains("--")
    }

    /// Label and annotation keys (Kubernetes "qualified names"): an optional
    /// DNS-subdomain prefix and '/', then a name of at most 63 characters,
    /// alphanumeric at both ends, with '-', '_' and '.' inside.
    public static func isLabelKey(_ s: String) -> Bool {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: return isQualifiedNamePart(parts[0])
        case 2: return isDNSSubdomain(String(parts[0])) && isQualifiedNamePart(parts[1])
        default: return false
        }
    }

    private static func isQualifiedNamePart(_ s: Substring) -> Bool {
        let bytes = Array(s.utf8)
        guard (1...63).contains(bytes.count), isAlnum(bytes.first!), isAlnum(bytes.last!) else { return false }
        return bytes.allSatisfy { isAlnum($0) || $0 == 0x2D || $0 == 0x5F || $0 == 0x2E }
    }

    /// Label values: empty, or a qualified-name part.
    public static func isLabelValue(_ s: String) -> Bool {
        s.isEmpty || isQualifiedNamePart(Substring(s))
    }

    /// An HTTP field name: an RFC 9110 token, at most 256 characters as
    /// Gateway API limits it (`^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$`).
    public static func isHTTPToken(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard (1...256).contains(bytes.count) else { return false }
        let extra = Set("!#$%&'*+-.^_`|~".utf8)
        return bytes.allSatisfy { isAlnum($0) || extra.contains($0) }
    }

    /// Gateway API `Hostname` (and `PreciseHostname` when `wildcard` is false):
    /// lower-case RFC 1123 labels, optionally after one leading `*.`; no IP addresses.
    public static func isHostname(_ s: String, allowingWildcard wildcard: Bool) -> Bool {
        var rest = Substring(s)
        if wildcard, rest.hasPrefix("*.") { rest = rest.dropFirst(2) }
        guard (1...253).contains(s.utf8.count), IPAddress(String(rest)) == nil else { return false }
        return rest.utf8.split(separator: 0x2E, omittingEmptySubsequences: false).allSatisfy { isLabelShape($0) }
    }

    /// The characters Gateway API allows in an Exact or PathPrefix path:
    /// `^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$`.
    public static func isPathCharacters(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty else { return false }
        let extra = Set("-/._~!$&'()*+,;=:@".utf8)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == 0x25 {
                guard i + 2 < bytes.count, isHexDigit(bytes[i + 1]), isHexDigit(bytes[i + 2]) else { return false }
                i += 3
                continue
            }
            guard isAlnum(b) || extra.contains(b) else { return false }
            i += 1
        }
        return true
    }

    static func isHexDigit(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46)
    }

    /// RFC 3339 date-time as Kubernetes writes `creationTimestamp`
    /// (`2025-01-31T12:00:00Z`), also with fractions and numeric offsets.
    public static func isTimestamp(_ s: String) -> Bool {
        let b = Array(s.utf8)
        func digits(_ range: Range<Int>) -> Bool {
            range.upperBound <= b.count && b[range].allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        }
        func at(_ i: Int, _ c: Character) -> Bool { i < b.count && b[i] == c.asciiValue! }
        guard digits(0..<4), at(4, "-"), digits(5..<7), at(7, "-"), digits(8..<10),
              at(10, "T") || at(10, "t"), digits(11..<13), at(13, ":"), digits(14..<16), at(16, ":"), digits(17..<19)
        else { return false }
        var i = 19
        if at(i, ".") {
            i += 1
            let fractionStart = i
            while digits(i..<(i + 1)) { i += 1 }
            guard i > fractionStart else { return false }
        }
        if at(i, "Z") || at(i, "z") { return i + 1 == b.count }
        guard at(i, "+") || at(i, "-"), digits((i + 1)..<(i + 3)), at(i + 3, ":"), digits((i + 4)..<(i + 6)) else { return false }
        return i + 6 == b.count
    }

    /// "did you mean" for an unknown field: the allowed name that differs
    /// only in case, or by at most two edits.
    static func closest(to word: String, in candidates: [String]) -> String? {
        if let sameLetters = candidates.first(where: { $0.lowercased() == word.lowercased() }) { return sameLetters }
        var best: (name: String, distance: Int)?
        for candidate in candidates {
            let d = editDistance(Array(word.lowercased().utf8), Array(candidate.lowercased().utf8))
            if d <= 2, d < (best?.distance ?? .max) { best = (candidate, d) }
        }
        return best?.name
    }

    private static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var row = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = row
        }
        return previous[b.count]
    }
}

/// A Gateway API duration (GEP-2257): one to four parts of one to five
/// digits and a unit (h, m, s, ms), such as `10s`, `500ms`, `1h30m`.
/// The text is kept as written, as Kubernetes keeps it, so a manifest reads
/// back unchanged; `milliseconds` is what it means (parts add up, as in Go's
/// time.ParseDuration, which GEP-2257 defers to).
public struct GatewayDuration: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    public let milliseconds: Int64

    public init(_ text: String, field: String) throws(ValidationError) {
        guard let ms = GatewayDuration.parse(text) else {
            throw ValidationError(field: field, "\"\(text)\" is not a Gateway API duration (one to four parts such as 1h, 30m, 10s, 500ms; whole numbers of at most 5 digits)")
        }
        self.text = text
        self.milliseconds = ms
    }

    /// The canonical text for a whole number of milliseconds (`1h2m3s4ms`,
    /// `0s`); nil when it needs more than 99999 hours.
    public init?(milliseconds: Int64) {
        guard milliseconds >= 0 else { return nil }
        let hours = milliseconds / 3_600_000
        guard hours <= 99_999 else { return nil }
        let parts: [(Int64, String)] = [
            (hours, "h"), (milliseconds / 60_000 % 60, "m"), (milliseconds / 1000 % 60, "s"), (milliseconds % 1000, "ms"),
        ]
        let text = parts.filter { $0.0 > 0 }.map { "\($0.0)\($0.1)" }.joined()
        self.text = text.isEmpty ? "0s" : text
        self.milliseconds = milliseconds
    }

    public var description: String { text }

    static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        var i = 0
        var parts = 0
        var total: Int64 = 0
        while i < b.count {
            let start = i
            var value: Int64 = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                value = value * 10 + Int64(b[i] - 0x30)
                i += 1
            }
            guard (1...5).contains(i - start), i < b.count else { return nil }
            let unit: Int64
            switch b[i] {
            case UInt8(ascii: "h"): unit = 3_600_000; i += 1
            case UInt8(ascii: "s"): unit = 1000; i += 1
            case UInt8(ascii: "m"):
                if i + 1 < b.count, b[i + 1] == UInt8(ascii: "s") { unit = 1; i += 2 } else { unit = 60_000; i += 1 }
            default: return nil
            }
            total += value * unit
            parts += 1
            guard parts <= 4 else { return nil }
        }
        return parts == 0 ? nil : total
    }
}
