import Glibc

/// An error from the BPF layer, with what to check.
public struct BPFError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var errno: Int32
    public var hint: String

    public init(_ operation: String, errno: Int32, hint: String = "") {
        self.operation = operation
        self.errno = errno
        self.hint = hint
    }

    public var description: String {
        var s = "\(operation): \(String(cString: strerror(errno)))"
        if !hint.isEmpty { s += " (\(hint))" }
        return s
    }

    static func privilegeHint(_ e: Int32) -> String {
        e == EPERM || e == EACCES
            ? "weftd needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_PERFMON; run `weftctl check`"
            : ""
    }
}
