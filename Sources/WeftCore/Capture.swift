/// What the kernel recorded about a captured connection: where the workload
/// really wanted to go, and which cgroup (workload) and network namespace
/// dialled. Mirrors `struct weft_orig_dst` in bpf/weft_abi.h.
public struct OriginalDestination: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    /// The dialling socket's family (AF_INET or AF_INET6).
    public var socketFamily: Int32
    public var pid: UInt32
    public var cgroupID: UInt64
    public var netnsCookie: UInt64

    public init(address: IPAddress, port: UInt16, socketFamily: Int32, pid: UInt32, cgroupID: UInt64, netnsCookie: UInt64) {
        self.address = address
        self.port = port
        self.socketFamily = socketFamily
        self.pid = pid
        self.cgroupID = cgroupID
        self.netnsCookie = netnsCookie
    }

    public var description: String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}

/// Which traffic capture leaves alone. Defaults follow Istio's: loopback
/// stays local, SSH stays reachable when the mesh is misconfigured.
public struct CaptureExclusions: Hashable, Sendable {
    public var ports: [UInt16]
    public var cidrs: [CIDR]

    public init(ports: [UInt16] = [], cidrs: [CIDR] = []) {
        self.ports = ports
        self.cidrs = cidrs
    }
}

/// The redirected connection as the proxy's listener sees it: the workload's
/// end (source) and the listener's end (destination), in the listener's
/// network namespace. Mirrors `struct weft_tuple_key`.
public struct CapturedConnectionKey: Hashable, Sendable {
    public var netnsCookie: UInt64
    public var source: IPAddress
    public var sourcePort: UInt16
    public var destination: IPAddress
    public var destinationPort: UInt16

    public init(netnsCookie: UInt64, source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16) {
        self.netnsCookie = netnsCookie
        self.source = source
        self.sourcePort = sourcePort
        self.destination = destination
        self.destinationPort = destinationPort
    }
}

/// Finds (and forgets) the kernel's record of a captured connection.
public protocol CapturedConnectionResolver: Sendable {
    func take(_ key: CapturedConnectionKey) -> OriginalDestination?
}

/// Names the workload behind a cgroup id (the cgroup of the socket that
/// dialled, as recorded by the kernel).
public protocol WorkloadResolver: Sendable {
    func workload(cgroupID: UInt64) -> WorkloadRef?
}
