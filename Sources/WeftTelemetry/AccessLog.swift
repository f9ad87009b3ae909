import Foundation
import Synchronization
import WeftCore

/// Which requests and connections are logged: on or off and a sample
/// percentage, with per-namespace overrides (the namespace of the workload
/// the reporting proxy acts for: the source's at the source, the
/// destination's at the destination).
public struct AccessLogPolicy: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        public var enabled: Bool
        public var samplePercent: Double
        public init(enabled: Bool = true, samplePercent: Double = 100) {
            self.enabled = enabled
            self.samplePercent = samplePercent
        }
    }

    public var defaults: Rule
    public var namespaces: [String: Rule]

    public init(defaults: Rule = Rule(), namespaces: [String: Rule] = [:]) {
        self.defaults = defaults
        self.namespaces = namespaces
    }

    public func shouldLog(namespace: String) -> Bool {
        let rule = namespaces[namespace] ?? defaults
        guard rule.enabled, rule.samplePercent > 0 else { return false }
        return rule.samplePercent >= 100 || Double.random(in: 0..<100) < rule.samplePercent
    }
}

/// One access log line: the metrics' fields plus timings and flags.
public struct AccessLogRecord: Sendable {
    public var startTime: Date
    public var durationMilliseconds: Double
    public var traffic: TrafficLabels
    /// HTTP only.
    public var method: String?
    public var path: String?
    public var authority: String?
    public var responseCode: Int?
    public var requestID: String?
    public var traceID: String?
    public var responseFlags: String
    public var bytesReceived: Int
    public var bytesSent: Int
    /// Where the proxy sent it: a workload's ip:port, or the tunnel.
    public var upstreamHost: String?
    public var upstreamTransport: String?

    public init(startTime: Date, durationMilliseconds: Double, traffic: TrafficLabels, method: String? = nil,
                path: String? = nil, authority: String? = nil, responseCode: Int? = nil, requestID: String? = nil,
                traceID: String? = nil, responseFlags: String, bytesReceived: Int, bytesSent: Int,
                upstreamHost: String? = nil, upstreamTransport: String? = nil) {
        self.startTime = startTime
        self.durationMilliseconds = durationMilliseconds
        self.traffic = traffic
        self.method = method
        self.path = path
        self.authority = authority
        self.responseCode = responseCode
        self.requestID = requestID
        self.traceID = traceID
        self.responseFlags = responseFlags
        self.bytesReceived = bytesReceived
        self.bytesSent = bytesSent
        self.upstreamHost = upstreamHost
        self.upstreamTransport = upstreamTransport
    }

    /// One line of JSON (keys in a fixed order), newline-terminated.
    public func jsonLine() -> String {
        var out = "{"
        var first = true
        func field(_ key: String, _ value: String?) {
            guard let value else { return }
            if !first { out += "," }
            first = false
            out += "\"\(key)\":"
            JSONValue.writeString(value, to: &out)
        }
        func number(_ key: String, _ value: String?) {
            guard let value else { return }
            if !first { out += "," }
            first = false
            out += "\"\(key)\":\(value)"
        }
        let t = traffic
        field("start_time", Self.timestamp(startTime))
        number("duration_ms", String(format: "%.3f", durationMilliseconds))
        field("reporter", t.reporter.rawValue)
        field("protocol", t.requestProtocol)
        field("method", method)
        field("path", path)
        field("authority", authority)
        number("response_code", responseCode.map(String.init))
        field("response_flags", responseFlags)
        number("bytes_received", String(bytesReceived))
        number("bytes_sent", String(bytesSent))
        field("request_id", requestID)
        field("trace_id", traceID)
        field("source_workload", t.source.workload)
        field("source_namespace", t.source.namespace)
        field("source_principal", t.source.principal)
        field("destination_workload", t.destination.workload)
        field("destination_namespace", t.destination.namespace)
        field("destination_principal", t.destination.principal)
        field("destination_service", t.service.host)
        field("upstream_host", upstreamHost)
        field("upstream_transport", upstreamTransport)
        field("connection_security_policy", t.security.rawValue)
        out += "}\n"
        return out
    }

    static func timestamp(_ d: Date) -> String {
        let ms = Int64((d.timeIntervalSince1970 * 1000).rounded())
        var t = time_t(ms / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1,
                      Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec), Int(ms % 1000))
    }
}

/// JSON access log lines, written off the data path: event loops append to a
/// bounded buffer, a background task writes it out. When the output cannot
/// keep up, lines are dropped and counted rather than slowing traffic.
public final class AccessLog: Sendable {
    public enum Output: Sendable, Equatable {
        case stdout
        case file(String)
    }

    public let policy: AccessLogPolicy
    private let fd: Int32
    private let buffer = Mutex<[UInt8]>([])
    private let limit = 4 << 20
    public let dropped = Atomic<Int>(0)
    public let written = Atomic<Int>(0)

    public init(output: Output, policy: AccessLogPolicy) throws {
        self.policy = policy
        switch output {
        case .stdout:
            fd = 1
        case .file(let path):
            let f = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard f >= 0 else {
                throw TelemetryError("cannot open the access log \(path): \(String(cString: strerror(errno))) (check telemetry.accessLog.output and the folder's permissions)")
            }
            fd = f
        }
    }

    deinit {
        if fd > 2 { close(fd) }
    }

    public func shouldLog(namespace: String) -> Bool { policy.shouldLog(namespace: namespace) }

    public func append(_ record: AccessLogRecord) {
        let line = Array(record.jsonLine().utf8)
        let accepted = buffer.withLock { b -> Bool in
            if b.count + line.count > limit { return false }
            b.append(contentsOf: line)
            return true
        }
        if !accepted { dropped.add(1, ordering: .relaxed) }
    }

    /// Writes out what is buffered; returns the bytes written.
    @discardableResult
    public func flush() -> Int {
        let pending = buffer.withLock { b -> [UInt8] in
            let out = b
            b.removeAll(keepingCapacity: true)
            return out
        }
        guard !pending.isEmpty else { return 0 }
        var offset = 0
        pending.withUnsafeBytes { raw in
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    break
                }
                offset += n
            }
        }
        written.add(offset, ordering: .relaxed)
        return offset
    }

    /// Flushes every 200 ms until cancelled, then once more.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            flush()
        }
        flush()
    }
}

public struct TelemetryError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
