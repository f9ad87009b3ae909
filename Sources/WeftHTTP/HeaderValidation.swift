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

    static let tokenChars: Set<UInt8> = Set(Array("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8))

    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy { tokenChars.contains($0) }
    }

    /// Field values: visible ASCII, obs-text, space and tab inside; no CR,
    /// LF or NUL anywhere, no leading or trailing whitespace.
    public static func isValidValue(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
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
            switch name.lowercased() {
            case "content-length":
                for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                    let v = part.trimmingSpaces
                    guard !v.isEmpty, v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), v.count <= 18 else {
                        throw Refusal("Content-Length \"\(value.prefix(32))\" is not a number")
                    }
                    let digits = String(v.drop { $0 == "0" })
                    contentLengths.insert(digits.isEmpty ? "0" : digits)
                }
            case "transfer-encoding":
                transferEncoding = true
                // Only chunked is understood; anything else could be read differently downstream.
                let codings = value.lowercased().split(separator: ",").map { $0.trimmingSpaces }
                guard codings == ["chunked"] else {
                    throw Refusal("Transfer-Encoding \"\(value.prefix(32))\" is not just chunked")
                }
            default:
                break
            }
        }
        guard contentLengths.count <= 1 else { throw Refusal("conflicting Content-Length values") }
        guard !(transferEncoding && !contentLengths.isEmpty) else {
            throw Refusal("both Content-Length and Transfer-Encoding")
        }
    }

    /// The headers to forward: hop-by-hop ones and those Connection names removed.
    public static func forwardable(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        var drop = hopByHop
        for (name, value) in headers where name.lowercased() == "connection" {
            for token in value.split(separator: ",") { drop.insert(token.trimmingSpaces.lowercased()) }
        }
        return headers.filter { !drop.contains($0.name.lowercased()) }
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(String(drop { $0 == " " || $0 == "\t" }.reversed()).drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
