import WeftCore

/// Header checks the proxy applies before forwarding anything (RFC 9110,
/// RFC 9112): a request that fails them is answered 400 and never reaches a
/// backend, so no two parties can read one message two ways (smuggling).
public enum HeaderValidation {
    public struct Limits: Sendable, Hashable {
        /// Total bytes of all header names and values.
        public var maxHeaderBytes: Int
        public var maxHeaderCount: Int

        public init(maxHeaderBytes: Int = 60 * 1024, maxHeaderCount: Int = 100) {
            self.maxHeaderBytes = maxHeaderBytes
            self.maxHeaderCount = maxHeaderCount
        }
    }

    public struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    /// RFC 9110 tchar, as a byte table: every request's every header name
    /// goes through it, so it is one load per byte, not a hashed lookup.
    static let tokenChars = ByteClass("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    public static func isValidName(_ name: String) -> Bool {
        let table = tokenChars
        // Over the bytes in place when the string is native (every one from the wire).
        if let valid = name.utf8.withContiguousStorageIfAvailable({ !$0.isEmpty && $0.allSatisfy { table.contains($0) } }) {
            return valid
        }
        return !name.isEmpty && name.utf8.allSatisfy { table.contains($0) }
    }

    /// Field values: visible ASCII, obs-text, space and tab inside; no CR,
    /// LF or NUL anywhere, no leading or trailing whitespace.
    public static func isValidValue(_ value: String) -> Bool {
        if let valid = value.utf8.withContiguousStorageIfAvailable({ isValidValue(bytes: $0) }) { return valid }
        return isValidValue(bytes: value.utf8)
    }

    private static func isValidValue(bytes: some BidirectionalCollection<UInt8>) -> Bool {
        if let first = bytes.first, first == 0x20 || first == 0x09 { return false }
        if let last = bytes.last, last == 0x20 || last == 0x09 { return false }
        return bytes.allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }
    }

    /// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded; plus those named
    /// in Connection.
    public static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    ]

    /// Checks names, values, sizes and the framing headers of a request.
    public static func check(_ headers: [(name: String, value: String)], limits: Limits = Limits()) throws(Refusal) {
        guard headers.count <= limits.maxHeaderCount else {
            throw Refusal("\(headers.count) header fields, more than the limit of \(limits.maxHeaderCount)")
        }
        var size = 0
        var contentLengths: Set<String> = []
        var transferEncoding = false
        for (name, value) in headers {
            guard isValidName(name) else { throw Refusal("invalid header name \"\(name.prefix(64))\"") }
            guard isValidValue(value) else { throw Refusal("invalid value for header \(name)") }
            size += name.utf8.count + value.utf8.count
            guard size <= limits.maxHeaderBytes else {
                throw Refusal("headers larger than the limit of \(limits.maxHeaderBytes) bytes")
            }
            if name.equalsIgnoringASCIICase("content-length") {
                for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                    let v = part.trimmingSpaces
                    guard !v.isEmpty, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), v.count <= 18 else {
                        throw Refusal("Content-Length \"\(value.prefix(32))\" is not a number")
                    }
                    let digits = String(v.drop { $0 == "0" })
                    contentLengths.insert(digits.isEmpty ? "0" : digits)
                }
            } else if name.equalsIgnoringASCIICase("transfer-encoding") {
                transferEncoding = true
                // Only chunked is understood; anything else could be read differently downstream.
                if value.equalsIgnoringASCIICase("chunked") { continue }
                let codings = value.lowercased().split(separator: ",").map { $0.trimmingSpaces }
                guard codings == ["chunked"] else {
                    throw Refusal("Transfer-Encoding \"\(value.prefix(32))\" is not just chunked")
                }
            }
        }
        guard contentLengths.count <= 1 else { throw Refusal("conflicting Content-Length values") }
        guard !(transferEncoding && !contentLengths.isEmpty) else {
            throw Refusal("both Content-Length and Transfer-Encoding")
        }
    }

    /// The headers to forward: hop-by-hop ones and those Connection names removed.
    public static func forwardable(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        var dropped: [String] = []
        forEachNotForwarded(headers) { dropped.append($0) }
        guard !dropped.isEmpty else { return headers }
        return headers.filter { h in !dropped.contains { h.name.equalsIgnoringASCIICase($0) } }
    }

    /// Calls `drop` with each header name a proxy must not forward: the
    /// hop-by-hop ones present, and those a Connection header lists besides
    /// keep-alive and close (lower-cased); a name may come more than once.
    /// Most messages have none or one or two (Connection: keep-alive,
    /// Transfer-Encoding), and nothing is allocated for them. Inlinable, so
    /// that a caller's own header list (NIO's) is walked without generic calls.
    @inlinable
    public static func forEachNotForwarded<S: Sequence>(_ headers: S, _ drop: (String) -> Void)
        where S.Element == (name: String, value: String) {
        for (name, value) in headers where isHopByHopName(name) {
            drop(name)
            guard name.utf8.count == 10, name.equalsIgnoringASCIICase("connection"),
                  !value.equalsIgnoringASCIICase("keep-alive"), !value.equalsIgnoringASCIICase("close") else { continue }
            for token in value.split(separator: ",") {
                let listed = token.trimmingSpaces
                if listed.isEmpty || listed.equalsIgnoringASCIICase("keep-alive") || listed.equalsIgnoringASCIICase("close") { continue }
                drop(listed.lowercased())
            }
        }
    }

    /// One of `hopByHop`, by length first: most header names are ruled out
    /// without reading a byte (this runs for every header of every request
    /// and response).
    public static func isHopByHopName(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: return name.equalsIgnoringASCIICase("te")
        case 7: return name.equalsIgnoringASCIICase("trailer") || name.equalsIgnoringASCIICase("upgrade")
        case 10: return name.equalsIgnoringASCIICase("connection") || name.equalsIgnoringASCIICase("keep-alive")
        case 16: return name.equalsIgnoringASCIICase("proxy-connection")
        case 17: return name.equalsIgnoringASCIICase("transfer-encoding")
        case 18: return name.equalsIgnoringASCIICase("proxy-authenticate")
        case 19: return name.equalsIgnoringASCIICase("proxy-authorization")
        default: return false
        }
    }
}

/// A set of bytes as a 256-entry table (header tokens, URI characters).
public struct ByteClass: Sendable {
    private let table: [Bool]

    public init(_ members: String) {
        var t = [Bool](repeating: false, count: 256)
        for b in members.utf8 { t[Int(b)] = true }
        table = t
    }

    init(bytes: some Sequence<UInt8>) {
        var t = [Bool](repeating: false, count: 256)
        for b in bytes { t[Int(b)] = true }
        table = t
    }

    @inline(__always)
    public func contains(_ b: UInt8) -> Bool { table[Int(b)] }

    public func union(_ other: String) -> ByteClass {
        ByteClass(bytes: (0...255).map(UInt8.init).filter { contains($0) } + Array(other.utf8))
    }
}

extension StringProtocol {
    @usableFromInline
    var trimmingSpaces: String {
        let whole = Substring(self)
        let u = whole.utf8
        var start = u.startIndex, end = u.endIndex
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start = u.index(after: start) }
        while end > start {
            let before = u.index(before: end)
            guard u[before] == 0x20 || u[before] == 0x09 else { break }
            end = before
        }
        return String(whole[start..<end])
    }
}
