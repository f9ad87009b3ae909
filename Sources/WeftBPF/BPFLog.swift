import CWeftShim
import Logging
import Synchronization

/// Routes libbpf's messages into swift-log.
enum BPFLog {
    private static let current = Mutex<Logger?>(nil)

    static func install(_ logger: Logger) {
        current.withLock { $0 = logger }
        weft_bpf_set_logger { level, message in
            guard let message else { return }
            let text = String(cString: message)
            BPFLog.current.withLock { logger in
                switch level {
                case 0: logger?.warning("libbpf: \(text)")
                case 1: logger?.info("libbpf: \(text)")
                default: logger?.trace("libbpf: \(text)")
                }
            }
        }
    }
}
