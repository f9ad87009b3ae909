/// `x-request-id` values: random UUIDs (version 4), as Envoy generates them.
///
/// One generator per client connection, seeded once from the system's
/// random source: drawing 16 bytes from it for every request cost a
/// `getrandom` system call per byte. The ids only need to be unique, not
/// secret (they are logged and sent to backends in the clear).
public struct RequestIDGenerator: Sendable {
    private var state: UInt64

    public init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
    }

    public init(seed: UInt64) { state = seed }

    /// wyrand: 64 well-mixed bits per step.
    private mutating func next() -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }

    public mutating func generate() -> String {
        var high = next(), low = next()
        high = (high & ~0xF000) | 0x4000                               // version 4
        low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000     // RFC 4122 variant
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { out in
            var i = 0
            func put(_ value: UInt64, nibbles: Int) {
                for n in stride(from: nibbles - 1, through: 0, by: -1) {
                    out[i] = digits.utf8Start[Int((value >> (UInt64(n) * 4)) & 0xF)]
                    i += 1
                }
            }
            put(high >> 32, nibbles: 8); out[i] = 0x2D; i += 1
            put(high >> 16, nibbles: 4); out[i] = 0x2D; i += 1
            put(high, nibbles: 4); out[i] = 0x2D; i += 1
            put(low >> 48, nibbles: 4); out[i] = 0x2D; i += 1
            put(low, nibbles: 12)
            return i
        }
    }
}
