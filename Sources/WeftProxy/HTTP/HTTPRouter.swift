import NIOCore
import NIOHTTP1
import Foundation
import WeftCore
import WeftHTTP
import WeftTelemetry

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

    /// At the source node: routes to a backend. At the destination node (an
    /// HBONE stream the source proxy marked as HTTP): to the workload the
    /// stream was opened for, as the destination proxy's telemetry sees it.
    enum Role {
        case source(service: HTTPRouteTable.Port, workload: WorkloadRef?)
        /// `traffic`: one label set per reporter this proxy is for the
        /// connection. `authorization`: the workload's policies apply per request.
        case destination(target: OriginalDestination, traffic: [TrafficLabels], authorization: AuthorizationContext?)
    }

    /// This connection, for revocation when a policy change denies it.
    private var live: LiveConnections.Entry?

    private let proxy: NodeProxy
    private let netns: NetworkNamespace
    private let role: Role
    private var inputClosed = false

    /// Parts of requests not started yet (pipelining), in order.
    private var queued: [HTTPServerRequestPart] = []
    private var current: Exchange?
    private var context: ChannelHandlerContext?
    private var readPending = false
    /// Between a read's first part and its end (channelReadComplete): what is
    /// written upstream meanwhile goes out in one flush, not one per part.
    private var inReadCycle = false
    private var pendingFlush: (any Channel)?
    private var requestIDs = RequestIDGenerator()
    private var responseEncoder: HTTP1ResponseEncoder?
    /// Telemetry labels of this client's requests, built once rather than per request.
    private var labels = LabelCache()

    /// One request in flight.
    final class Exchange {
        var keepAlive: Bool
        var requestEnded = false
        /// `Expect: 100-continue`: the client waits for a 100 before it sends the body.
        var expectsContinue = false
        /// A 1xx (not 101) was relayed; its end, if the decoder reports one, is not the response's.
        var informationalPending = false
        /// A WebSocket upgrade request (`Connection: upgrade`, `Upgrade: websocket`): the
        /// `Upgrade` value it is forwarded with.
        var upgrade: String?
        /// The backend answered the upgrade with 101: the connections become a byte relay.
        var switching = false
        /// Body parts that arrived before the upstream was ready.
        var buffered: [HTTPServerRequestPart] = []
        var upstream: (any Channel)?
        /// Answered locally: the rest of the request is read and dropped.
        var discarding = false
        /// The response has been sent in full.
        var answered = false
        /// The response head went to the client: no retry any more.
        var responseStarted = false
        // Source role: what each attempt sends, and how attempts go.
        var forwarded: HTTPRequestHead?
        var target: PathNormalization.Target?
        var backend: OriginalDestination?
        var workload: WorkloadRef?
        /// The request's headers as received (for its authorization, built only when a policy needs it).
        var requestHeaders: [(name: String, value: String)] = []
        var authorizationHTTP: AuthorizationRequest.HTTP {
            AuthorizationRequest.HTTP(method: method, path: path, host: authority, headers: requestHeaders)
        }
        var retry = RetryPolicy.none
        var attempt = 0
        var retries = 0
        var perTryTimeout: TimeAmount?
        var perTryTimer: Scheduled<Void>?
        var requestTimer: Scheduled<Void>?
        var delayed = false
        var mirrors: [OriginalDestination] = []
        /// Body parts and end received so far, for retries and mirrors.
        var replay: [HTTPServerRequestPart] = []
        /// The request ended without trailers: not stored in `replay`, so a request
        /// without a body keeps no list at all.
        var replayEnded = false
        /// What a retry or a mirror sends after the head.
        var replayParts: [HTTPServerRequestPart] { replayEnded ? replay + [.end(nil)] : replay }
        var replayBytes = 0
        var replayable = true
        /// Response flags besides the outcome's (DI: the request was delayed by a fault).
        var flags: [String] = []
        /// `flags` as reported (Envoy's `-` for none).
        var reportedFlags: String { flags.isEmpty ? "-" : flags.joined(separator: ",") }
        // The backend Service's traffic policy (DestinationRule).
        var hashKey: String?
        var policy: ServiceTraffic?
        var admitted = false
        var endpointCount = 0
        /// The endpoint of the current try (outlier detection's bookkeeping).
        var endpoint: String?
        /// Counted in flight at this endpoint (least request) until the response ends.
        var inFlightAt: String?
        // Upstream reuse (keep-alive towards the backend, per client connection).
        var relay: UpstreamResponseRelay?
        /// The cache's record of the kept upstream this exchange reuses, kept again with it.
        var kept: IdleUpstream?
        var upstreamKey: UpstreamKey?
        var reusedUpstream = false
        var freshUpstream = false
        var upstreamKeepAlive = false
        /// The upstream is a stream of an HTTP/2 connection to the backend.
        var upstreamIsH2Stream = false
        /// A gRPC Trailers-Only answer's fields, sent as trailers with the end.
        var heldTrailers: HTTPHeaders?
        /// gRPC's status (istio_requests_total's grpc_response_status).
        var grpcStatus: String?
        /// `content-type: application/grpc…`: reported with request_protocol grpc.
        var isGRPC = false
        var uses = 0
        /// Destination role: the workload this exchange goes to.
        var destinationTarget: OriginalDestination?

        func leaveEndpoint() {
            if let endpoint = inFlightAt {
                inFlightAt = nil
                policy?.finished(endpoint)
            }
        }
        var responseFilters: [HTTPRouteSpec.HeaderModifier] = []
        // Telemetry: what is reported when the response ends.
        let started = Date()
        let startedAt = NIODeadline.now()
        var method = ""
        var path = ""
        var authority: String?
        var requestID: String?
        var traceID: String?
        var requestBytes = 0
        var responseBytes = 0
        var responseCode = 0
        /// One per reporter this proxy is (source; destination too on one node).
        var traffic: [TrafficLabels] = []
        var spans: [MeshTracing.RequestSpan] = []
        /// Where the request went (the access log's upstream_host; made a string only when logged).
        var upstreamTarget: OriginalDestination?
        var reported = false

        init(keepAlive: Bool) { self.keepAlive = keepAlive }
    }

    /// Upstreams this client's requests may reuse; shared by the streams of
    /// an HTTP/2 client connection, which closes them when it closes.
    private let upstreams: UpstreamCache
    private let ownsUpstreams: Bool
    /// The client's side is an HTTP/2 stream (one request; it ends itself
    /// once both sides sent END_STREAM), not a connection.
    private let downstreamIsStream: Bool

    init(proxy: NodeProxy, netns: NetworkNamespace, role: Role, sharedUpstreams: UpstreamCache? = nil) {
        self.proxy = proxy
        self.netns = netns
        self.role = role
        self.upstreams = sharedUpstreams ?? UpstreamCache()
        self.ownsUpstreams = sharedUpstreams == nil
        self.downstreamIsStream = sharedUpstreams != nil
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // HTTP/1 clients' connections: the encoder is told which answers are a HEAD's. (An HTTP/2
        // stream's codec frames those itself.)
        responseEncoder = try? context.pipeline.syncOperations.handler(type: HTTP1ResponseEncoder.self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        current?.upstream?.close(promise: nil)
        closeIdle()
        self.context = nil
    }

    // MARK: requests

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        inReadCycle = true
        let part = unwrapInboundIn(data)
        if let current, !current.requestEnded {
            continueRequest(part, current)
        } else {
            queued.append(part)
            startNextIfIdle()
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadCycle = false
        if let upstream = pendingFlush {
            pendingFlush = nil
            upstream.flush()
        }
        context.fireChannelReadComplete()
    }

    /// Sends what was written to `upstream`: at the end of the client's read
    /// when inside one (a request's head and end in one write), else now.
    private func flushUpstream(_ upstream: any Channel) {
        guard inReadCycle else { return upstream.flush() }
        if let other = pendingFlush, other !== upstream { other.flush() }
        pendingFlush = upstream
    }

    /// Holds reads while requests a pipelining client sent ahead wait for
    /// the one in flight, so it cannot make the proxy buffer without bound.
    /// A client that waits for each response is read on: holding its reads
    /// would cost two epoll_ctl calls per request.
    func read(context: ChannelHandlerContext) {
        if let current, current.requestEnded, !queued.isEmpty {
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
        if case .body(let b) = part { exchange.requestBytes += b.readableBytes }
        if exchange.replayable {
            // Kept for retries and mirrors while the request is small enough.
            if case .body(let b) = part { exchange.replayBytes += b.readableBytes }
            if exchange.replayBytes > Self.maxReplayBytes {
                exchange.replayable = false
                exchange.replay = []
            } else if case .end(.none) = part {
                exchange.replayEnded = true
            } else {
                exchange.replay.append(part)
            }
        }
        if case .end = part, exchange.forwarded != nil { sendMirrors(exchange) }
        if exchange.discarding {
            // Answered before the request ended: once it has, the next one may start.
            if exchange.requestEnded, exchange.answered { finish(exchange) }
            return
        }
        if let upstream = exchange.upstream {
            writeUpstream(part, upstream, exchange)
            flushUpstream(upstream)
        } else {
            exchange.buffered.append(part)
        }
    }

    private func start(_ head: HTTPRequestHead) {
        // An HTTP/2 stream carries one request and ends itself; a connection lives on unless told otherwise.
        let exchange = Exchange(keepAlive: downstreamIsStream || head.isKeepAlive)
        current = exchange
        exchange.method = head.method.rawValue
        // Every answer written from here on, 1xx and local replies too, is this request's.
        responseEncoder?.answersHead = head.method == .HEAD
        exchange.path = head.uri
        exchange.requestBytes = HTTP1Wire.size(of: head)
        // One pass over the headers: the list (for validation, routing and policies)
        // and the first value of each header read here, as `first(name:)` gives it.
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(head.headers.count)
        var host: String?, requestID: String?, expect: String?, contentType: String?, upgradeValue: String?
        for (name, value) in head.headers {
            headers.append((name, value))
            switch name.utf8.count {
            case 4 where host == nil && name.equalsIgnoringASCIICase("host"): host = value
            case 6 where expect == nil && name.equalsIgnoringASCIICase("expect"): expect = value
            case 7 where upgradeValue == nil && name.equalsIgnoringASCIICase("upgrade"): upgradeValue = value
            case 12 where requestID == nil && name.equalsIgnoringASCIICase("x-request-id"): requestID = value
            case 12 where contentType == nil && name.equalsIgnoringASCIICase("content-type"): contentType = value
            default: break
            }
        }
        exchange.authority = host
        exchange.requestID = requestID
        exchange.expectsContinue = expect?.equalsIgnoringASCIICase("100-continue") == true
        exchange.isGRPC = contentType?.hasPrefix("application/grpc") == true
        if !downstreamIsStream, let upgrade = upgradeValue,
           head.headers[canonicalForm: "connection"].contains(where: { String($0).equalsIgnoringASCIICase("upgrade") }) {
            // The request decoder stops at an upgrade request: whatever the answer,
            // this connection carries no further HTTP request.
            exchange.keepAlive = false
            // Passed through whatever the protocol (WebSocket, h2c, a custom one): the backend
            // decides, and on a 101 both sides become a byte relay.
            exchange.upgrade = upgrade
        }
        if case .destination(_, let traffic, _) = role { exchange.traffic = traffic }
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
        exchange.path = target.path
        switch role {
        case .source(let service, let workload):
            startAtSource(head, headers: headers, target: target, service: service, workload: workload, exchange)
        case .destination(let destination, _, let authorization):
            if let authorization {
                // Paths are checked in the normalised form they are forwarded in.
                let http = AuthorizationRequest.HTTP(method: head.method.rawValue, path: target.path,
                                                     host: exchange.authority, headers: headers)
                if let live {
                    live.http.withLock { $0 = http }
                } else if let channel = context?.channel {
                    let entry = LiveConnections.Entry(context: authorization, http: http) { channel.close(promise: nil) }
                    live = entry
                    proxy.live.track(entry, until: channel)
                }
                if !proxy.authorize(authorization, http: http).allowed {
                    return reply(exchange, .forbidden, flag: nil, body: RBAC.deniedBody, close: false)
                }
            }
            startAtDestination(head, headers: headers, target: target, destination: destination, exchange)
        }
    }

    /// The destination proxy's side: a server span, then the workload.
    private func startAtDestination(_ head: HTTPRequestHead, headers: [(name: String, value: String)],
                                    target: PathNormalization.Target, destination: OriginalDestination,
                                    _ exchange: Exchange) {
        var out = Self.forwardable(head.headers)
        if let tracing = proxy.telemetry.tracing, let traffic = exchange.traffic.first {
            startSpan(tracing, "\(traffic.service.host):\(destination.port)/*", kind: .server, headers: &out,
                      exchange, traffic: traffic, target: target)
        }
        exchange.traceID = MeshTracing.traceID(traceparent: out.first(name: "traceparent"))
        Self.restoreUpgrade(&out, exchange)
        let forwarded = HTTPRequestHead(version: .http1_1, method: head.method, uri: target.requestTarget, headers: out)
        exchange.upstreamTarget = destination
        exchange.attempt = 1
        exchange.forwarded = forwarded
        exchange.destinationTarget = destination
        connectAtDestination(destination, exchange)
    }

    /// The workload's connection for one request at the destination: the one
    /// this client's previous request left open, or a new one.
    private func connectAtDestination(_ destination: OriginalDestination, _ exchange: Exchange) {
        guard let context, let forwarded = exchange.forwarded else { return }
        let key = UpstreamKey(address: destination.address, port: destination.port, tunnelIdentity: nil)
        if !exchange.freshUpstream, let kept = takeIdle(key) {
            return attach(kept.channel, exchange: exchange, head: forwarded, key: key, reusing: kept)
        }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let stats = proxy.stats
        var h2: (stream: EventLoopFuture<any Channel>, hop: Hop)?
        if case .workload(let entry) = proxy.mesh.current.lookup(destination.address, port: destination.port) {
            h2 = h2Stream(for: .direct(destination, destination: entry, sourceIdentity: nil), on: context.eventLoop)
        }
        let connecting = h2?.stream ?? proxy.connectUpstream(to: destination, netns: netns, on: context.eventLoop)
        connecting.whenComplete { result in
            let router = loopBound.value
            guard router.current === exchange, !exchange.answered else {
                if case .success(let channel) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure:
                stats.upstreamConnectFailures.add(1, ordering: .relaxed)
                router.reply(exchange, .serviceUnavailable, flag: "UF", body: "upstream connect failure\n", close: false)
            case .success(let upstream):
                exchange.upstreamIsH2Stream = h2 != nil
                router.attach(upstream, exchange: exchange, head: forwarded, key: key)
            }
        }
    }

    private func startAtSource(_ head: HTTPRequestHead, headers: [(name: String, value: String)],
                               target: PathNormalization.Target, service: HTTPRouteTable.Port, workload: WorkloadRef?,
                               _ exchange: Exchange) {
        // Until a backend answers, the request is reported against the routed Service.
        let routedService = (namespace: service.namespace, name: service.service)
        exchange.traffic = labels.routed(workload, routedService, proxy)
        let view = RequestView(method: head.method.rawValue, path: target.path, query: target.query, headers: headers)
        guard let selected = service.routes.select(view) else {
            proxy.stats.httpNoRoute.add(1, ordering: .relaxed)
            return reply(exchange, .notFound, flag: "NR", body: "no route for \(target.path)\n", close: false)
        }
        let routeNamespace = selected.route.namespace
        // For error messages only: not built per request.
        var routeName: String { "\(routeNamespace)/\(selected.route.name)" }
        // The rule's filters, then the chosen backend's.
        var requestModifiers: [HTTPRouteSpec.HeaderModifier] = []
        var responseModifiers: [HTTPRouteSpec.HeaderModifier] = []
        var redirect: HTTPRouteSpec.Redirect?
        var rewrite: HTTPRouteSpec.URLRewrite?
        var mirrors: [HTTPRouteSpec.Mirror] = []
        var fault: FaultInjectionSpec?
        var missingFault: String?
        func collect(_ filters: [HTTPRouteSpec.Filter]) {
            for f in filters {
                switch f {
                case .requestHeaderModifier(let m): requestModifiers.append(m)
                case .responseHeaderModifier(let m): responseModifiers.append(m)
                case .requestRedirect(let r): redirect = r
                case .urlRewrite(let r): rewrite = r
                case .requestMirror(let m): mirrors.append(m)
                case .faultInjection(let name):
                    if let spec = proxy.httpRoutes.fault(namespace: routeNamespace, name: name) { fault = spec } else { missingFault = name }
                }
            }
        }
        collect(selected.rule.filters)
        // The prefix a ReplacePrefixMatch replaces: the rule's one PathPrefix match.
        let matchedPrefix = selected.rule.matches.count == 1 && selected.rule.matches[0].path.type == .pathPrefix
            ? selected.rule.matches[0].path.value : nil
        if let missingFault {
            // Never forward a request unfaulted that the route says to fault.
            return reply(exchange, .internalServerError, flag: nil,
                         body: "route \(routeName) names FaultInjection \(routeNamespace)/\(missingFault), which does not exist\n", close: false)
        }
        if let redirect {
            // Answered here: no backend is involved (Gateway API: a redirect rule has no backendRefs to use).
            exchange.responseFilters = responseModifiers
            let location = RouteFilters.redirectLocation(redirect, requestHost: exchange.authority, requestPath: target.path,
                                                         query: target.query, matchedPrefix: matchedPrefix)
            return reply(exchange, HTTPResponseStatus(statusCode: redirect.statusCode), flag: nil, body: "", close: false,
                         headers: [("location", location)])
        }
        guard let backend = CompiledRoutes.pickBackend(selected.rule) else {
            return reply(exchange, .internalServerError, flag: nil, body: "route \(routeName) has no backend with a weight above 0\n", close: false)
        }
        collect(backend.filters)
        if let missingFault {
            return reply(exchange, .internalServerError, flag: nil,
                         body: "route \(routeName) names FaultInjection \(routeNamespace)/\(missingFault), which does not exist\n", close: false)
        }
        exchange.responseFilters = responseModifiers
        let backendNamespace = backend.backend.namespace?.rawValue ?? routeNamespace
        let backendKey = labels.key(namespace: backendNamespace, name: backend.backend.name)
        guard let vip = proxy.httpRoutes.virtualIP(key: backendKey) else {
            return reply(exchange, .internalServerError, flag: nil, body: "backend Service \(backendNamespace)/\(backend.backend.name) does not exist\n", close: false)
        }
        // Faults (Istio's semantics): an abort answers without a backend; a
        // delay holds the request before it is sent.
        if let abort = fault?.abort, RouteFilters.sampled(percent: abort.percentage) {
            switch abort.status {
            case .http(let code):
                return reply(exchange, HTTPResponseStatus(statusCode: code), flag: "FI", body: "fault filter abort\n", close: false)
            case .grpc(let status):
                return reply(exchange, .ok, flag: "FI", body: "", close: false, headers: [
                    ("content-type", "application/grpc"), ("grpc-status", String(Self.grpcCode(status))),
                    ("grpc-message", "fault filter abort")])
            }
        }
        var delay: TimeAmount?
        if let d = fault?.delay, RouteFilters.sampled(percent: d.percentage) {
            delay = .milliseconds(d.fixedDelay.milliseconds)
            exchange.flags.append("DI")
        }

        var out = Self.forwardable(head.headers)
        for m in requestModifiers { Self.apply(m, to: &out) }
        // What weftd adds is appended in one go: HTTPHeaders.add checks each name it is given byte
        // by byte, and these names are ours. The first try's number goes with them; a retry
        // replaces it (connected), and the client's (or a modifier's) own is never passed on.
        var added: [(String, String)] = []
        added.reserveCapacity(4)
        if out.contains(name: "x-weft-attempt-count") { out.remove(name: "x-weft-attempt-count") }
        added.append(("x-weft-attempt-count", "1"))
        let requestID: String
        if let given = out.first(name: "x-request-id") {
            requestID = given
        } else {
            requestID = requestIDs.generate()
            added.append(("x-request-id", requestID))
        }
        if !out.contains(name: "x-forwarded-proto") { added.append(("x-forwarded-proto", "http")) }
        // The source workload's address, appended as Envoy does with use_remote_address.
        if let workload, let address = proxy.httpRoutes.address(key: labels.key(workload)) {
            if out.contains(name: "x-forwarded-for") {
                let prior = out[canonicalForm: "x-forwarded-for"].joined(separator: ", ")
                out.replaceOrAdd(name: "x-forwarded-for", value: prior.isEmpty ? address : "\(prior), \(address)")
            } else {
                added.append(("x-forwarded-for", address))
            }
        }
        out.add(contentsOf: HTTPHeaders(added))
        var uri = target.requestTarget
        if let rewrite {
            if let host = rewrite.hostname { out.replaceOrAdd(name: "host", value: host) }
            if let modifier = rewrite.path {
                let path = RouteFilters.rewritePath(target.path, modifier, matchedPrefix: matchedPrefix)
                uri = target.query.map { "\(path)?\($0)" } ?? path
            }
        }
        exchange.requestID = requestID
        let backendService = (namespace: backendNamespace, name: backend.backend.name)
        exchange.traffic = labels.backend(exchange.traffic, backendService, proxy)

        if let tracing = proxy.telemetry.tracing {
            startSpan(tracing, "\(exchange.traffic[0].service.host):\(backend.backend.port)/*", kind: .client, headers: &out,
                      exchange, traffic: exchange.traffic[0], target: target)
        }
        // A header modifier may not bring Connection back: it is hop-by-hop.
        if !requestModifiers.isEmpty { out.remove(name: "connection") }
        Self.restoreUpgrade(&out, exchange)
        let forwarded = HTTPRequestHead(version: .http1_1, method: head.method, uri: uri, headers: out)
        exchange.forwarded = forwarded
        exchange.target = target
        exchange.backend = OriginalDestination(address: vip, port: backend.backend.port, socketFamily: vip.isIPv4 ? 2 : 10,
                                               pid: 0, cgroupID: 0, netnsCookie: 0)
        exchange.workload = workload
        exchange.requestHeaders = headers
        exchange.retry = RetryPolicy(selected.rule.retry)
        exchange.policy = proxy.trafficPolicies.service(backendKey)
        exchange.hashKey = Self.hashKey(policy: exchange.policy, headers: headers)
        exchange.mirrors = mirrors.compactMap { m -> OriginalDestination? in
            guard RouteFilters.sampled(percent: RouteFilters.percent(m.share)) else { return nil }
            let ns = m.backendRef.namespace?.rawValue ?? routeNamespace
            guard let mvip = proxy.httpRoutes.virtualIP(namespace: ns, service: m.backendRef.name) else { return nil }
            return OriginalDestination(address: mvip, port: m.backendRef.port, socketFamily: mvip.isIPv4 ? 2 : 10,
                                       pid: 0, cgroupID: 0, netnsCookie: 0)
        }
        if let ms = selected.rule.timeouts?.backendRequest?.milliseconds, ms > 0 { exchange.perTryTimeout = .milliseconds(ms) }
        guard let context else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if let ms = selected.rule.timeouts?.request?.milliseconds, ms > 0 {
            // The whole request, retries included (Gateway API's timeouts.request).
            exchange.requestTimer = context.eventLoop.scheduleTask(in: .milliseconds(ms)) {
                loopBound.value.timedOut(exchange)
            }
        }
        if exchange.requestEnded { sendMirrors(exchange) }
        if let delay {
            exchange.delayed = true
            context.eventLoop.scheduleTask(in: delay) {
                exchange.delayed = false
                loopBound.value.tryBackend(exchange)
            }
        } else {
            tryBackend(exchange)
        }
    }

    /// One attempt at the backend Service: an endpoint is chosen afresh
    /// (rotating), checked against its policies when it is on this node,
    /// connected, and sent the request as received so far.
    private func tryBackend(_ exchange: Exchange) {
        guard let context, current === exchange, !exchange.answered, let destination = exchange.backend,
              exchange.forwarded != nil else { return }
        exchange.attempt += 1
        let attempt = exchange.attempt
        if let policy = exchange.policy, !exchange.admitted {
            // The Service's circuit breaker: room now, a place in its queue, or 503 UO.
            exchange.attempt -= 1
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            let stats = self.proxy.stats
            let boundExchange = NIOLoopBound(exchange, eventLoop: loop)
            policy.admit(queue: true) { ok in
                loop.execute {
                    let router = loopBound.value
                    let exchange = boundExchange.value
                    guard router.current === exchange, !exchange.answered else {
                        if ok { policy.release() }
                        return
                    }
                    guard ok else {
                        stats.circuitBreakerOverflow.add(1, ordering: .relaxed)
                        return router.reply(exchange, .serviceUnavailable, flag: "UO",
                                            body: "upstream overflow: the Service's circuit breaker is open\n", close: false)
                    }
                    exchange.admitted = true
                    router.tryBackend(exchange)
                }
            }
            return
        }
        var hops: [Hop]
        let planned: Planned
        switch self.proxy.plan(destination, source: exchange.workload, hashKey: exchange.hashKey) {
        case .success(let p):
            planned = p
            hops = p.hops
        case .failure(let refusal):
            return reply(exchange, .serviceUnavailable, flag: "UH", body: "no healthy upstream: \(refusal)\n", close: false)
        }
        exchange.endpointCount = planned.endpointCount
        // Outlier detection's bookkeeping names endpoints; without a traffic policy nothing does.
        let tried = exchange.policy == nil ? [] : planned.hops.map(\.target.description)
        // A backend on this node: this proxy is its destination proxy and
        // checks its policies, with the request as it will be forwarded.
        let authorized = self.proxy.authorizedHops(hops, sourcePrincipal: planned.sourceIdentity, sourceIP: nil,
                                                   http: exchange.authorizationHTTP)
        if authorized.hops.isEmpty {
            return reply(exchange, .forbidden, flag: nil, body: RBAC.deniedBody, close: false)
        }
        hops = authorized.hops
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let stats = proxy.stats
        let proxy = self.proxy
        // This client's previous request to the same endpoint left its upstream open: reuse it.
        if !exchange.freshUpstream, let first = hops.first, let kept = takeIdle(Self.poolKey(first)) {
            return connected(exchange, attempt: attempt, upstream: kept.channel, hop: first, tried: [], reusing: kept)
        }
        let connecting: EventLoopFuture<(any Channel, Hop)>
        let h2 = hops.first.flatMap { self.h2Stream(for: $0, on: context.eventLoop) }
        if let (stream, first) = h2 {
            connecting = stream.map { ($0, first) }
        } else {
            let connectHeaders = hops.contains(where: \.isTunnel)
                ? proxy.connectHeaders(source: exchange.traffic[0].source, protocol: "http/1.1") : []
            connecting = proxy.connectFirst(hops[...], netns: netns, connectHeaders: connectHeaders, on: context.eventLoop)
        }
        connecting.whenComplete { result in
            let router = loopBound.value
            guard router.current === exchange, exchange.attempt == attempt, !exchange.answered else {
                if case .success(let (channel, _)) = result { channel.close(promise: nil) }
                return
            }
            switch result {
            case .failure:
                stats.upstreamConnectFailures.add(1, ordering: .relaxed)
                for failed in tried { exchange.policy?.record(.gatewayError, endpoint: failed, endpoints: exchange.endpointCount) }
                if router.mayRetry(exchange) { return router.retryLater(exchange) }
                router.reply(exchange, .serviceUnavailable, flag: router.retriedFlag(exchange, "UF"),
                             body: "upstream connect failure\n", close: false)
            case .success(let (upstream, hop)):
                exchange.upstreamIsH2Stream = h2 != nil
                router.connected(exchange, attempt: attempt, upstream: upstream, hop: hop, tried: tried, reusing: nil)
            }
        }
    }

    /// The upstream of one try is ready (new, or kept from this client's
    /// previous request): bookkeeping, then the request goes.
    private func connected(_ exchange: Exchange, attempt: Int, upstream: any Channel, hop: Hop, tried: [String], reusing: IdleUpstream?) {
        guard let forwarded = exchange.forwarded, let context else {
            upstream.close(promise: nil)
            return
        }
        let proxy = self.proxy
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        if reusing == nil, let pair = hop.identities {
            // Counted per connection opened, as for L4 (a kept upstream was counted when it opened).
            proxy.stats.recordPair(direction: .outbound, path: hop.isTunnel ? .hbone : .local, source: pair.source, destination: pair.destination)
        }
        if let policy = exchange.policy {
            // Outlier detection and least-request keep their books by endpoint.
            let endpoint = hop.target.description
            for failed in tried.prefix(while: { $0 != endpoint }) {
                policy.record(.gatewayError, endpoint: failed, endpoints: exchange.endpointCount)
            }
            policy.started(endpoint)
            exchange.inFlightAt = endpoint
            exchange.endpoint = endpoint
        }
        // This proxy may be the destination's too: its report, and its server span below.
        let reportsDestination = hop.isLocalMeshed && exchange.traffic.count == 1
        exchange.traffic = labels.connected(exchange.traffic, hop, reportsDestination: reportsDestination, proxy)
        exchange.upstreamTarget = hop.target
        var head = forwarded
        // `forwarded` carries 1: only a retry's head is copied to say otherwise.
        if attempt != 1 { head.headers.replaceOrAdd(name: "x-weft-attempt-count", value: String(attempt)) }
        if reportsDestination, let d = exchange.traffic.last {
            if let tracing = proxy.telemetry.tracing, let target = exchange.target {
                startSpan(tracing, "\(d.service.host):\(hop.target.port)/*", kind: .server, headers: &head.headers,
                          exchange, traffic: d, target: target)
            }
        }
        exchange.traceID = MeshTracing.traceID(traceparent: head.headers.first(name: "traceparent"))
        if let perTry = exchange.perTryTimeout {
            exchange.perTryTimer = upstream.eventLoop.scheduleTask(in: perTry) {
                loopBound.value.attemptTimedOut(exchange, attempt: attempt)
            }
        }
        attach(upstream, exchange: exchange, head: head, key: Self.poolKey(hop), reusing: reusing)
    }

    /// A retry is allowed: tries left, and the request is still whole in memory.
    private func mayRetry(_ exchange: Exchange) -> Bool {
        // Only the source proxy retries (it chose the backend); the destination's has one workload.
        exchange.backend != nil && exchange.attempt < exchange.retry.maxAttempts && exchange.replayable && !exchange.responseStarted
    }

    /// `flag`, or URX when retries were made and ran out.
    private func retriedFlag(_ exchange: Exchange, _ flag: String) -> String {
        exchange.attempt > 1 ? "URX" : flag
    }

    /// Drops the current attempt and tries again after the backoff.
    private func retryLater(_ exchange: Exchange) {
        guard let context else { return }
        exchange.leaveEndpoint()
        if let upstream = exchange.upstream {
            exchange.upstream = nil
            upstream.close(promise: nil)
        }
        exchange.perTryTimer?.cancel()
        exchange.perTryTimer = nil
        exchange.retries += 1
        proxy.stats.httpRetries.add(1, ordering: .relaxed)
        let wait = exchange.retry.backoff(retry: exchange.attempt)
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(wait)) {
            let router = loopBound.value
            guard router.current === exchange, !exchange.answered else { return }
            guard exchange.replayable else {
                // The body outgrew what is kept while waiting: it cannot be sent again.
                return router.reply(exchange, .serviceUnavailable, flag: "URX", body: "upstream request failed; body too large to retry\n", close: false)
            }
            // The request again, from its first body part.
            exchange.buffered = exchange.replayParts
            router.tryBackend(exchange)
        }
    }

    /// timeouts.backendRequest passed for one attempt before its response began.
    private func attemptTimedOut(_ exchange: Exchange, attempt: Int) {
        guard current === exchange, exchange.attempt == attempt, !exchange.answered, !exchange.responseStarted else { return }
        if let policy = exchange.policy, let endpoint = exchange.endpoint {
            policy.record(.gatewayError, endpoint: endpoint, endpoints: exchange.endpointCount)
        }
        if mayRetry(exchange) { return retryLater(exchange) }
        timedOut(exchange)
    }

    /// timeouts.request passed: 504 with UT when nothing was answered yet,
    /// otherwise the response so far is cut off.
    private func timedOut(_ exchange: Exchange) {
        guard current === exchange, !exchange.answered else { return }
        if exchange.responseStarted {
            exchange.upstream?.close(promise: nil)
            exchange.upstream = nil
            report(exchange, flags: "UT")
            context?.close(promise: nil)
            return
        }
        reply(exchange, .gatewayTimeout, flag: "UT", body: "upstream request timeout\n", close: false)
    }

    /// RequestMirror: a copy of the whole request to each mirror Service,
    /// its Host marked `-shadow`; the answer is read and dropped, and never
    /// delays or changes the client's.
    private func sendMirrors(_ exchange: Exchange) {
        guard !exchange.mirrors.isEmpty, exchange.replayable, exchange.upgrade == nil, let forwarded = exchange.forwarded,
              let context else { return }
        let targets = exchange.mirrors
        exchange.mirrors = []
        var head = forwarded
        // A mirror's copy is no try of the request.
        head.headers.remove(name: "x-weft-attempt-count")
        if let host = head.headers.first(name: "host") { head.headers.replaceOrAdd(name: "host", value: RouteFilters.shadowHost(host)) }
        let parts = exchange.replayParts
        let proxy = self.proxy
        let headers = proxy.connectHeaders(source: exchange.traffic[0].source, protocol: "http/1.1")
        for target in targets {
            guard case .success(let planned) = proxy.plan(target, source: exchange.workload) else { continue }
            let hops = proxy.authorizedHops(planned.hops, sourcePrincipal: planned.sourceIdentity, sourceIP: nil,
                                            http: exchange.authorizationHTTP).hops
            guard !hops.isEmpty else { continue }
            proxy.stats.httpMirrored.add(1, ordering: .relaxed)
            proxy.connectFirst(hops[...], netns: netns, connectHeaders: hops.contains(where: \.isTunnel) ? headers : [],
                               on: context.eventLoop).whenSuccess { (channel, _) in
                do {
                    try channel.pipeline.syncOperations.addHandlers([
                        HTTP1RequestEncoder(), ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
                        MirrorSink(),
                    ])
                } catch {
                    channel.close(promise: nil)
                    return
                }
                channel.setOption(.autoRead, value: true).whenComplete { _ in channel.read() }
                channel.write(NIOAny(HTTPClientRequestPart.head(head)), promise: nil)
                for part in parts where !part.isHead { channel.write(Self.clientPart(part), promise: nil) }
                channel.flush()
                channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
            }
        }
    }

    static func grpcCode(_ s: FaultInjectionSpec.GRPCStatus) -> Int {
        switch s {
        case .cancelled: return 1
        case .unknown: return 2
        case .invalidArgument: return 3
        case .deadlineExceeded: return 4
        case .notFound: return 5
        case .alreadyExists: return 6
        case .permissionDenied: return 7
        case .resourceExhausted: return 8
        case .failedPrecondition: return 9
        case .aborted: return 10
        case .outOfRange: return 11
        case .unimplemented: return 12
        case .internal: return 13
        case .unavailable: return 14
        case .dataLoss: return 15
        case .unauthenticated: return 16
        }
    }

    /// A span of this exchange, its context written into the headers the request is forwarded with.
    private func startSpan(_ tracing: MeshTracing, _ name: String, kind: MeshTracing.Kind, headers: inout HTTPHeaders,
                           _ exchange: Exchange, traffic: TrafficLabels, target: PathNormalization.Target) {
        var list = headers.map { (name: $0.name, value: $0.value) }
        let span = tracing.start(name, kind: kind, headers: &list)
        describe(span, exchange, traffic: traffic, target: target)
        exchange.spans.append(span)
        headers = HTTPHeaders(list.map { ($0.name, $0.value) })
    }

    /// OpenTelemetry HTTP attributes, plus the mesh's identities.
    private func describe(_ span: MeshTracing.RequestSpan, _ exchange: Exchange, traffic: TrafficLabels,
                          target: PathNormalization.Target) {
        span.setAttribute("http.request.method", exchange.method)
        span.setAttribute("url.path", target.path)
        if let q = target.query { span.setAttribute("url.query", q) }
        span.setAttribute("url.scheme", "http")
        span.setAttribute("network.protocol.version", "1.1")
        if let a = exchange.authority { span.setAttribute("server.address", a) }
        if let id = exchange.requestID { span.setAttribute("guid:x-request-id", id) }
        span.setAttribute("weft.reporter", traffic.reporter.rawValue)
        span.setAttribute("weft.source.workload", "\(traffic.source.namespace)/\(traffic.source.workload)")
        span.setAttribute("weft.source.principal", traffic.source.principal)
        span.setAttribute("weft.destination.service", traffic.service.host)
        span.setAttribute("weft.node", proxy.mesh.current.localNode)
    }

    /// Metrics, access log and spans of a finished exchange (once).
    private func report(_ exchange: Exchange, flags: String) {
        guard !exchange.reported else { return }
        exchange.reported = true
        let ms = Double((NIODeadline.now() - exchange.startedAt).nanoseconds) / 1e6
        let telemetry = proxy.telemetry
        for var t in exchange.traffic {
            if exchange.isGRPC { t.requestProtocol = "grpc" }
            telemetry.metrics.recordRequest(t, responseCode: exchange.responseCode, grpcStatus: exchange.grpcStatus ?? "",
                                            flags: flags, durationMilliseconds: ms,
                                            requestBytes: exchange.requestBytes, responseBytes: exchange.responseBytes,
                                            recent: &labels.series)
            if let log = telemetry.accessLog,
               log.shouldLog(namespace: t.reporter == .source ? t.source.namespace : t.destination.namespace) {
                log.append(AccessLogRecord(startTime: exchange.started, durationMilliseconds: ms, traffic: t,
                                           method: exchange.method, path: exchange.path, authority: exchange.authority,
                                           responseCode: exchange.responseCode, requestID: exchange.requestID,
                                           traceID: exchange.traceID, responseFlags: flags,
                                           bytesReceived: exchange.requestBytes, bytesSent: exchange.responseBytes,
                                           upstreamHost: exchange.upstreamTarget?.description))
            }
        }
        for span in exchange.spans.reversed() {
            span.end(status: exchange.responseCode == 0 ? nil : exchange.responseCode, flags: flags)
        }
        exchange.spans = []
    }

    private func attach(_ upstream: any Channel, exchange: Exchange, head: HTTPRequestHead, key: UpstreamKey, reusing: IdleUpstream? = nil) {
        guard let context else {
            upstream.close(promise: nil)
            return
        }
        // The relay calls this router directly: the upstream was dialled on, or kept by, its event loop.
        precondition(upstream.eventLoop === context.eventLoop, "upstream on another event loop")
        let relay: UpstreamResponseRelay
        if let reusing {
            relay = reusing.relay
            relay.binding = .exchange(self, exchange, attempt: exchange.attempt)
            exchange.kept = reusing
            exchange.uses = reusing.uses + 1
            exchange.reusedUpstream = true
        } else {
            relay = UpstreamResponseRelay()
            relay.binding = .exchange(self, exchange, attempt: exchange.attempt)
            do {
                if exchange.upstreamIsH2Stream {
                    // The stream's codec (H2Upstream.openStream) already speaks HTTP parts.
                    try upstream.pipeline.syncOperations.addHandler(relay)
                } else {
                let encoder = HTTP1RequestEncoder()
                try upstream.pipeline.syncOperations.addHandlers([
                    FlushCoalescer(last: true),
                    encoder,
                    ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes,
                                                              informationalResponseStrategy: .forward)),
                    relay,
                ])
                relay.encoder = encoder
                }
            } catch {
                upstream.close(promise: nil)
                return reply(exchange, .serviceUnavailable, flag: "UF", body: "upstream setup failed\n", close: false)
            }
            exchange.uses = 1
            exchange.reusedUpstream = false
            upstream.setOption(.autoRead, value: true).whenComplete { _ in upstream.read() }
        }
        exchange.relay = relay
        exchange.upstreamKey = key
        exchange.upstream = upstream
        var head = head
        if exchange.upstreamIsH2Stream, head.headers.first(name: "content-type")?.hasPrefix("application/grpc") == true {
            // gRPC servers require it; as a hop-by-hop header it did not come through.
            head.headers.replaceOrAdd(name: "te", value: "trailers")
        }
        upstream.write(NIOAny(HTTPClientRequestPart.head(head)), promise: nil)
        for part in exchange.buffered where !(part.isHead) {
            writeUpstream(part, upstream, exchange)
        }
        exchange.buffered = []
        flushUpstream(upstream)
    }

    /// A request's body part or end, to its upstream. The end of a request that is not chunked is
    /// not written to an HTTP/1 upstream: the encoder writes nothing for it and the response
    /// decoder watches heads only, so the write would only walk the pipeline, which costs about as
    /// much as writing the head (callgrind).
    private func writeUpstream(_ part: HTTPServerRequestPart, _ upstream: any Channel, _ exchange: Exchange) {
        if case .end = part, let encoder = exchange.relay?.encoder, !encoder.isChunked { return }
        upstream.write(Self.clientPart(part), promise: nil)
    }

    // MARK: responses

    fileprivate func upstreamPart(_ part: HTTPClientResponsePart, _ exchange: Exchange, attempt: Int) {
        guard let context, current === exchange, exchange.attempt == attempt, exchange.upstream != nil else { return }
        switch part {
        case .head(let head):
            let code = Int(head.status.code)
            if (100..<200).contains(code), code != 101 {
                // Informational (100 Continue, 103 Early Hints): relayed as it
                // comes, and the final response still to come.
                exchange.informationalPending = true
                let info = HTTPResponseHead(version: .http1_1, status: head.status, headers: Self.forwardable(head.headers))
                context.writeAndFlush(wrapOutboundOut(.head(info)), promise: nil)
                return
            }
            exchange.informationalPending = false
            if code == 101 {
                guard exchange.upgrade != nil else {
                    // A switch nobody asked for cannot be relayed as HTTP.
                    return reply(exchange, .badGateway, flag: "UPE", body: "the backend switched protocols unasked\n", close: true)
                }
                exchange.switching = true
                exchange.responseStarted = true
                exchange.perTryTimer?.cancel()
                exchange.requestTimer?.cancel()
                var headers = Self.forwardable(head.headers)
                Self.restoreUpgrade(&headers, exchange, value: head.headers.first(name: "upgrade"))
                for m in exchange.responseFilters { Self.apply(m, to: &headers) }
                let out = HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers)
                exchange.responseCode = 101
                exchange.responseBytes = HTTP1Wire.size(of: out)
                context.writeAndFlush(wrapOutboundOut(.head(out)), promise: nil)
                // The relay takes over once the response decoder has let go of the 101 (its end).
                let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
                context.eventLoop.execute { loopBound.value.switchToRelay(exchange) }
                return
            }
            if let policy = exchange.policy, let endpoint = exchange.endpoint {
                policy.record(code >= 500 ? .serverError(code) : .success, endpoint: endpoint, endpoints: exchange.endpointCount)
            }
            if exchange.retry.codes.contains(code), mayRetry(exchange) {
                // A status worth another try, and one left: this answer is dropped.
                return retryLater(exchange)
            }
            exchange.responseStarted = true
            exchange.upstreamKeepAlive = head.isKeepAlive && head.version == .http1_1
            exchange.perTryTimer?.cancel()
            exchange.perTryTimer = nil
            if exchange.retries > 0, exchange.retry.codes.contains(code) { exchange.flags.append("URX") }
            var headers = Self.forwardable(head.headers)
            for m in exchange.responseFilters { Self.apply(m, to: &headers) }
            if !exchange.keepAlive, !downstreamIsStream { headers.replaceOrAdd(name: "connection", value: "close") }
            if !exchange.flags.isEmpty { headers.replaceOrAdd(name: "x-weft-response-flags", value: exchange.flags.joined(separator: ",")) }
            if let status = headers.first(name: "grpc-status") { exchange.grpcStatus = status }
            if downstreamIsStream, headers.contains(name: "grpc-status") {
                // gRPC's Trailers-Only answer (one HEADERS frame that ends the stream): it
                // came as a head and an empty end, which on HTTP/2 would be HEADERS then an
                // empty DATA frame, and a gRPC client wants its status in the frame that
                // ends the stream. So: the content type now, the rest as trailers.
                var initial = HTTPHeaders()
                var trailers = HTTPHeaders()
                for (name, value) in headers {
                    if name.equalsIgnoringASCIICase("content-type") || name.lowercased().hasPrefix("x-weft-") {
                        initial.add(name: name, value: value)
                    } else if !name.equalsIgnoringASCIICase("content-length") {
                        trailers.add(name: name, value: value)
                    }
                }
                headers = initial
                exchange.heldTrailers = trailers
            }
            // Made once, from the parts: assigning into `head` (whose storage the
            // decoded part still shares) would copy it first.
            let out = HTTPResponseHead(version: .http1_1, status: head.status, headers: headers)
            exchange.responseCode = Int(head.status.code)
            exchange.responseBytes = HTTP1Wire.size(of: out)
            context.write(wrapOutboundOut(.head(out)), promise: nil)
        case .body(let buffer):
            guard !exchange.switching else { return }
            exchange.responseBytes += buffer.readableBytes
            // Flushed at the end of the upstream's read (onReadComplete) or with the end.
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        case .end(let trailers):
            if exchange.informationalPending || exchange.switching {
                exchange.informationalPending = false
                return
            }
            var trailers = trailers
            if let held = exchange.heldTrailers {
                exchange.heldTrailers = nil
                var merged = held
                if let trailers { merged.add(contentsOf: trailers) }
                trailers = merged
            }
            if let t = trailers { exchange.grpcStatus = t.first(name: "grpc-status") ?? exchange.grpcStatus }
            // The upstream is kept (or let go) before the client's end goes out: on an
            // HTTP/2 client's stream that write ends the stream, and this router with it.
            exchange.leaveEndpoint()
            if let upstream = exchange.upstream {
                exchange.upstream = nil
                // Done with it unless kept: ended gently (our side first), so a stream is not reset.
                if !park(upstream, exchange) { UpstreamCache.endGently(upstream) }
            }
            report(exchange, flags: exchange.reportedFlags)
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            finish(exchange)
        }
    }

    /// The upstream's read ended: what it brought goes to the client in one flush.
    fileprivate func upstreamReadComplete() {
        context?.flush()
    }

    fileprivate func upstreamClosed(_ exchange: Exchange, attempt: Int) {
        guard current === exchange, exchange.attempt == attempt, exchange.upstream != nil else { return }
        if !exchange.responseStarted, exchange.reusedUpstream, exchange.replayable {
            // A kept connection the backend had closed meanwhile (its idle
            // timeout): the same try again on a new connection.
            exchange.upstream = nil
            exchange.leaveEndpoint()
            exchange.freshUpstream = true
            exchange.buffered = exchange.replayParts
            if exchange.backend != nil {
                exchange.attempt -= 1
                return tryBackend(exchange)
            }
            if let target = exchange.destinationTarget { return connectAtDestination(target, exchange) }
        }
        if !exchange.responseStarted {
            if let policy = exchange.policy, let endpoint = exchange.endpoint {
                policy.record(.gatewayError, endpoint: endpoint, endpoints: exchange.endpointCount)
            }
            // Reset or closed before the response began: another try when
            // allowed, else 503 as Envoy answers it (UC).
            if mayRetry(exchange) { return retryLater(exchange) }
            exchange.upstream = nil
            return reply(exchange, .serviceUnavailable, flag: retriedFlag(exchange, "UC"),
                         body: "upstream connect error or disconnect/reset before headers\n", close: false)
        }
        // Closed in the middle of a response: the client cannot be told more
        // than that, so its connection goes too (Envoy's UC).
        exchange.upstream = nil
        exchange.leaveEndpoint()
        report(exchange, flags: "UC")
        context?.close(promise: nil)
    }

    private func reply(_ exchange: Exchange, _ status: HTTPResponseStatus, flag: String?, body: String, close: Bool,
                       headers extra: [(String, String)] = []) {
        guard let context else { return }
        exchange.discarding = true
        exchange.buffered = []
        exchange.leaveEndpoint()
        if let upstream = exchange.upstream {
            exchange.upstream = nil
            upstream.close(promise: nil)
        }
        var headers = HTTPHeaders([("content-type", "text/plain"), ("content-length", String(body.utf8.count))])
        for (name, value) in extra { headers.replaceOrAdd(name: name, value: value) }
        for m in exchange.responseFilters { Self.apply(m, to: &headers) }
        let flag = ([flag].compactMap { $0 } + exchange.flags).joined(separator: ",")
        if !flag.isEmpty { headers.add(name: "x-weft-response-flags", value: flag) }
        // Answered before a 100 Continue: the client may never send the body it
        // held back, so the connection cannot carry another request (RFC 9110 10.1.1).
        let heldBody = exchange.expectsContinue && !exchange.requestEnded
        if close || !exchange.keepAlive || heldBody {
            // HTTP/2 has no Connection header: the stream ends with the answer.
            if !downstreamIsStream { headers.add(name: "connection", value: "close") }
            exchange.keepAlive = false
        }
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        exchange.responseCode = Int(status.code)
        exchange.responseBytes = HTTP1Wire.size(of: head) + body.utf8.count
        report(exchange, flags: flag.isEmpty ? "-" : flag)
        finish(exchange)
    }

    /// The response is out: next request, or close.
    private func finish(_ exchange: Exchange) {
        guard let context, current === exchange else { return }
        exchange.answered = true
        exchange.requestTimer?.cancel()
        exchange.perTryTimer?.cancel()
        Self.releaseAdmission(exchange)
        if !exchange.keepAlive {
            // End our side cleanly (FIN, or END_STREAM on an HBONE stream)
            // rather than close: a reset could overtake the response still
            // on its way through a relay.
            closeOutput(context)
            return
        }
        if !exchange.requestEnded {
            // Answered before the client finished sending: read the rest and drop it.
            exchange.discarding = true
            return
        }
        current = nil
        startNextIfIdle()
        if current == nil, inputClosed {
            closeOutput(context)
            return
        }
        if readPending {
            readPending = false
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let current, !current.reported {
            report(current, flags: "DC")
        }
        if let current {
            Self.releaseAdmission(current)
            current.leaveEndpoint()
        }
        closeIdle()
        current?.upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    /// The client ended its side (an HBONE stream's END_STREAM, a TCP FIN):
    /// once the exchange in flight is answered, end ours the same way, so
    /// that a stream finishes cleanly instead of being reset.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            inputClosed = true
            if current == nil { closeOutput(context) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func closeOutput(_ context: ChannelHandlerContext) {
        let channel = context.channel
        // An HTTP/2 stream's END_STREAM went with the response's end; it closes
        // once the client's comes (the deadline is for a client that never sends it).
        if !downstreamIsStream {
            context.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        }
        channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request NIO could not parse: 400 when nothing was answered yet.
        if error is HTTPParserError, current == nil {
            let e = Exchange(keepAlive: false)
            current = e
            responseEncoder?.answersHead = false
            reply(e, .badRequest, flag: nil, body: "malformed HTTP request\n", close: true)
            return
        }
        context.close(promise: nil)
    }

    // MARK: upstream reuse

    static func poolKey(_ hop: Hop) -> UpstreamKey {
        switch hop {
        case .direct(let target, _, _): return UpstreamKey(address: target.address, port: target.port, tunnelIdentity: nil)
        case .tunnel(let target, let source, _):
            return UpstreamKey(address: target.address, port: target.port, tunnelIdentity: source.identity)
        }
    }

    private func takeIdle(_ key: UpstreamKey) -> IdleUpstream? {
        upstreams.take(key)
    }

    /// Keeps `upstream` for the next request when both ends allow it: the
    /// request was sent whole, the backend answered HTTP/1.1 keep-alive, the
    /// method was not HEAD (whose answer has no body to frame the next one
    /// by), and the DestinationRule's maxRequestsPerConnection is not reached.
    /// An HTTP/2 stream is never kept: each request has its own.
    private func park(_ upstream: any Channel, _ exchange: Exchange) -> Bool {
        guard let relay = exchange.relay, let key = exchange.upstreamKey, !exchange.upstreamIsH2Stream, exchange.requestEnded,
              exchange.upstreamKeepAlive, exchange.keepAlive || downstreamIsStream, exchange.method != "HEAD",
              upstream.isActive, context != nil else { return false }
        if let limit = exchange.policy?.policy.connectionPool?.maxRequestsPerConnection, exchange.uses >= limit { return false }
        let kept: IdleUpstream
        if let reused = exchange.kept, reused.channel === upstream, reused.relay === relay {
            reused.uses = exchange.uses
            kept = reused
        } else {
            kept = IdleUpstream(channel: upstream, relay: relay, uses: exchange.uses)
        }
        exchange.kept = nil
        return upstreams.park(kept, key: key)
    }

    private func closeIdle() {
        if ownsUpstreams { upstreams.closeAll() }
    }

    // MARK: helpers

    /// Gives back the circuit breaker's room this exchange held (once).
    private static func releaseAdmission(_ exchange: Exchange) {
        if exchange.admitted {
            exchange.admitted = false
            exchange.policy?.release()
        }
    }

    /// The consistent-hash key of a request for a Service whose
    /// DestinationRule hashes on a header or a cookie.
    static func hashKey(policy: ServiceTraffic?, headers: [(name: String, value: String)]) -> String? {
        guard let hash = policy?.policy.loadBalancer?.consistentHash else { return nil }
        switch hash {
        case .header(let name):
            return headers.first { $0.name.lowercased() == name }?.value
        case .cookie(let name):
            for h in headers where h.name.lowercased() == "cookie" {
                for pair in h.value.split(separator: ";") {
                    let kv = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                    if kv.count == 2, kv[0] == name { return kv[1] }
                }
            }
            return nil
        }
    }

    /// Request bodies up to this size are kept for retries and mirrors
    /// (Envoy's default per-request buffer limit is 64 KiB as well).
    static let maxReplayBytes = 64 * 1024

    /// A new stream to `hop`'s workload over the HTTP/2 connection this
    /// client shares (opened when there is none), when the workload declares
    /// the port `http2` or `grpc`; nil when it speaks HTTP/1.1 (or is across
    /// nodes: the HBONE stream carries HTTP/1.1, its destination's proxy speaks
    /// HTTP/2 to the workload).
    private func h2Stream(for hop: Hop, on loop: any EventLoop) -> (stream: EventLoopFuture<any Channel>, hop: Hop)? {
        guard case .direct(let target, let entry?, _) = hop, proxy.httpRoutes.speaksHTTP2(entry.ref, port: target.port) else {
            return nil
        }
        let proxy = self.proxy, netns = self.netns
        let connection = upstreams.h2Connection(Self.poolKey(hop), on: loop) {
            proxy.connectUpstream(to: target, netns: netns, on: loop)
        }
        return (connection.flatMap { $0.openStream() }, hop)
    }

    /// Puts back the upgrade that `forwardable` removed (hop-by-hop), on a
    /// WebSocket upgrade request and on its 101.
    private static func restoreUpgrade(_ headers: inout HTTPHeaders, _ exchange: Exchange, value: String? = nil) {
        guard let upgrade = value ?? exchange.upgrade else { return }
        headers.replaceOrAdd(name: "connection", value: "upgrade")
        headers.replaceOrAdd(name: "upgrade", value: upgrade)
    }

    /// The backend switched protocols (WebSocket): the client's connection
    /// and the upstream become one byte relay, HTTP handlers removed from
    /// both. Bytes either side sent after the upgrade, still in a decoder,
    /// are handed on to the relay as the decoders leave.
    private func switchToRelay(_ exchange: Exchange) {
        guard let context, current === exchange, let upstream = exchange.upstream else { return }
        report(exchange, flags: exchange.reportedFlags)
        exchange.leaveEndpoint()
        Self.releaseAdmission(exchange)
        exchange.upstream = nil
        exchange.answered = true
        current = nil
        let channel = context.channel
        let (down, up) = GlueHandler.matchedPair()
        do {
            let upOps = upstream.pipeline.syncOperations
            try upOps.addHandler(up)
            try upOps.removeHandler(upOps.handler(type: UpstreamResponseRelay.self), promise: nil)
            try upOps.removeHandler(upOps.handler(type: HTTP1RequestEncoder.self), promise: nil)
            // What a decoder hands on as it leaves is written to the other side
            // but not flushed (no read completes): flushed once it has left.
            let upDecoderGone = upstream.eventLoop.makePromise(of: Void.self)
            upDecoderGone.futureResult.whenComplete { _ in channel.flush() }
            try upOps.removeHandler(upOps.handler(type: ByteToMessageHandler<HTTPResponseDecoder>.self), promise: upDecoderGone)
            let ops = context.pipeline.syncOperations
            try ops.addHandler(down)
            try ops.removeHandler(ops.handler(type: HTTP1ResponseEncoder.self), promise: nil)
            let decoderGone = channel.eventLoop.makePromise(of: Void.self)
            decoderGone.futureResult.whenComplete { _ in upstream.flush() }
            try ops.removeHandler(ops.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: decoderGone)
            ops.removeHandler(context: context, promise: nil)
        } catch {
            upstream.close(promise: nil)
            channel.close(promise: nil)
            return
        }
        proxy.stats.httpUpgrades.add(1, ordering: .relaxed)
        channel.read()
        upstream.read()
    }

    /// `headers` without the hop-by-hop ones and those Connection names; the
    /// same storage when there are none (nothing is copied). Otherwise (an
    /// HTTP/1.1 upstream's `Connection: keep-alive` on every answer) the rest
    /// are copied once, not once per name removed.
    static func forwardable(_ headers: HTTPHeaders) -> HTTPHeaders {
        var dropped: [String] = []
        HeaderValidation.forEachNotForwarded(headers) { dropped.append($0) }
        guard !dropped.isEmpty else { return headers }
        var kept: [(String, String)] = []
        kept.reserveCapacity(headers.count)
        for (name, value) in headers where !dropped.contains(where: { name.equalsIgnoringASCIICase($0) }) {
            kept.append((name, value))
        }
        return HTTPHeaders(kept)
    }

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

}

/// The labels a client connection's requests report: its source (one
/// workload), and the last Service and destination workload, which a
/// connection's requests nearly always share. Reusing the same label sets
/// also lets the metrics' label-set lookup compare them by their storage.
struct LabelCache {
    /// What a step of a request's labelling changed, and the label sets it
    /// made: the next request that brings the same sets (the same boxes) and
    /// the same change gets the same sets back, with no string copied and no
    /// box or list made.
    private struct Step<Change: Equatable> {
        private var input: [TrafficLabels] = []
        private var change: Change?
        private var output: [TrafficLabels] = []

        func made(from input: [TrafficLabels], by change: Change) -> [TrafficLabels]? {
            guard self.change == change, self.input.count == input.count,
                  zip(self.input, input).allSatisfy({ $0.sharesStorage(with: $1) }) else { return nil }
            return output
        }

        mutating func keep(_ output: [TrafficLabels], from input: [TrafficLabels], by change: Change) -> [TrafficLabels] {
            self.input = input
            self.change = change
            self.output = output
            return output
        }
    }

    private struct ServiceName: Equatable {
        var namespace: String
        var name: String
    }

    private struct Connection: Equatable {
        var destination: WorkloadRef?
        var security: SecurityPolicy
        var reportsDestination: Bool
    }

    private var routedStep = Step<ServiceName>()
    private var backendStep = Step<ServiceName>()
    private var connectedStep = Step<Connection>()

    private var sourceLabels: PeerLabels?
    private var lastService: (namespace: String, name: String, labels: ServiceLabels)?
    private var lastDestination: (ref: WorkloadRef, labels: PeerLabels)?
    /// The metric series these labels reported to lately.
    var series = MeshMetrics.RecentSeries()
    /// `namespace/name` lookup keys of the last backend and source workload, made once.
    private var lastKey: (namespace: String, name: String, key: String)?
    private var workloadKey: (ref: WorkloadRef, key: String)?

    mutating func key(namespace: String, name: String) -> String {
        if let last = lastKey, last.namespace == namespace, last.name == name { return last.key }
        let made = "\(namespace)/\(name)"
        lastKey = (namespace, name, made)
        return made
    }

    mutating func key(_ workload: WorkloadRef) -> String {
        if let held = workloadKey, held.ref == workload { return held.key }
        let made = "\(workload.namespace.rawValue)/\(workload.name.rawValue)"
        workloadKey = (workload, made)
        return made
    }

    mutating func source(_ workload: WorkloadRef?, _ proxy: NodeProxy) -> PeerLabels {
        if let sourceLabels { return sourceLabels }
        let made = proxy.sourceLabels(workload)
        sourceLabels = made
        return made
    }

    mutating func service(_ service: (namespace: String, name: String), _ proxy: NodeProxy) -> ServiceLabels {
        if let last = lastService, last.namespace == service.namespace, last.name == service.name { return last.labels }
        let made = proxy.serviceLabels(service)
        lastService = (service.namespace, service.name, made)
        return made
    }

    /// A request at its source, reported against the Service it was routed
    /// on until a backend answers.
    mutating func routed(_ workload: WorkloadRef?, _ service: (namespace: String, name: String),
                         _ proxy: NodeProxy) -> [TrafficLabels] {
        let change = ServiceName(namespace: service.namespace, name: service.name)
        if let made = routedStep.made(from: [], by: change) { return made }
        let traffic = TrafficLabels(reporter: .source, source: source(workload, proxy), destination: .unknown,
                                    service: self.service(service, proxy), requestProtocol: "http", security: .none)
        return routedStep.keep([traffic], from: [], by: change)
    }

    /// The same sets, the first now reported against the backend's Service.
    mutating func backend(_ traffic: [TrafficLabels], _ service: (namespace: String, name: String),
                          _ proxy: NodeProxy) -> [TrafficLabels] {
        guard !traffic.isEmpty else { return traffic }
        let change = ServiceName(namespace: service.namespace, name: service.name)
        if let made = backendStep.made(from: traffic, by: change) { return made }
        var changed = traffic
        changed[0].service = self.service(service, proxy)
        return backendStep.keep(changed, from: traffic, by: change)
    }

    /// The first set now names the hop's destination workload and whether
    /// the hop is mutual TLS; with `reportsDestination`, this proxy reports
    /// as the destination's too, in a second set.
    mutating func connected(_ traffic: [TrafficLabels], _ hop: Hop, reportsDestination: Bool,
                            _ proxy: NodeProxy) -> [TrafficLabels] {
        guard !traffic.isEmpty else { return traffic }
        let security: SecurityPolicy = hop.identities != nil ? .mutualTLS : .none
        let change = Connection(destination: hop.destinationEntry?.ref, security: security,
                                reportsDestination: reportsDestination)
        if let made = connectedStep.made(from: traffic, by: change) { return made }
        var changed = traffic
        changed[0].destination = destination(hop, proxy)
        changed[0].security = security
        if reportsDestination { changed.append(changed[0].reported(by: .destination)) }
        return connectedStep.keep(changed, from: traffic, by: change)
    }

    mutating func destination(_ hop: Hop, _ proxy: NodeProxy) -> PeerLabels {
        guard let entry = hop.destinationEntry else { return .unknown }
        if let last = lastDestination, last.ref == entry.ref { return last.labels }
        let made = proxy.peerLabels(entry)
        lastDestination = (entry.ref, made)
        return made
    }
}

extension HTTPServerRequestPart {
    var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}

/// A mirror's answer: read and dropped; the connection ends with it.
final class MirrorSink: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// The upstream side of one request: response parts go to the router.
final class UpstreamResponseRelay: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    /// Where the connection's responses go: the exchange of the request it
    /// carries (rebound for each request when the connection is reused), or
    /// the cache that keeps it idle. A stored value rather than closures, so
    /// that rebinding per request allocates nothing. Everything here runs on
    /// the event loop of the router and the cache, which dialled the upstream.
    enum Binding {
        case exchange(HTTPRouter, HTTPRouter.Exchange, attempt: Int)
        case idle(UpstreamCache, UpstreamKey, IdleUpstream)
        case none
    }
    var binding: Binding = .none
    /// The encoder of an HTTP/1 upstream (nil: an HTTP/2 stream's codec speaks the parts).
    var encoder: HTTP1RequestEncoder?

    init() {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch binding {
        case .exchange(let router, let exchange, let attempt):
            router.upstreamPart(unwrapInboundIn(data), exchange, attempt: attempt)
        case .idle:
            // Nothing may come from an idle backend: whatever does ends the connection.
            context.close(promise: nil)
        case .none:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .exchange(let router, _, _) = binding { router.upstreamReadComplete() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Unbound first: the router, exchange and cache entry are not held past the connection.
        let was = binding
        binding = .none
        switch was {
        case .exchange(let router, let exchange, let attempt): router.upstreamClosed(exchange, attempt: attempt)
        case .idle(let cache, let key, let kept): cache.forget(kept, key: key)
        case .none: break
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
