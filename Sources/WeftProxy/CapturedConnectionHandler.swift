import Glibc
import NIOCore
import NIOPosix
import WeftCore

/// First handler on an accepted connection. Finds the kernel's record of the
/// connection (it must exist: a connection the kernel did not redirect has no
/// business on this listener), connects to the original destination, then
/// replaces itself with the relay. Until then the connection is not read, so
/// nothing is buffered in the proxy.
final class CapturedConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let proxy: NodeProxy
    private let netns: NetworkNamespace

    init(proxy: NodeProxy, netns: NetworkNamespace) {
        self.proxy = proxy
        self.netns = netns
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        guard let remote = channel.remoteAddress, let local = channel.localAddress,
              let src = remote.weftIPAddress, let dst = local.weftIPAddress,
              let srcPort = remote.port, let dstPort = local.port else {
            Self.reset(channel)
            return
        }
        let key = CapturedConnectionKey(netnsCookie: netns.cookie, source: src, sourcePort: UInt16(srcPort),
                                        destination: dst, destinationPort: UInt16(dstPort))
        guard let original = proxy.resolver.take(key) else {
            proxy.stats.noOriginalDestination.add(1, ordering: .relaxed)
            proxy.logger.warning("captured connection without a kernel record; closing it",
                                 metadata: ["peer": "\(remote)", "netns": "\(netns)"])
            Self.reset(channel)
            return
        }
        let workload = proxy.workloads.workload(cgroupID: original.cgroupID)
        proxy.stats.countConnection(from: workload)
        proxy.stats.active.add(1, ordering: .relaxed)
        let stats = proxy.stats
        channel.closeFuture.whenComplete { _ in stats.active.subtract(1, ordering: .relaxed) }

        let idle = proxy.config.idleTimeout
        let logger = proxy.logger
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        // A service's virtual IP is never dialled: one of its endpoints is,
        // the next one when a connect fails (a dead node's endpoint is skipped).
        var targets = [original]
        if let service = proxy.services.endpoints(for: original.address, port: original.port) {
            targets = service.endpoints.prefix(3).map { e in
                var t = original
                t.address = e.address
                t.port = e.port
                return t
            }
            if targets.isEmpty {
                stats.noHealthyEndpoint.add(1, ordering: .relaxed)
                logger.info("service has no endpoints; resetting the workload's connection",
                            metadata: ["service": "\(service.service)"])
                Self.reset(channel)
                return
            }
        }
        connectFirst(targets[...], netns: netns, on: context.eventLoop).whenComplete { result in
            let context = loopBoundContext.value
            switch result {
            case .success(let upstream):
                guard channel.isActive else {
                    upstream.close(promise: nil)
                    return
                }
                let (down, up) = GlueHandler.matchedPair(
                    downstreamBytes: { stats.bytesFromWorkloads.add($0, ordering: .relaxed) },
                    upstreamBytes: { stats.bytesToWorkloads.add($0, ordering: .relaxed) })
                do {
                    try upstream.pipeline.syncOperations.addHandlers([IdleStateHandler(allTimeout: idle), up])
                    let ops = context.pipeline.syncOperations
                    try ops.addHandlers([IdleStateHandler(allTimeout: idle), down])
                    ops.removeHandler(context: context, promise: nil)
                } catch {
                    upstream.close(promise: nil)
                    Self.reset(channel)
                    return
                }
                upstream.setOption(.autoRead, value: true).whenComplete { _ in }
                channel.setOption(.autoRead, value: true).whenComplete { _ in }
                logger.debug("relaying", metadata: [
                    "source": "\(workload.map(String.init(describing:)) ?? "unknown")",
                    "destination": "\(original)"])
            case .failure(let error):
                stats.upstreamConnectFailures.add(1, ordering: .relaxed)
                logger.info("upstream connect failed; resetting the workload's connection",
                            metadata: ["source": "\(workload.map(String.init(describing:)) ?? "unknown")",
                                       "error": "\(error)"])
                Self.reset(channel)
            }
        }
    }

    /// Tries each target in turn until one connects.
    private func connectFirst(_ targets: ArraySlice<OriginalDestination>, netns: NetworkNamespace,
                              on loop: any EventLoop) -> EventLoopFuture<any Channel> {
        let proxy = self.proxy
        @Sendable func attempt(_ rest: ArraySlice<OriginalDestination>) -> EventLoopFuture<any Channel> {
            let target = rest.first!
            return proxy.connectUpstream(to: target, netns: netns, on: loop).flatMapError { error in
                let remaining = rest.dropFirst()
                guard !remaining.isEmpty else { return loop.makeFailedFuture(error) }
                proxy.logger.info("endpoint did not answer; trying the next", metadata: ["endpoint": "\(target)", "error": "\(error)"])
                return attempt(remaining)
            }
        }
        return attempt(targets)
    }

    /// Close with RST so the workload learns at once that its connection
    /// failed, as it would have from the destination itself.
    static func reset(_ channel: any Channel) {
        if let provider = channel as? any SocketOptionProvider {
            provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in
                channel.close(promise: nil)
            }
        } else {
            channel.close(promise: nil)
        }
    }
}
