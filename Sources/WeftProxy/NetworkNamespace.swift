import CWeftShim
import Glibc

/// A network namespace the proxy serves, held open by file descriptor.
/// The node's own namespace has no descriptor: sockets are created as usual.
public final class NetworkNamespace: Sendable, Hashable, CustomStringConvertible {
    /// -1 for the node's own namespace.
    let fd: Int32
    /// Kernel identity of the namespace (the nsfs inode).
    public let inode: UInt64
    /// The cookie the eBPF programs record (`bpf_get_netns_cookie`).
    public let cookie: UInt64

    /// weftd's own network namespace, opened once: threads that create
    /// sockets in a workload's namespace return here.
    private static let home: Int32 = Glibc.open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)

    private init(fd: Int32, inode: UInt64, cookie: UInt64) {
        self.fd = fd
        self.inode = inode
        self.cookie = cookie
    }

    public var isNode: Bool { fd < 0 }

    /// The namespace weftd itself runs in.
    public static func node() throws -> NetworkNamespace {
        let inode = try inodeOf(path: "/proc/self/ns/net")
        let probe = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { throw ProxyError.system("socket", errno) }
        defer { close(probe) }
        return NetworkNamespace(fd: -1, inode: inode, cookie: weft_socket_netns_cookie(probe))
    }

    /// Opens a namespace by path (`/run/netns/NAME`, `/proc/PID/ns/net`).
    /// Returns the node namespace when the path names it.
    public static func open(path: String) throws -> NetworkNamespace {
        let inode = try inodeOf(path: path)
        if inode == (try inodeOf(path: "/proc/self/ns/net")) { return try node() }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ProxyError.system("open network namespace \(path)", errno) }
        let cookie = weft_netns_cookie_of(fd, home)
        guard cookie != 0 else {
            close(fd)
            throw ProxyError.system("read the cookie of network namespace \(path) (kernel 5.14+ needed)", EINVAL)
        }
        return NetworkNamespace(fd: fd, inode: inode, cookie: cookie)
    }

    public static func inodeOf(path: String) throws -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ProxyError.system("stat \(path)", errno) }
        return UInt64(st.st_ino)
    }

    /// A new socket inside this namespace (close-on-exec, blocking).
    func makeSocket(family: Int32, type: Int32) throws -> Int32 {
        let fd = isNode
            ? Glibc.socket(family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
            : weft_socket_in_netns(self.fd, Self.home, family, type)
        guard fd >= 0 else { throw ProxyError.system("socket in \(self)", isNode ? errno : -fd) }
        return fd
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    public var description: String { isNode ? "node" : "netns:\(inode)" }
    public static func == (a: NetworkNamespace, b: NetworkNamespace) -> Bool { a.inode == b.inode }
    public func hash(into h: inout Hasher) { h.combine(inode) }
}

public struct ProxyError: Error, CustomStringConvertible, Sendable {
    public var message: String

    public static func system(_ what: String, _ err: Int32) -> ProxyError {
        ProxyError(message: "\(what): \(String(cString: strerror(err)))")
    }

    public var description: String { message }
}
