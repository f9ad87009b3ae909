/// systemd's naming rules, so that Weft finds workloads exactly where systemd
/// puts them: `weft-shop.slice` is a child of `weft.slice`, and a '-' inside
/// a name must be escaped (`\x2d`) or systemd would read it as another level.
public enum SystemdNames {
    /// The parent slice of every mesh namespace slice.
    public static let rootSlice = "weft.slice"

    /// `systemd-escape` for one name component (not a path).
    public static func escape(_ s: String) -> String {
        var out = ""
        for (i, b) in s.utf8.enumerated() {
            let c = Character(Unicode.Scalar(b))
            let plain = (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39)
                || b == 0x5f || b == 0x3a || (b == 0x2e && i > 0)
            out += plain ? String(c) : "\\x" + String(b, radix: 16, uppercase: false).leftPadded(to: 2)
        }
        return out
    }

    /// `weft-<escaped ns>.slice`.
    public static func slice(for namespace: NamespaceName) -> String {
        "weft-\(escape(namespace.rawValue)).slice"
    }

    /// The cgroup path of a namespace's slice relative to the cgroup root.
    public static func slicePath(for namespace: NamespaceName) -> String {
        "\(rootSlice)/\(slice(for: namespace))"
    }

    /// The namespace a slice unit name stands for, if it is one of Weft's.
    public static func namespace(fromSlice unit: String) -> NamespaceName? {
        guard unit.hasPrefix("weft-"), unit.hasSuffix(".slice") else { return nil }
        let escaped = unit.dropFirst("weft-".count).dropLast(".slice".count)
        guard let name = unescape(String(escaped)) else { return nil }
        return try? NamespaceName(name)
    }

    public static func unescape(_ s: String) -> String? {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.first {
            if b == 0x5c {
                guard it.count >= 4, it.dropFirst().first == 0x78,
                      let v = UInt8(String(decoding: it.dropFirst(2).prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes.append(v)
                it = it.dropFirst(4)
            } else {
                if b == 0x2d { return nil } // an unescaped '-' is a slice level, not a name
                bytes.append(b)
                it = it.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension String {
    fileprivate func leftPadded(to n: Int) -> String {
        count >= n ? self : String(repeating: "0", count: n - count) + self
    }
}
