import WeftCore

/// Where a node's eBPF objects live under bpffs:
///
///     <root>/<node>/maps/<map>            every map (pinned by name by libbpf)
///     <root>/<node>/progs/<program>       the programs currently in use
///     <root>/<node>/links/<target>/<program>   one cgroup link per hook and target
///     <root>/<node>/proxy/<program>       links on weftd's own cgroup
///
/// Pins keep everything attached while weftd is stopped, and tell a restarted
/// weftd what it already owns.
public struct PinLayout: Sendable, Hashable {
    public var root: String
    public var node: String

    public init(root: String = "/sys/fs/bpf/weft", node: String) {
        self.root = root
        self.node = node
    }

    public var nodeDir: String { "\(root)/\(node)" }
    public var mapsDir: String { "\(nodeDir)/maps" }
    public var progsDir: String { "\(nodeDir)/progs" }
    public var linksDir: String { "\(nodeDir)/links" }
    public var proxyLinksDir: String { "\(nodeDir)/proxy" }
    public func linkDir(_ target: String) -> String { "\(linksDir)/\(target)" }
}
