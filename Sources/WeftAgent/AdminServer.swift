import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The admin endpoints (health, debug state). They run on their own event
/// loop thread so that an expensive query never delays the data path.
public final class AdminServer: Sendable {
    public typealias Route = @Sendable (_ path: String) -> (HTTPResponseStatus, String, String)?

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let route: Route

    public init(route: @escaping Route) {
        self.route = route
    }

    public func bind(host: String, port: Int, what: String = "admin.address") async throws -> any NIOChannelLike {
        let route = self.route
        do {
            return ChannelBox(channel: try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(AdminHandler(route: route))
                    }
                }
                .bind(host: host, port: port).get())
        } catch {
            throw AdminError(message: "cannot listen on \(host):\(port) (\(what)): \(error) (is another weftd using it? set \(what))")
        }
    }

    public func shutdown() async {
        try? await group.shutdownGracefully()
    }
}

public struct AdminError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let route: AdminServer.Route
    private var head: HTTPRequestHead?

    init(route: @escaping AdminServer.Route) {
        self.route = route
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
            let (status, type, body): (HTTPResponseStatus, String, String)
            if head.method != .GET && head.method != .HEAD {
                (status, type, body) = (.methodNotAllowed, "text/plain", "only GET\n")
            } else {
                (status, type, body) = route(path) ?? (.notFound, "text/plain", "no such endpoint: \(path)\n")
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: "\(body.utf8.count)")
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}

/// Lets the thin main close a channel without importing NIO.
public protocol NIOChannelLike: Sendable {
    func close() async throws
}

struct ChannelBox: NIOChannelLike {
    let channel: any Channel
    func close() async throws { try await channel.close() }
}
