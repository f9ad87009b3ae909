import Logging
import OTel
import ServiceLifecycle
import Tracing

/// HTTP request headers as the proxy holds them, for trace propagation.
public typealias HeaderList = [(name: String, value: String)]

/// Spans for requests through the node proxy: a client span at the source
/// proxy, a server span at the destination proxy, exported over OTLP/HTTP
/// (protobuf) by swift-otel.
///
/// Propagation: W3C `traceparent`/`tracestate` (swift-otel's propagator),
/// and B3, multi-header and single, translated here (swift-otel has no B3
/// propagator): an incoming B3 context becomes the parent, and a request
/// that came with B3 leaves with B3 headers for the new span too.
/// Sampling is parent-based: an incoming sampled flag is honoured either
/// way; requests without one are sampled at `samplePercent`.
public final class MeshTracing: Sendable {
    public struct Settings: Sendable, Equatable {
        /// OTLP/HTTP traces endpoint, e.g. http://jaeger:4318/v1/traces.
        public var endpoint: String
        public var samplePercent: Double
        public var serviceName: String
        public var node: String

        public init(endpoint: String, samplePercent: Double, serviceName: String, node: String) {
            self.endpoint = endpoint
            self.samplePercent = samplePercent
            self.serviceName = serviceName
            self.node = node
        }
    }

    public let settings: Settings
    private let tracer: any Tracer
    /// Runs the exporter and batch processor; the agent runs it beside itself.
    public let service: any Service

    public init(settings: Settings, logger: Logger) throws {
        self.settings = settings
        var config = OTel.Configuration.default
        config.serviceName = settings.serviceName
        config.resourceAttributes = ["weft.node": settings.node]
        config.diagnosticLogger = .custom(logger)
        config.diagnosticLogLevel = .warning
        config.propagators = [.traceContext]
        config.metrics.enabled = false
        config.logs.enabled = false
        config.traces.enabled = true
        config.traces.exporter = .otlp
        config.traces.otlpExporter.endpoint = settings.endpoint
        config.traces.otlpExporter.protocol = .httpProtobuf
        config.traces.batchSpanProcessor.scheduleDelay = .seconds(1)
        guard let sampler = OTel.Configuration.TracesConfiguration.SamplerConfiguration.parentBasedTraceIDRatio(ratio: min(1, max(0, settings.samplePercent / 100))) else {
            throw TelemetryError("telemetry.tracing.samplePercent: \(settings.samplePercent) must be between 0 and 100")
        }
        config.traces.sampler = sampler
        let (tracer, service) = try OTel.makeTracingBackend(configuration: config)
        self.tracer = tracer
        self.service = service
    }

    public enum Kind: Sendable { case client, server }

    /// A span for one request, or a no-op when tracing is off.
    public final class RequestSpan: @unchecked Sendable {
        let span: (any Span)?
        /// The incoming request used B3, so the outgoing one carries it too.
        let b3: Bool

        init(span: (any Span)?, b3: Bool) {
            self.span = span
            self.b3 = b3
        }

        public func setAttribute(_ key: String, _ value: String) {
            span?.updateAttributes { $0[key] = value }
        }

        public func setAttribute(_ key: String, _ value: Int) {
            span?.updateAttributes { $0[key] = value }
        }

        /// Ends the span with the response status (5xx and failures are errors).
        public func end(status: Int?, flags: String) {
            guard let span else { return }
            span.updateAttributes { a in
                if let status { a["http.response.status_code"] = status }
                if flags != "-" { a["weft.response_flags"] = flags }
            }
            if status == nil || status! >= 500 {
                span.setStatus(SpanStatus(code: .error, message: flags == "-" ? nil : flags))
            }
            span.end()
        }
    }

    /// Starts a span whose parent is the context in `headers` (W3C or B3),
    /// and rewrites `headers` so that the next hop's parent is this span.
    public func start(_ name: String, kind: Kind, headers: inout HeaderList) -> RequestSpan {
        var context = ServiceContext.topLevel
        let usedB3 = Self.hasB3(headers)
        var carrier = headers
        if !carrier.contains(where: { $0.name.lowercased() == "traceparent" }), let parent = Self.traceparent(fromB3: headers, samplePercent: settings.samplePercent) {
            carrier.append((name: "traceparent", value: parent))
        }
        tracer.extract(carrier, into: &context, using: HeaderExtractor())
        let span = tracer.startSpan(name, context: context, ofKind: kind == .client ? .client : .server)
        var injected: HeaderList = []
        tracer.inject(span.context, into: &injected, using: HeaderInjector())
        headers.removeAll { ["traceparent", "tracestate"].contains($0.name.lowercased()) }
        headers += injected
        if usedB3, let tp = injected.first(where: { $0.name == "traceparent" })?.value {
            Self.rewriteB3(&headers, traceparent: tp)
        }
        return RequestSpan(span: span, b3: usedB3)
    }

    // MARK: B3

    static func hasB3(_ headers: HeaderList) -> Bool {
        headers.contains { let n = $0.name.lowercased(); return n == "b3" || n == "x-b3-traceid" }
    }

    static func value(_ name: String, _ headers: HeaderList) -> String? {
        headers.first { $0.name.lowercased() == name }?.value
    }

    /// A W3C traceparent for a B3 context (multi or single header). A
    /// deferred sampling decision is made here, at `samplePercent`.
    static func traceparent(fromB3 headers: HeaderList, samplePercent: Double) -> String? {
        var traceID: String?, spanID: String?, sampled: String?
        if let single = value("b3", headers) {
            let parts = single.split(separator: "-").map(String.init)
            if parts.count == 1 {
                // `b3: 0` / `b3: 1` / `b3: d`: a decision without a context.
                return nil
            }
            guard parts.count >= 2 else { return nil }
            traceID = parts[0]
            spanID = parts[1]
            sampled = parts.count >= 3 ? parts[2] : nil
        } else {
            traceID = value("x-b3-traceid", headers)
            spanID = value("x-b3-spanid", headers)
            sampled = value("x-b3-flags", headers) == "1" ? "d" : value("x-b3-sampled", headers)
        }
        guard var t = traceID?.lowercased(), let s = spanID?.lowercased(), isHex(t), isHex(s), s.count == 16,
              t.count == 16 || t.count == 32 else { return nil }
        if t.count == 16 { t = String(repeating: "0", count: 16) + t }
        guard t != String(repeating: "0", count: 32), s != String(repeating: "0", count: 16) else { return nil }
        let on: Bool
        switch sampled?.lowercased() {
        case "1", "true", "d": on = true
        case "0", "false": on = false
        default: on = Double.random(in: 0..<100) < samplePercent
        }
        return "00-\(t)-\(s)-\(on ? "01" : "00")"
    }

    /// Replaces the B3 headers with the context of `traceparent` (this span
    /// as the parent of the next hop), in the form the request came with.
    static func rewriteB3(_ headers: inout HeaderList, traceparent: String) {
        let parts = traceparent.split(separator: "-").map(String.init)
        guard parts.count == 4 else { return }
        let incomingSpan = value("x-b3-spanid", headers)
            ?? value("b3", headers).flatMap { $0.split(separator: "-").dropFirst().first.map(String.init) }
        let single = value("b3", headers) != nil
        headers.removeAll { ["b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"].contains($0.name.lowercased()) }
        let sampled = parts[3] == "01" ? "1" : "0"
        if single {
            var v = "\(parts[1])-\(parts[2])-\(sampled)"
            if let incomingSpan { v += "-\(incomingSpan)" }
            headers.append((name: "b3", value: v))
        } else {
            headers.append((name: "x-b3-traceid", value: parts[1]))
            headers.append((name: "x-b3-spanid", value: parts[2]))
            if let incomingSpan { headers.append((name: "x-b3-parentspanid", value: incomingSpan)) }
            headers.append((name: "x-b3-sampled", value: sampled))
        }
    }

    static func isHex(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// The trace id of a traceparent header value, for access logs.
    public static func traceID(_ headers: HeaderList) -> String? {
        traceID(traceparent: value("traceparent", headers))
    }

    /// The trace id of a W3C `traceparent` value, if it has one.
    public static func traceID(traceparent tp: String?) -> String? {
        guard let tp else { return nil }
        let parts = tp.split(separator: "-")
        return parts.count == 4 ? String(parts[1]) : nil
    }
}

struct HeaderExtractor: Extractor {
    func extract(key: String, from carrier: HeaderList) -> String? {
        let k = key.lowercased()
        return carrier.first { $0.name.lowercased() == k }?.value
    }
}

struct HeaderInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout HeaderList) {
        carrier.append((name: key.lowercased(), value: value))
    }
}
