/// `/proc/self/mountinfo`, read as weftd and `weftctl check` need it: each
/// mount's point and filesystem type.
public enum MountInfo {
    /// "... mountpoint ... - fstype source options": the type follows the lone "-".
    public static func mounts(_ text: String) -> [(point: String, type: String)] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields.count > 4 else { return nil }
            return (unescape(String(fields[4])), String(fields[dash + 1]))
        }
    }

    /// mountinfo escapes space, tab, newline and backslash as \ooo.
    static func unescape(_ s: String) -> String {
        var out = "", i = s.startIndex
        while i < s.endIndex {
            if s[i] == "\\", let end = s.index(i, offsetBy: 4, limitedBy: s.endIndex),
               let v = UInt8(s[s.index(after: i)..<end], radix: 8) {
                out.append(Character(Unicode.Scalar(v)))
                i = end
            } else {
                out.append(s[i])
                i = s.index(after: i)
            }
        }
        return out
    }
}
