/// Request paths as the proxy routes and authorizes them: one canonical form,
/// so that `/a/../admin`, `/%61dmin` and `//admin` cannot slip past a rule
/// written for `/admin`. Pure and total: every input is either normalised or
/// refused with a reason (and the proxy answers 400, forwarding nothing).
public enum PathNormalization {
    public struct Options: Sendable, Hashable {
        /// Collapse runs of `/` into one (Envoy's merge_slashes).
        public var mergeSlashes: Bool
        /// `%2F` and `%5C` (encoded `/` and `\`) are refused by default: a
        /// backend that decodes them would see a path no rule here saw.
        public var allowEscapedSlashes: Bool

        public init(mergeSlashes: Bool = true, allowEscapedSlashes: Bool = false) {
            self.mergeSlashes = mergeSlashes
            self.allowEscapedSlashes = allowEscapedSlashes
        }
    }

    public struct Target: Sendable, Hashable {
        /// Normalised, starting with `/` (or exactly `*`).
        public var path: String
        /// The query as received, without the `?` (nil when absent).
        public var query: String?

        /// What is forwarded: the normalised path and the query.
        public var requestTarget: String { query.map { "\(path)?\($0)" } ?? path }
    }

    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    static let unreserved = ByteClass("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    /// RFC 3986 pchar plus '/' and '%': anything else in a path is refused.
    static let allowedInPath = unreserved.union("!$&'()*+,;=:@/%")
    static let hex = Array("0123456789ABCDEF".utf8)

    /// Normalises an origin-form (`/p?q`), absolute-form (`http://h/p?q`) or
    /// asterisk-form (`*`) request target.
    public static func normalize(_ target: String, options: Options = Options()) throws(Refusal) -> Target {
        try normalize(target, options: options, shortcut: true)
    }

    /// `shortcut`: a path already in the one form is returned as it is (tests
    /// compare it with the long way).
    static func normalize(_ target: String, options: Options, shortcut: Bool) throws(Refusal) -> Target {
        if target == "*" { return Target(path: "*", query: nil) }
        // The common case, decided on bytes alone: an origin-form target without
        // a query whose path is already canonical is its own normal form (and the
        // string is reused, not copied).
        if shortcut, target.utf8.first == UInt8(ascii: "/"), !target.utf8.contains(UInt8(ascii: "?")),
           isCanonical(target[...].utf8) {
            return Target(path: target, query: nil)
        }
        var rest = Substring(target)
        if !rest.hasPrefix("/") {
            // absolute-form: scheme "://" authority path
            guard let scheme = rest.firstRange(of: "://"), rest[..<scheme.lowerBound].allSatisfy({ $0.isLetter || $0 == "+" || $0 == "-" || $0 == "." }) else {
                throw Refusal("the request target must start with '/'")
            }
            let afterAuthority = rest[scheme.upperBound...]
            if let slash = afterAuthority.firstIndex(where: { $0 == "/" || $0 == "?" }) {
                rest = afterAuthority[slash...]
                if rest.hasPrefix("?") { rest = "/" + rest }
            } else {
                rest = "/"
            }
        }
        var query: String?
        var rawPath = rest
        if let q = rest.firstIndex(of: "?") {
            rawPath = rest[..<q]
            query = String(rest[rest.index(after: q)...])
            if let query, query.utf8.contains(where: { $0 < 0x21 || $0 == 0x7F || $0 >= 0x80 || $0 == UInt8(ascii: "#") }) {
                throw Refusal("the query holds a control, space, '#' or non-ASCII byte")
            }
        }
        if shortcut, isCanonical(rawPath.utf8) { return Target(path: String(rawPath), query: query) }
        // Decode %XX of unreserved characters; keep other escapes, upper-cased.
        let bytes = Array(rawPath.utf8)
        var decoded: [UInt8] = []
        decoded.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            guard allowedInPath.contains(b) else {
                throw Refusal("the path holds a byte that is not allowed in a URI path (0x\(String(b, radix: 16)))")
            }
            if b == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) else {
                    throw Refusal("the path holds a '%' not followed by two hex digits")
                }
                let value = hi << 4 | lo
                if unreserved.contains(value) {
                    decoded.append(value)
                } else {
                    if !options.allowEscapedSlashes && (value == UInt8(ascii: "/") || value == UInt8(ascii: "\\")) {
                        throw Refusal("the path holds an encoded '/' or '\\' (%2F, %5C)")
                    }
                    if value == 0 { throw Refusal("the path holds an encoded NUL") }
                    decoded += [UInt8(ascii: "%"), hex[Int(hi)], hex[Int(lo)]]
                }
                i += 3
            } else {
                decoded.append(b)
                i += 1
            }
        }
        var path = String(decoding: decoded, as: UTF8.self)
        if options.mergeSlashes {
            while path.contains("//") { path = path.replacingOccurrences(of: "//", with: "/") }
        }
        path = removeDotSegments(path)
        if path.isEmpty { path = "/" }
        return Target(path: path, query: query)
    }

    /// Already in the one form (the common case): allowed bytes only, no
    /// escape, no empty, "." or ".." segment. Such a path normalises to itself.
    static func isCanonical(_ path: Substring.UTF8View) -> Bool {
        var previous: UInt8 = 0
        var dots = 0   // dots since the last '/', or -1 once the segment has another byte
        for b in path {
            guard allowedInPath.contains(b), b != UInt8(ascii: "%") else { return false }
            if b == UInt8(ascii: "/") {
                if previous == UInt8(ascii: "/") || dots > 0 { return false }
                dots = 0
            } else if b == UInt8(ascii: "."), dots >= 0 {
                dots += 1
            } else {
                dots = -1
            }
            previous = b
        }
        return previous != 0 && dots <= 0
    }

    /// A hexadecimal digit's value, either case (for `%XX`, here and in other percent-encoded text).
    public static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// RFC 3986 section 5.2.4, on a path that starts with '/'.
    static func removeDotSegments(_ path: String) -> String {
        var output: [Substring] = []
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        for (index, segment) in segments.enumerated() {
            let last = index == segments.count - 1
            switch segment {
            case ".":
                if last { output.append("") }
            case "..":
                if !output.isEmpty { output.removeLast() }
                if last { output.append("") }
            default:
                output.append(segment)
            }
        }
        return "/" + output.joined(separator: "/")
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            result += rest[..<r.lowerBound]
            result += replacement
            rest = rest[r.upperBound...]
        }
        return result + rest
    }
}
