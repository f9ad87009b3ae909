extension String {
    /// ASCII case-insensitive equality (header names), without allocating: both
    /// sides are lowered byte by byte, bytes from 0x80 up compared as they are.
    public func equalsIgnoringASCIICase(_ other: String) -> Bool {
        let a = utf8, b = other.utf8
        guard a.count == b.count else { return false }
        // Native strings (all that come off the wire) are compared as two byte buffers.
        if let result = a.withContiguousStorageIfAvailable({ x in
            b.withContiguousStorageIfAvailable { y in Self.asciiCaseInsensitiveEqual(x, y) }
        }), let result { return result }
        for (x, y) in zip(a, b) where x != y {
            if Self.asciiLower(x) != Self.asciiLower(y) { return false }
        }
        return true
    }

    @inline(__always)
    private static func asciiLower(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }

    /// Same-length buffers.
    private static func asciiCaseInsensitiveEqual(_ x: UnsafeBufferPointer<UInt8>, _ y: UnsafeBufferPointer<UInt8>) -> Bool {
        for i in 0..<x.count where x[i] != y[i] {
            if asciiLower(x[i]) != asciiLower(y[i]) { return false }
        }
        return true
    }
}
