import NIOCore
import NIOHTTP1

/// Writes HTTP/1.x requests as NIO's `HTTPRequestEncoder` does when it is added to a pipeline
/// directly: the same bytes and the same framing headers (`HTTP1EncoderTests` holds them equal).
///
/// The difference is cost. NIO's encoder writes each header name, separator and value through
/// `ByteBuffer`'s checked setters, about 250 instructions apiece; this one sizes the head first
/// and copies it in one pass. NIO's encoders were a tenth of weftd's instructions per proxied
/// request on the mesh path (callgrind, see docs/benchmarks.md).
///
/// It takes the same `HTTPClientRequestPart`s, so `ByteToMessageHandler<HTTPResponseDecoder>` still
/// sees each request go out before it is encoded, and knows that the answer to a HEAD has no body.
final class HTTP1RequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    /// The request whose head it wrote last is chunked: only then does its end write anything.
    private(set) var isChunked = false

    init() {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        HTTP1Wire.write(self.unwrapOutboundIn(data), chunked: &self.isChunked, context: context, promise: promise) { head in
            let framing = HTTP1Wire.frame(&head.headers, body: HTTP1Wire.requestBody(head.method), version: head.version)
            return (framing, HTTP1Wire.requestHead(head, allocator: context.channel.allocator))
        }
    }
}

@available(*, unavailable)
extension HTTP1RequestEncoder: Sendable {}

/// Writes HTTP/1.x responses as NIO's `HTTPResponseEncoder` does in the pipeline of
/// `configureHTTPServerPipeline`, in one pass per head: see `HTTP1RequestEncoder`.
///
/// The answer to a HEAD request keeps the framing headers a GET's would have (RFC 9110 9.3.2),
/// but nothing follows its head: no body, and no last chunk even when the head says chunked. The
/// router says which answers those are (`answersHead`). Without it, an upstream's HEAD answer with
/// no Content-Length went out with `Transfer-Encoding: chunked` and then `0\r\n\r\n`, which the
/// client, knowing there is no body, read as the start of the next response.
final class HTTP1ResponseEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = IOData

    private var isChunked = false
    /// The response being written answers a HEAD request.
    var answersHead = false

    init() {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = self.unwrapOutboundIn(data)
        if answersHead, case .body = part {
            // NIO's encoder refuses it too: the bytes would be read as the next response.
            promise?.fail(NIOHTTPResponseEncoderError.responseBodyNotAllowed)
            return
        }
        let answersHead = self.answersHead
        HTTP1Wire.write(part, chunked: &self.isChunked, context: context, promise: promise) { head in
            let body: HTTP1Wire.Body = head.status.mayHaveResponseBody ? .yes : .no
            let framing = HTTP1Wire.frame(&head.headers, body: body, version: head.version)
            return (answersHead && framing == .chunked ? .neither : framing,
                    HTTP1Wire.responseHead(head, allocator: context.channel.allocator))
        }
    }
}

@available(*, unavailable)
extension HTTP1ResponseEncoder: Sendable {}

/// The HTTP/1.x serialization both encoders share.
enum HTTP1Wire {
    enum Body { case no, yes, unlikely }
    enum Framing { case chunked, contentLength, neither }

    /// One part of a message: a head as `encode` frames and serializes it (`chunked` keeps what
    /// its framing was for the parts after it), a body part, or the end.
    @inline(__always)
    static func write<Head: Equatable & Sendable>(_ part: HTTPPart<Head, IOData>, chunked: inout Bool, context: ChannelHandlerContext,
                            promise: EventLoopPromise<Void>?, head encode: (inout Head) -> (Framing, ByteBuffer)) {
        switch part {
        case .head(var head):
            let (framing, buffer) = encode(&head)
            chunked = framing == .chunked
            context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
        case .body(let part):
            writeChunk(part, chunked: chunked, context: context, promise: promise)
        case .end(let trailers):
            writeEnd(trailers, chunked: chunked, context: context, promise: promise)
        }
    }

    /// Which requests carry a body, as NIO's `HTTPMethod.hasRequestBody` has it.
    static func requestBody(_ method: HTTPMethod) -> Body {
        switch method {
        case .TRACE: .no
        case .POST, .PUT, .PATCH: .yes
        default: .unlikely
        }
    }

    /// Makes a message's framing headers agree with whether it has a body, so that the connection
    /// stays reusable: NIO's `correctlyFrameTransportHeaders`. It mutates the headers only when
    /// something changes; removing a header that is not there would copy the whole list.
    static func frame(_ headers: inout HTTPHeaders, body: Body, version: HTTPVersion) -> Framing {
        let chunkedAllowed = version.major == 1 && version.minor >= 1
        switch body {
        case .no:
            if headers.contains(name: "content-length") { headers.remove(name: "content-length") }
            if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
            return .neither
        case .yes:
            if headers.contains(name: "content-length") {
                if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
                return .contentLength
            }
            guard chunkedAllowed else { return .neither }
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            return .chunked
        case .unlikely:
            if headers.contains(name: "content-length") {
                if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
                return .contentLength
            }
            return chunkedAllowed && headers.first(name: "transfer-encoding") == "chunked" ? .chunked : .neither
        }
    }

    static func requestHead(_ head: HTTPRequestHead, allocator: ByteBufferAllocator) -> ByteBuffer {
        let method = head.method.rawValue
        let version = Self.version(head.version)
        let size = Self.size(of: head)
        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var at = put(method, out, 0)
            at = put(" ", out, at)
            at = put(head.uri, out, at)
            at = put(" ", out, at)
            at = put(version, out, at)
            at = put("\r\n", out, at)
            return put(head.headers, out, at)
        }
        return buffer
    }

    static func responseHead(_ head: HTTPResponseHead, allocator: ByteBufferAllocator) -> ByteBuffer {
        let version = Self.version(head.version)
        let code = head.status.code
        let reason = head.status.reasonPhrase
        let size = Self.size(of: head)
        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var at = put(version, out, 0)
            at = put(" ", out, at)
            at = put(decimal: code, out, at)
            at = put(" ", out, at)
            at = put(reason, out, at)
            at = put("\r\n", out, at)
            return put(head.headers, out, at)
        }
        return buffer
    }

    /// A body part: as it came when the message is framed by length (or by the connection's
    /// close), inside a chunk when it is chunked. An empty part is never a chunk, since a chunk of
    /// size zero ends the body; it is still written, so its promise completes in order.
    static func writeChunk(_ part: IOData, chunked: Bool, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let size = part.readableBytes
        guard chunked, size > 0 else {
            context.write(NIOAny(part), promise: promise)
            return
        }
        var line = context.channel.allocator.buffer(capacity: 20)
        line.writeString(String(size, radix: 16))
        line.writeStaticString("\r\n")
        var crlf = line
        crlf.moveReaderIndex(forwardBy: crlf.readableBytes - 2)
        // The caller's promise completes once all three are written.
        var parts: (EventLoopPromise<Void>?, EventLoopPromise<Void>?, EventLoopPromise<Void>?) = (nil, nil, nil)
        if let promise {
            parts = (context.eventLoop.makePromise(), context.eventLoop.makePromise(), context.eventLoop.makePromise())
            parts.0!.futureResult.and(parts.1!.futureResult).and(parts.2!.futureResult).map { _ in }.cascade(to: promise)
        }
        context.write(NIOAny(IOData.byteBuffer(line)), promise: parts.0)
        context.write(NIOAny(part), promise: parts.1)
        context.write(NIOAny(IOData.byteBuffer(crlf)), promise: parts.2)
    }

    /// The end of a message: the last chunk and the trailers when chunked. Otherwise nothing, but
    /// an empty write carries a promise so that it completes after the writes before it.
    static func writeEnd(_ trailers: HTTPHeaders?, chunked: Bool, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        if chunked {
            var buffer: ByteBuffer
            if let trailers {
                let size = 3 + Self.size(of: trailers)
                buffer = context.channel.allocator.buffer(capacity: size)
                buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
                    put(trailers, out, put("0\r\n", out, 0))
                }
            } else {
                buffer = context.channel.allocator.buffer(capacity: 5)
                buffer.writeStaticString("0\r\n\r\n")
            }
            context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
        } else if let promise {
            context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
        }
    }

    // MARK: Serialization

    /// NIO writes HTTP/1.0 and 1.1 literally and other versions digit by digit.
    private static func version(_ version: HTTPVersion) -> String {
        switch (version.major, version.minor) {
        case (1, 1): "HTTP/1.1"
        case (1, 0): "HTTP/1.0"
        default: "HTTP/\(version.major).\(version.minor)"
        }
    }

    /// Bytes of a request head on the wire: request line, header lines and the empty line after
    /// them. The router counts heads this way for `istio_request_bytes`.
    static func size(of head: HTTPRequestHead) -> Int {
        head.method.rawValue.utf8.count + 1 + head.uri.utf8.count + 1 + size(of: head.version) + 2 + size(of: head.headers)
    }

    /// Bytes of a response head on the wire, as for a request's (`istio_response_bytes`).
    static func size(of head: HTTPResponseHead) -> Int {
        size(of: head.version) + 1 + digits(head.status.code) + 1 + head.status.reasonPhrase.utf8.count + 2 + size(of: head.headers)
    }

    /// Without building the string: HTTP/2 streams' heads (version 2.0) are counted too.
    private static func size(of version: HTTPVersion) -> Int {
        switch (version.major, version.minor) {
        case (0...9, 0...9): 8
        default: Self.version(version).utf8.count
        }
    }

    /// Bytes of the header lines and the empty line that ends them.
    private static func size(of headers: HTTPHeaders) -> Int {
        var size = 2
        for (name, value) in headers {
            size += name.utf8.count + value.utf8.count + 4
        }
        return size
    }

    private static func put(_ headers: HTTPHeaders, _ out: UnsafeMutableRawBufferPointer, _ start: Int) -> Int {
        var at = start
        for (name, value) in headers {
            at = put(name, out, at)
            at = put(": ", out, at)
            at = put(value, out, at)
            at = put("\r\n", out, at)
        }
        return put("\r\n", out, at)
    }

    @inline(__always)
    private static func put(_ string: String, _ out: UnsafeMutableRawBufferPointer, _ at: Int) -> Int {
        let count = string.utf8.count
        guard count > 0 else { return at }
        let target = UnsafeMutableRawBufferPointer(rebasing: out[at..<(at + count)])
        if string.utf8.withContiguousStorageIfAvailable({ target.copyMemory(from: UnsafeRawBufferPointer($0)) }) == nil {
            target.copyBytes(from: string.utf8)
        }
        return at + count
    }

    private static func digits(_ value: UInt) -> Int {
        var count = 1, rest = value / 10
        while rest > 0 { count += 1; rest /= 10 }
        return count
    }

    private static func put(decimal value: UInt, _ out: UnsafeMutableRawBufferPointer, _ start: Int) -> Int {
        let count = digits(value)
        var rest = value, at = start + count - 1
        repeat {
            out[at] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
            at -= 1
        } while rest > 0
        return start + count
    }
}
