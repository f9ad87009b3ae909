import CWeftShim

/// glibc's allocator, set for a proxy that reads and writes in 64 KiB buffers.
///
/// By default glibc hands free memory at the top of a heap back to the kernel
/// once more than 128 KiB of it is free, and moves that limit as it goes. A
/// tunnel relaying bulk data frees a read buffer, then allocates the next one:
/// each time the pages went back, the next read faulted them in again and the
/// kernel zeroed them (perf, iperf3 through the tunnel: 13% of the sending
/// proxy's samples were page faults under `read`; 0.06% with these thresholds).
/// A fixed trim threshold keeps up to 64 MiB of freed memory for reuse; the
/// fixed mmap threshold keeps buffers of up to 4 MiB in the heaps rather than
/// in mappings made and unmade per buffer. Idle memory is unchanged: only
/// memory the proxy has used is kept.
public enum AllocatorTuning {
    public static let trimThreshold: Int32 = 64 << 20
    public static let mmapThreshold: Int32 = 4 << 20

    /// Applies both thresholds, once, as weftd starts (glibc's settings hold for
    /// the whole process, every thread's arena included). Returns false where
    /// glibc refused.
    @discardableResult
    public static func apply() -> Bool {
        weft_malloc_thresholds(trimThreshold, mmapThreshold) == 1
    }
}
