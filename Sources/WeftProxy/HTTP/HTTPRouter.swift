import NIOCore
import NIOHTTP1
import WeftCore
import WeftHTTP

/// HTTP/1.1 at the source node, for a Service port an HTTPRoute attaches to:
/// each request is checked (headers, path), routed by the route's rules
/// (Gateway API precedence), sent to a backend Service chosen by weight and
/// to one of its endpoints (directly, or through an HBONE tunnel with the
/// workload's identity), and its response relayed back. Requests on one
/// connection are handled one after the other, in order.
///
/// Answered here without forwarding: 400 (invalid headers or path), 404
/// (no rule matches: response flag NR), 500 (a rule uses a filter not
/// supported yet, or every backend weight is 0), 503 (no endpoint answered:
/// UF/UH). The flag is also sent in `x-weft-response-flags` for the client's logs.
final class HTTPRouter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let proxy: NodeProxy
    private let netns: NetworkNamespace
    private let service: HTTPRouteTable.Port
    private let source: WorkloadRef?

    /// Parts of requests not started yet (pipelining), in order.
    private var queued: [HTTPServerRequestPart] = []
    private var current: Exchange?
    private var context: ChannelHandlerContext?
    private var readPending = false

    /// One request in flight.
    private final class Exchange {
        var keepAlive: Bool
        var requestEnded = false
        /// Body parts that arrived before the upstream was ready.
        var buffered: [HTTPServerRequestPart] = []
        var upstream: (any Channel)?
        /// Answered locally: the rest of the request is read and dropped.
        var discarding = false
        var responseFilters: [HTTPRouteSpec.HeaderModifier] = []

        init(keepAlive: Bool) { self.keepAlive = keepAlive }
    }

    init(proxy: NodeProxy, netns: NetworkNamespace, service: HTTPRouteTable.Port, source: WorkloadRef?) {
        self.proxy = proxy
        self.netns = netns
        self.service = service
        self.source = source
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        current?.upstream?.close(promise: nil)
        self.context = nil
    }

    // MARK: requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if let current, !current.requestEnded {
            continueRequest(part, current)
        } else {
            queued.append(part)
            startNextIfIdle()
        }
    }

    /// Holds reads while a finished request waits for its response, so a
    /// pipelining client cannot make the proxy buffer without bound.
    func read(context: ChannelHandlerContext) {
        if let current, current.requestEnded {
            readPending = true
        } else {
            context.read()
        }
    }

    private func startNextIfIdle() {
        while current == nil, !queued.isEmpty {
            let part = queued.removeFirst()
            guard case .head(let head) = part else { continue }
            start(head)
        }
        if let current, !current.requestEnded {
            while !queued.isEmpty, let c = self.current, !c.requestEnded {
                continueRequest(queued.removeFirst(), c)
            }
        }
    }

    private func continueRequest(_ part: HTTPServerRequestPart, _ exchange: Exchange) {
        if case .end = part { exchange.requestEnded = true }
        if exchange.discarding { return }
        if let upstream = exchange.upstream {
            upstream.writeAndFlush(Self.clientPart(part), promise: nil)
        } else {
            exchange.buffered.append(part)
        }
    }

    private func start(_ head: HTTPRequestHead) {
        let exchange = Exchange(keepAlive: head.isKeepAlive)
        current = exchange
        let headers = head.headers.map { (name: $0.name, value: $0.value) }
        do {
            try HeaderValidation.check(headers)
        } catch {
            return reply(exchange, .badRequest, flag: nil, body: "invalid request headers: \(error)\n", close: true)
        }
        let target: PathNormalization.Target
        do {
            target = try PathNormalization.normalize(head.uri)
        } catch {
            return reply(exchange, .badRequest, flag: nil, body: "invalid request path: \(error)\n", close: true)
        }
        let view = RequestView(method: head.method.rawValue, path: target.path, query: target.query, headers: headers)
        guard let selected = service.routes.select(view) else {
            proxy.stats.httpNoRoute.add(1, ordering: .relaxed)
            return reply(exchange, .notFound, flag: "NR", body: "no route for \(target.path)\n", close: false)
        }
        var requestModifiers: [HTTPRouteSpec.HeaderModifier] = []
        var responseModifiers: [HTTPRouteSpec.HeaderModifier] = []
        func collect(_ filters: [HTTPRouteSpec.Filter]) -> Bool {
            for f in filters {
                switch f {
                case .requestHeaderModifier(let m): requestModifiers.append(m)
                case .responseHeaderModifier(let m): responseModifiers.append(m)
                default: return false
                }
            }
            return true
        }
        guard collect(selected.rule.filters), let backend = CompiledRoutes.pickBackend(selected.rule), collect(backend.filters) else {
            return reply(exchange, .internalServerError, flag: nil,
                         body: "route \(selected.route.namespace)/\(selected.route.name) has no usable backend, or a filter this proxy does not support yet\n",
                         close: false)
        }
        exchange.responseFilters = responseModifiers
        let backendNamespace = backend.backend.namespace?.rawValue ?? selected.route.namespace
        guard let vip = proxy.httpRoutes.virtualIP(namespace: backendNamespace, service: backend.backend.name) else {
            return reply(exchange, .internalServerError, flag: nil, body: "backend Service \(backendNamespace)/\(backend.backend.name) does not exist\n", close: false)
        }

        var out = HTTPHeaders(HeaderValidation.forwardable(headers).map { ($0.name, $0.value) })
        for m in requestModifiers { Self.apply(m, to: &out) }
        if !out.contains(name: "x-request-id") { out.add(name: "x-request-id", value: Self.requestID()) }
        if !out.contains(name: "x-forwarded-proto") { out.add(name: "x-forwarded-proto", value: "http") }
        var forwarded = HTTPRequestHead(version: .http1_1, method: head.method, uri: target.requestTarget, headers: out)
        forwarded.headers.remove(name: "connection")

        let destination = OriginalDestination(address: vip, port: backend.backend.port, socketFamily: vip.isIPv4 ? 2 : 10,
                                              pid: 0, cgroupID: 0, netnsCookie: 0)
        let hops: [Hop]
        switch proxy.plan(destination, source: source) {
        case .success(let h): hops = h
        case .failure(let refusal):
            return reply(exchange, .serviceUnavailable, flag: "UH", body: "no healthy upstream: \(refusal)\n", close: false)
        }
        guard let context else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let stats = proxy.stats
        proxy.connectFirst(hops[...], netns: netns, on: context.eventLoop).whenComplete { result in
            let router = loopBound.value
            guard router.current === exchange else {
                if case .success(let (channel, _)) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure:
                stats.upstreamConnectFailures.add(1, ordering: .relaxed)
                router.reply(exchange, .serviceUnavailable, flag: "UF", body: "upstream connect failure\n", close: false)
            case .success(let (upstream, hop)):
                if let pair = hop.identities {
                    stats.recordPair(direction: .outbound, path: hop.isTunnel ? .hbone : .local, source: pair.source, destination: pair.destination)
                }
                router.attach(upstream, exchange: exchange, head: forwarded)
            }
        }
    }

    private func attach(_ upstream: any Channel, exchange: Exchange, head: HTTPRequestHead) {
        guard let context else {
            upstream.close(promise: nil)
            return
        }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        do {
            try upstream.pipeline.syncOperations.addHandlers([
                HTTPRequestEncoder(),
                ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
                UpstreamResponseRelay(onPart: { part in loopBound.value.upstreamPart(part, exchange) },
                                      onClose: { loopBound.value.upstreamClosed(exchange) }),
            ])
        } catch {
            upstream.close(promise: nil)
            return reply(exchange, .serviceUnavailable, flag: "UF", body: "upstream setup failed\n", close: false)
        }
        exchange.upstream = upstream
        upstream.setOption(.autoRead, value: true).whenComplete { _ in upstream.read() }
        upstream.write(NIOAny(HTTPClientRequestPart.head(head)), promise: nil)
        for part in exchange.buffered where !(part.isHead) {
            upstream.write(Self.clientPart(part), promise: nil)
        }
        exchange.buffered = []
        upstream.flush()
    }

    // MARK: responses

    private func upstreamPart(_ part: HTTPClientResponsePart, _ exchange: Exchange) {
        guard let context, current === exchange else { return }
        switch part {
        case .head(var head):
            var headers = HTTPHeaders(HeaderValidation.forwardable(head.headers.map { (name: $0.name, value: $0.value) }).map { ($0.name, $0.value) })
            for m in exchange.responseFilters { Self.apply(m, to: &headers) }
            if !exchange.keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
            head.headers = headers
            head.version = .http1_1
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: head.status, headers: head.headers))), promise: nil)
        case .body(let buffer):
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            if let upstream = exchange.upstream {
                // Done with this upstream: end our side (END_STREAM on an HBONE
                // stream, FIN on TCP) and let the peer end its own, so the
                // stream finishes cleanly instead of being reset; close it
                // anyway if the peer does not.
                exchange.upstream = nil
                upstream.close(mode: .output, promise: nil)
                upstream.eventLoop.scheduleTask(in: .seconds(5)) { upstream.close(promise: nil) }
            }
            finish(exchange)
        }
    }

    private func upstreamClosed(_ exchange: Exchange) {
        guard current === exchange, exchange.upstream != nil else { return }
        // Closed before a complete response: the client cannot be told more
        // than that, so its connection goes too.
        exchange.upstream = nil
        context?.close(promise: nil)
    }

    private func reply(_ exchange: Exchange, _ status: HTTPResponseStatus, flag: String?, body: String, close: Bool) {
        guard let context else { return }
        exchange.discarding = true
        exchange.buffered = []
        var headers = HTTPHeaders([("content-type", "text/plain"), ("content-length", String(body.utf8.count))])
        if let flag { headers.add(name: "x-weft-response-flags", value: flag) }
        if close || !exchange.keepAlive {
            headers.add(name: "connection", value: "close")
            exchange.keepAlive = false
        }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        finish(exchange)
    }

    /// The response is out: next request, or close.
    private func finish(_ exchange: Exchange) {
        guard let context, current === exchange else { return }
        if !exchange.keepAlive {
            context.close(promise: nil)
            return
        }
        if !exchange.requestEnded {
            // Answered before the client finished sending: read the rest and drop it.
            exchange.discarding = true
            return
        }
        current = nil
        startNextIfIdle()
        if readPending {
            readPending = false
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        current?.upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request NIO could not parse: 400 when nothing was answered yet.
        if error is HTTPParserError, current == nil {
            let e = Exchange(keepAlive: false)
            current = e
            reply(e, .badRequest, flag: nil, body: "malformed HTTP request\n", close: true)
            return
        }
        context.close(promise: nil)
    }

    // MARK: helpers

    static func clientPart(_ part: HTTPServerRequestPart) -> NIOAny {
        switch part {
        case .head(let h): return NIOAny(HTTPClientRequestPart.head(h))
        case .body(let b): return NIOAny(HTTPClientRequestPart.body(.byteBuffer(b)))
        case .end(let t): return NIOAny(HTTPClientRequestPart.end(t))
        }
    }

    static func apply(_ m: HTTPRouteSpec.HeaderModifier, to headers: inout HTTPHeaders) {
        for h in m.set { headers.replaceOrAdd(name: h.name, value: h.value) }
        for h in m.add { headers.add(name: h.name, value: h.value) }
        for name in m.remove { headers.remove(name: name) }
    }

    /// A random UUID (version 4), as Envoy generates for x-request-id.
    static func requestID() -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = bytes.map { b in String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16) }.joined()
        let c = Array(hex)
        return "\(String(c[0..<8]))-\(String(c[8..<12]))-\(String(c[12..<16]))-\(String(c[16..<20]))-\(String(c[20..<32]))"
    }
}

extension HTTPServerRequestPart {
    var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}

/// The upstream side of one request: response parts go to the router.
final class UpstreamResponseRelay: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let onPart: (HTTPClientResponsePart) -> Void
    private let onClose: () -> Void

    init(onPart: @escaping (HTTPClientResponsePart) -> Void, onClose: @escaping () -> Void) {
        self.onPart = onPart
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        onPart(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        onClose()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
