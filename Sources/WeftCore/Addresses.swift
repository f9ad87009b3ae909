/// An IP address held as 16 bytes, IPv4 as IPv4-mapped (`::ffff:a.b.c.d`),
/// the same form the eBPF maps use (bpf/weft_abi.h).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]  // always 16

    public init(mapped bytes: [UInt8]) {
        precondition(bytes.count == 16)
        self.bytes = bytes
    }

    public init(ipv4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
    }

    public var isIPv4: Bool {
        bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff
    }

    public var ipv4Bytes: [UInt8]? { isIPv4 ? Array(bytes[12..<16]) : nil }

    public var isLoopback: Bool {
        if isIPv4 { return bytes[12] == 127 }
        return bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] == 1
    }

    /// Parses dotted IPv4 or RFC 4291 IPv6 text (with `::`, and a dotted tail).
    public init?(_ text: String) {
        if !text.contains(":") {
            guard let v4 = IPAddress.parseV4(text) else { return nil }
            self.bytes = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] + v4
            return
        }
        guard let v6 = IPAddress.parseV6(text) else { return nil }
        self.bytes = v6
    }

    static func parseV4(_ s: String) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), let v = UInt8(p),
                  !(p.count > 1 && p.first == "0") else { return nil }
            out.append(v)
        }
        return out
    }

    static func parseV6(_ s: String) -> [UInt8]? {
        var halves: [String] = []
        var rest = Substring(s)
        while let r = rest.firstRange(of: "::") {
            halves.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        halves.append(String(rest))
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt8]? {
            if part.isEmpty { return [] }
            var out: [UInt8] = []
            let items = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, item) in items.enumerated() {
                if i == items.count - 1, item.contains(".") {
                    guard let v4 = parseV4(String(item)) else { return nil }
                    out += v4
                    continue
                }
                guard (1...4).contains(item.count), let v = UInt16(item, radix: 16) else { return nil }
                out += [UInt8(v >> 8), UInt8(v & 0xff)]
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        if halves.count == 1 { return head.count == 16 ? head : nil }
        guard let tail = groups(halves[1]), head.count + tail.count <= 14 else { return nil }
        return head + Array(repeating: 0, count: 16 - head.count - tail.count) + tail
    }

    public var description: String {
        if let v4 = ipv4Bytes { return v4.map(String.init).joined(separator: ".") }
        var words: [UInt16] = []
        for i in stride(from: 0, to: 16, by: 2) { words.append(UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1])) }
        // Longest run of zero words (length >= 2) becomes "::" (RFC 5952).
        var best = (start: -1, len: 0), cur = (start: -1, len: 0)
        for (i, w) in words.enumerated() {
            if w == 0 {
                cur = cur.start < 0 ? (i, 1) : (cur.start, cur.len + 1)
                if cur.len > best.len { best = cur }
            } else { cur = (-1, 0) }
        }
        let hex = words.map { String($0, radix: 16) }
        if best.len < 2 { return hex.joined(separator: ":") }
        let left = hex[0..<best.start].joined(separator: ":")
        let right = hex[(best.start + best.len)...].joined(separator: ":")
        return left + "::" + right
    }
}

/// An IP prefix such as `10.0.0.0/8` or `fd00::/8`.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    /// Prefix length in the address's own family (0...32 for IPv4).
    public var prefixLength: Int

    public init(_ text: String, field: String = "cidr") throws(ValidationError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard let addr = IPAddress(String(parts[0])) else {
            throw ValidationError(field: field, "\"\(text)\" is not an IP address or CIDR")
        }
        let maxLen = addr.isIPv4 ? 32 : 128
        var length = maxLen
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...maxLen).contains(n) else {
                throw ValidationError(field: field, "\"\(text)\": prefix length must be 0 to \(maxLen)")
            }
            length = n
        } else if parts.count > 2 {
            throw ValidationError(field: field, "\"\(text)\" is not a CIDR")
        }
        self.address = addr
        self.prefixLength = length
        // Canonical form: host bits cleared, so equal prefixes compare equal.
        let bitsFromStart = (addr.isIPv4 ? 96 : 0) + length
        for i in 0..<16 {
            let keep = max(0, min(8, bitsFromStart - i * 8))
            self.address.bytes[i] &= keep == 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
    }

    public func contains(_ ip: IPAddress) -> Bool {
        guard ip.isIPv4 == address.isIPv4 else { return false }
        let bits = (address.isIPv4 ? 96 : 0) + prefixLength
        for i in 0..<16 {
            let keep = max(0, min(8, bits - i * 8))
            let mask: UInt8 = keep == 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
            if ip.bytes[i] & mask != address.bytes[i] & mask { return false }
        }
        return true
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

extension IPAddress {
    /// `ip:port` or `[ipv6]:port`, the way addresses are written in configs
    /// and HTTP authorities. nil when the host is not an IP address or the
    /// port is not a number in 0...65535.
    public static func parseEndpoint(_ text: String) -> (address: IPAddress, port: UInt16)? {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = Substring(text[..<colon])
        if host.hasPrefix("[") || host.hasSuffix("]") {
            guard host.hasPrefix("["), host.hasSuffix("]") else { return nil }
            host = host.dropFirst().dropLast()
        }
        guard let ip = IPAddress(String(host)) else { return nil }
        return (ip, port)
    }
}

/// A Host header (or :authority): `name`, `name:port`, `[v6]` or `[v6]:port`.
public enum HostHeader {
    /// Host and port apart; IPv6 literals keep their brackets.
    public static func split(_ host: String) -> (host: String, port: UInt16?) {
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return (host, nil) }
            let rest = host[host.index(after: close)...]
            let port = rest.hasPrefix(":") ? UInt16(rest.dropFirst()) : nil
            return (String(host[...close]), port)
        }
        if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            return (String(host[..<colon]), UInt16(host[host.index(after: colon)...]))
        }
        return (host, nil)
    }
}
