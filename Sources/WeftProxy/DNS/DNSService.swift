import CWeftShim
import Glibc
import Logging
import NIOCore
import NIOPosix
import Synchronization
import WeftCore

public struct DNSSettings: Sendable, Hashable {
    /// weftd's DNS server on loopback in every network namespace with meshed
    /// workloads (UDP; TCP arrives through the ordinary TCP capture).
    public var port: UInt16
    public var clusterDomain: String
    /// The node's resolvers, asked for every name that is not the mesh's.
    public var upstreams: [SocketAddress]
    public var timeout: TimeAmount

    public init(port: UInt16 = 15053, clusterDomain: String = "cluster.local", upstreams: [SocketAddress],
                timeout: TimeAmount = .seconds(2)) {
        self.port = port
        self.clusterDomain = clusterDomain
        self.upstreams = upstreams
        self.timeout = timeout
    }
}

/// Counters of the DNS server, read by the admin API.
public final class DNSStats: Sendable {
    public let queries = Atomic<Int>(0)
    public let answered = Atomic<Int>(0)
    public let nxDomain = Atomic<Int>(0)
    public let forwarded = Atomic<Int>(0)
    public let servFail = Atomic<Int>(0)
    public let malformed = Atomic<Int>(0)
    public let truncated = Atomic<Int>(0)

    public struct Snapshot: Sendable, Codable {
        public var queries, answered, nxDomain, forwarded, servFail, malformed, truncated: Int
    }

    public func snapshot() -> Snapshot {
        Snapshot(queries: queries.load(ordering: .relaxed), answered: answered.load(ordering: .relaxed),
                 nxDomain: nxDomain.load(ordering: .relaxed), forwarded: forwarded.load(ordering: .relaxed),
                 servFail: servFail.load(ordering: .relaxed), malformed: malformed.load(ordering: .relaxed),
                 truncated: truncated.load(ordering: .relaxed))
    }
}

/// Answers the mesh's names from the node snapshot and forwards the rest to
/// the node's resolvers, passing their answers back unchanged (but for the
/// query id). A malformed packet is dropped and counted; an upstream that
/// does not answer in time gives SERVFAIL.
public final class DNSService: Sendable {
    public enum Transport: Sendable { case udp, tcp }

    let settings: DNSSettings
    public let stats = DNSStats()
    private let table: Mutex<DNSTable>
    private let loop: any EventLoop
    private let mark: UInt32
    private let logger: Logger
    private struct Pending {
        var originalID: UInt16
        var upstream: SocketAddress
        var respond: @Sendable ([UInt8]) -> Void
        var timer: Scheduled<Void>
    }
    private let pending = Mutex<[UInt16: Pending]>([:])
    private let upstreamChannels = Mutex<[Int32: EventLoopFuture<any Channel>]>([:])

    init(settings: DNSSettings, loop: any EventLoop, mark: UInt32, logger: Logger) {
        self.settings = settings
        self.table = Mutex(DNSTable(clusterDomain: settings.clusterDomain))
        self.loop = loop
        self.mark = mark
        self.logger = logger
    }

    public func replace(_ snapshot: NodeSnapshot) {
        let fresh = DNSTable(snapshot: snapshot, clusterDomain: settings.clusterDomain)
        table.withLock { $0 = fresh }
    }

    /// One query from a workload; `respond` is called at most once (never for
    /// a dropped packet).
    func handle(_ bytes: [UInt8], transport: Transport, respond: @escaping @Sendable ([UInt8]) -> Void) {
        stats.queries.add(1, ordering: .relaxed)
        let query: DNSQuery
        do {
            query = try DNSQuery.parse(bytes)
        } catch {
            stats.malformed.add(1, ordering: .relaxed)
            logger.debug("dropped a malformed DNS packet", metadata: ["error": "\(error)"])
            return
        }
        let limit = transport == .udp ? DNSResponse.udpLimit(query) : 65535
        guard query.opcode == 0 else {
            respond(DNSResponse.build(query, rcode: .notImp, authoritative: false).bytes)
            return
        }
        let answer = query.qclass == 1 ? table.withLock { $0.answer(name: query.name, type: query.type) } : .forward
        switch answer {
        case .records(let records, let additional):
            stats.answered.add(1, ordering: .relaxed)
            let r = DNSResponse.build(query, rcode: .noError, authoritative: true, answers: records, additional: additional, limit: limit)
            if r.truncated { stats.truncated.add(1, ordering: .relaxed) }
            respond(r.bytes)
        case .noData:
            stats.answered.add(1, ordering: .relaxed)
            respond(DNSResponse.build(query, rcode: .noError, authoritative: true).bytes)
        case .nxDomain:
            stats.nxDomain.add(1, ordering: .relaxed)
            respond(DNSResponse.build(query, rcode: .nxDomain, authoritative: true).bytes)
        case .forward:
            forward(bytes, query: query, transport: transport, respond: respond)
        }
    }

    private func servFail(_ query: DNSQuery, _ respond: @Sendable ([UInt8]) -> Void) {
        stats.servFail.add(1, ordering: .relaxed)
        respond(DNSResponse.build(query, rcode: .servFail, authoritative: false).bytes)
    }

    // MARK: forwarding

    private func forward(_ bytes: [UInt8], query: DNSQuery, transport: Transport, respond: @escaping @Sendable ([UInt8]) -> Void) {
        guard let upstream = settings.upstreams.first else {
            servFail(query, respond)
            return
        }
        stats.forwarded.add(1, ordering: .relaxed)
        switch transport {
        case .udp: forwardUDP(bytes, query: query, upstream: upstream, respond: respond)
        case .tcp: forwardTCP(bytes, query: query, upstream: upstream, respond: respond)
        }
    }

    private func forwardUDP(_ bytes: [UInt8], query: DNSQuery, upstream: SocketAddress, respond: @escaping @Sendable ([UInt8]) -> Void) {
        // A fresh id per forwarded query: two workloads' queries with the same
        // id must not be confused, nor a reply guessed by a third party.
        let chosen: UInt16? = pending.withLock { p in
            for _ in 0..<64 {
                let candidate = UInt16.random(in: 0...UInt16.max)
                guard p[candidate] == nil else { continue }
                let timer = loop.scheduleTask(in: settings.timeout) { [self] in
                    if let expired = pending.withLock({ $0.removeValue(forKey: candidate) }) {
                        logger.info("upstream resolver did not answer in time; SERVFAIL", metadata: ["upstream": "\(upstream)"])
                        servFail(query, expired.respond)
                    }
                }
                p[candidate] = Pending(originalID: query.id, upstream: upstream, respond: respond, timer: timer)
                return candidate
            }
            return nil
        }
        guard let id = chosen else {
            servFail(query, respond)
            return
        }
        var rewritten = bytes
        rewritten[0] = UInt8(id >> 8)
        rewritten[1] = UInt8(id & 0xFF)
        let out = rewritten
        let sendID = id
        upstreamChannel(for: upstream).whenComplete { [self] result in
            switch result {
            case .success(let channel):
                var buffer = channel.allocator.buffer(capacity: out.count)
                buffer.writeBytes(out)
                channel.writeAndFlush(AddressedEnvelope(remoteAddress: upstream, data: buffer)).whenFailure { [self] error in
                    if let p = pending.withLock({ $0.removeValue(forKey: sendID) }) {
                        p.timer.cancel()
                        logger.info("cannot send to the upstream resolver; SERVFAIL", metadata: ["upstream": "\(upstream)", "error": "\(error)"])
                        servFail(query, p.respond)
                    }
                }
            case .failure(let error):
                if let p = pending.withLock({ $0.removeValue(forKey: sendID) }) {
                    p.timer.cancel()
                    logger.warning("no socket for the upstream resolver; SERVFAIL", metadata: ["error": "\(error)"])
                    servFail(query, p.respond)
                }
            }
        }
    }

    /// A reply from an upstream: only from the resolver the query went to,
    /// only for an id we are waiting for.
    fileprivate func upstreamReply(_ bytes: [UInt8], from sender: SocketAddress) {
        guard bytes.count >= 12 else { return }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        guard let p = pending.withLock({ p -> Pending? in
            guard let entry = p[id], entry.upstream == sender else { return nil }
            return p.removeValue(forKey: id)
        }) else { return }
        p.timer.cancel()
        var out = bytes
        out[0] = UInt8(p.originalID >> 8)
        out[1] = UInt8(p.originalID & 0xFF)
        p.respond(out)
    }

    private func upstreamChannel(for upstream: SocketAddress) -> EventLoopFuture<any Channel> {
        let family = upstream.protocol.rawValue
        return upstreamChannels.withLock { channels in
            if let c = channels[family] { return c }
            let made = DatagramBootstrap(group: loop)
                .channelOption(.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_MARK)),
                               value: SocketOptionValue(Int32(bitPattern: mark)))
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UpstreamReplyHandler(service: self))
                    }
                }
                .bind(host: family == AF_INET6 ? "::" : "0.0.0.0", port: 0)
            channels[family] = made
            return made
        }
    }

    private func forwardTCP(_ bytes: [UInt8], query: DNSQuery, upstream: SocketAddress, respond: @escaping @Sendable ([UInt8]) -> Void) {
        let done = loop.makePromise(of: [UInt8].self)
        let timeout = settings.timeout
        ClientBootstrap(group: loop)
            .channelOption(.socket(SocketOptionLevel(SOL_SOCKET), SocketOptionName(SO_MARK)),
                           value: SocketOptionValue(Int32(bitPattern: mark)))
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(DNSLengthFrameDecoder()), TCPUpstreamAnswer(done: done),
                    ])
                }
            }
            .connect(to: upstream)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    var buffer = channel.allocator.buffer(capacity: bytes.count + 2)
                    buffer.writeInteger(UInt16(bytes.count))
                    buffer.writeBytes(bytes)
                    channel.writeAndFlush(buffer, promise: nil)
                    let timer = channel.eventLoop.scheduleTask(in: timeout) { done.fail(ChannelError.connectTimeout(timeout)) }
                    done.futureResult.whenComplete { _ in
                        timer.cancel()
                        channel.close(promise: nil)
                    }
                case .failure(let error):
                    done.fail(error)
                }
            }
        done.futureResult.whenComplete { [self] result in
            switch result {
            case .success(let answer): respond(answer)
            case .failure(let error):
                logger.info("upstream resolver over TCP failed; SERVFAIL", metadata: ["upstream": "\(upstream)", "error": "\(error)"])
                servFail(query, respond)
            }
        }
    }

    // MARK: listening

    /// UDP listeners on 127.0.0.1 and ::1 (where the namespace has it) inside `netns`.
    func listen(in netns: NetworkNamespace, group: any EventLoopGroup) async throws -> [any Channel] {
        var channels: [any Channel] = []
        for (family, addr) in [(AF_INET, IPAddress(ipv4: 127, 0, 0, 1)), (AF_INET6, IPAddress("::1")!)] {
            let fd = try netns.makeSocket(family: family, type: Int32(SOCK_DGRAM.rawValue))
            let rc = addr.bytes.withUnsafeBufferPointer { weft_bind_datagram(fd, family, $0.baseAddress, settings.port) }
            if rc != 0 {
                close(fd)
                if family == AF_INET6 { continue }
                for c in channels { try? await c.close() }
                throw ProxyError.system("bind the DNS server to 127.0.0.1:\(settings.port) in \(netns)", -rc)
            }
            let channel = try await DatagramBootstrap(group: group)
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DNSListenerHandler(service: self))
                    }
                }
                .withBoundSocket(fd).get()
            channels.append(channel)
        }
        return channels
    }
}

/// A workload's query over UDP; the answer goes back to the same address.
final class DNSListenerHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    private let service: DNSService

    init(service: DNSService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let client = envelope.remoteAddress
        let channel = context.channel
        service.handle(Array(envelope.data.readableBytesView), transport: .udp) { answer in
            var buffer = channel.allocator.buffer(capacity: answer.count)
            buffer.writeBytes(answer)
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: buffer), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed send to one client (ICMP unreachable) must not close the listener.
    }
}

final class UpstreamReplyHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let service: DNSService

    init(service: DNSService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        service.upstreamReply(Array(envelope.data.readableBytesView), from: envelope.remoteAddress)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port unreachable from a dead upstream surfaces here; the
        // pending query's timer answers SERVFAIL.
    }
}

/// DNS over TCP frames: a two-byte length, then the message (RFC 1035 4.2.2).
struct DNSLengthFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

final class TCPUpstreamAnswer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let done: EventLoopPromise<[UInt8]>

    init(done: EventLoopPromise<[UInt8]>) { self.done = done }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        done.succeed(Array(unwrapInboundIn(data).readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        done.fail(ChannelError.eof)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        done.fail(error)
        context.close(promise: nil)
    }
}

/// A workload's DNS over TCP, captured like any TCP connection: queries are
/// answered (or forwarded over TCP) one by one, in order.
final class DNSTCPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let service: DNSService

    init(service: DNSService) { self.service = service }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let channel = context.channel
        service.handle(Array(unwrapInboundIn(data).readableBytesView), transport: .tcp) { answer in
            var buffer = channel.allocator.buffer(capacity: answer.count + 2)
            buffer.writeInteger(UInt16(answer.count))
            buffer.writeBytes(answer)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e {
            // The client is done asking; answers in flight still go out.
            context.eventLoop.scheduleTask(in: .seconds(3)) { [channel = context.channel] in channel.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
