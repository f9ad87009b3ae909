import WeftCore

/// Picks virtual IPs for Services from the service CIDR (`--service-cidr`).
///
/// The lowest free address wins, so allocation is deterministic and easy to reason
/// about in tests and incidents; the network address (and, for IPv4, the broadcast
/// address) is never handed out, as in Kubernetes' allocator, because some stacks
/// treat them specially.
struct VirtualIPAllocator: Sendable {
    let cidr: CIDR

    init(cidr: CIDR) {
        self.cidr = cidr
    }

    private var hostBits: Int { (cidr.address.isIPv4 ? 32 : 128) - cidr.prefixLength }

    /// The offsets within the prefix that may be handed out.
    private var usableOffsets: ClosedRange<UInt64> {
        let bits = min(hostBits, 63)
        let size = UInt64(1) << UInt64(bits)
        if hostBits < 2 { return 0...(size - 1) }
        if cidr.address.isIPv4 { return 1...(size - 2) }
        return 1...(size - 1)
    }

    /// The lowest usable address not in `taken`, or nil when the prefix is full.
    func allocate(avoiding taken: Set<IPAddress>) -> IPAddress? {
        var offset = usableOffsets.lowerBound
        // At most taken.count addresses can be skipped, so this ends quickly even for an IPv6 /64.
        while offset <= usableOffsets.upperBound {
            let candidate = address(at: offset)
            if !taken.contains(candidate) { return candidate }
            if offset == usableOffsets.upperBound { break }
            offset += 1
        }
        return nil
    }

    func contains(_ ip: IPAddress) -> Bool { cidr.contains(ip) }

    private func address(at offset: UInt64) -> IPAddress {
        var bytes = cidr.address.bytes
        var carry = offset
        var i = 15
        while carry > 0, i >= 0 {
            let sum = UInt64(bytes[i]) + (carry & 0xff)
            bytes[i] = UInt8(truncatingIfNeeded: sum)
            carry = (carry >> 8) + (sum >> 8)
            i -= 1
        }
        return IPAddress(mapped: bytes)
    }
}
