import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
@testable import WeftProxy

@Suite("HTTP/1 encoders: the same bytes as NIO's, written in one pass")
struct HTTP1EncoderTests {
    /// Writes the parts through a channel holding only `encoder`, each with a promise, and returns
    /// the bytes that came out. Every promise must have succeeded.
    static func encoded<Part>(_ parts: [Part], by encoder: any ChannelHandler) throws -> [UInt8] {
        let channel = EmbeddedChannel(handler: encoder)
        defer { _ = try? channel.finish() }
        let promises = parts.map { part in
            let promise = channel.eventLoop.makePromise(of: Void.self)
            channel.write(part, promise: promise)
            return promise.futureResult
        }
        channel.flush()
        for future in promises { try future.wait() }
        var bytes: [UInt8] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { Issue.record("a file region came out"); continue }
            bytes += buffer.readableBytesView
        }
        return bytes
    }

    static let manyHeaders = (0..<40).map { ("x-header-\($0)", String(repeating: "v", count: $0)) }

    static let requests: [(String, [HTTPClientRequestPart])] = {
        func head(_ method: HTTPMethod, _ uri: String, _ version: HTTPVersion, _ headers: [(String, String)]) -> HTTPClientRequestPart {
            .head(HTTPRequestHead(version: version, method: method, uri: uri, headers: HTTPHeaders(headers)))
        }
        func head(_ method: HTTPMethod, _ uri: String, _ headers: [(String, String)]) -> HTTPClientRequestPart {
            head(method, uri, .http1_1, headers)
        }
        func head(_ method: HTTPMethod, _ headers: [(String, String)]) -> HTTPClientRequestPart {
            head(method, "/", .http1_1, headers)
        }
        func body(_ s: String) -> HTTPClientRequestPart { .body(.byteBuffer(ByteBuffer(string: s))) }
        return [
            ("plain GET", [head(.GET, "/index.html", [("host", "shop"), ("user-agent", "wrk")]), .end(nil)]),
            ("GET carrying framing headers", [head(.GET, [("Content-Length", "0"), ("transfer-encoding", "chunked")]), .end(nil)]),
            ("GET with no headers", [head(.GET, []), .end(nil)]),
            ("POST without framing is chunked, with trailers", [head(.POST, "/cart", [("host", "shop")]), body("hello"), body(""),
                                                                 body(String(repeating: "b", count: 70_000)),
                                                                 .end(HTTPHeaders([("x-checksum", "1"), ("x-more", "2")]))]),
            ("POST chunked, no trailers", [head(.POST, [("host", "shop")]), body("x"), .end(nil)]),
            ("POST with both framings keeps the length", [head(.POST, [("content-length", "5"), ("Transfer-Encoding", "chunked")]),
                                                          body("hello"), .end(nil)]),
            ("PUT over HTTP/1.0 is not chunked", [head(.PUT, "/x", .http1_0, [("host", "a")]), body("raw"), .end(HTTPHeaders([("t", "1")]))]),
            ("TRACE drops its framing", [head(.TRACE, [("content-length", "3"), ("transfer-encoding", "chunked")]), .end(nil)]),
            ("OPTIONS that says chunked", [head(.OPTIONS, [("Transfer-Encoding", "chunked")]), body("abc"), .end(nil)]),
            ("DELETE with another coding", [head(.DELETE, [("transfer-encoding", "gzip")]), body("abc"), .end(nil)]),
            ("extension method, odd target, odd values", [head(.RAW(value: "PURGE"), "/a%20b?q=1&r=%C3%BC#f",
                                                               [("x-empty", ""), ("x-utf8", "grüße"), ("Connection", "close")]),
                                                          .end(nil)]),
            ("forty headers", [head(.GET, "/many", manyHeaders), .end(nil)]),
            ("HTTP/2.0 version line", [head(.GET, "/", HTTPVersion(major: 2, minor: 0), [("host", "a")]), .end(nil)]),
            ("two requests in a row", [head(.POST, [("host", "a")]), body("1"), .end(nil),
                                       head(.GET, [("host", "a")]), .end(nil)]),
        ]
    }()

    @Test func requestsAreEncodedByteForByteAsNIOEncodesThem() throws {
        for (name, parts) in Self.requests {
            let ours = try Self.encoded(parts, by: HTTP1RequestEncoder())
            let nio = try Self.encoded(parts, by: HTTPRequestEncoder())
            #expect(String(decoding: ours, as: UTF8.self) == String(decoding: nio, as: UTF8.self), "\(name): \(String(decoding: ours, as: UTF8.self))")
        }
    }

    @Test func responsesOfEveryStatusAreEncodedByteForByteAsNIOEncodesThem() throws {
        let versions = [HTTPVersion.http1_1, .http1_0, HTTPVersion(major: 2, minor: 0)]
        for code in 100..<600 {
            for version in versions {
                let status = HTTPResponseStatus(statusCode: code)
                let shapes: [[HTTPServerResponsePart]] = [
                    [.head(HTTPResponseHead(version: version, status: status, headers: ["content-length": "2"])),
                     .body(.byteBuffer(ByteBuffer(string: "ok"))), .end(nil)],
                    [.head(HTTPResponseHead(version: version, status: status, headers: ["server": "nginx"])),
                     .body(.byteBuffer(ByteBuffer(string: "unframed"))), .end(HTTPHeaders([("grpc-status", "0")]))],
                    [.head(HTTPResponseHead(version: version, status: status,
                                            headers: ["Content-Length": "0", "transfer-encoding": "chunked"])), .end(nil)],
                ]
                for parts in shapes {
                    let ours = try Self.encoded(parts, by: HTTP1ResponseEncoder())
                    let nio = try Self.encoded(parts, by: HTTPResponseEncoder())
                    #expect(String(decoding: ours, as: UTF8.self) == String(decoding: nio, as: UTF8.self), "\(code) \(version): \(String(decoding: ours, as: UTF8.self))")
                }
            }
        }
    }

    @Test func responsesWithTheirOwnReasonPhraseAreEncodedAsNIOEncodesThem() throws {
        for status in [HTTPResponseStatus(statusCode: 200, reasonPhrase: "Fine"), .custom(code: 299, reasonPhrase: ""),
                       .custom(code: 1000, reasonPhrase: "Far Out"), .custom(code: 7, reasonPhrase: "x")] {
            for version in [HTTPVersion.http1_1, .http1_0] {
                let parts: [HTTPServerResponsePart] = [
                    .head(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(Self.manyHeaders))),
                    .body(.byteBuffer(ByteBuffer(string: "body"))), .end(nil),
                ]
                let ours = try Self.encoded(parts, by: HTTP1ResponseEncoder())
                let nio = try Self.encoded(parts, by: HTTPResponseEncoder())
                #expect(String(decoding: ours, as: UTF8.self) == String(decoding: nio, as: UTF8.self), "\(status) \(version)")
            }
        }
    }

    /// `istio_request_bytes` and `istio_response_bytes` count a head as the bytes written for it.
    @Test func theSizeCountedForAHeadIsTheNumberOfBytesWrittenForIt() {
        let allocator = ByteBufferAllocator()
        for (name, parts) in Self.requests {
            for case .head(let head) in parts {
                #expect(HTTP1Wire.size(of: head) == HTTP1Wire.requestHead(head, allocator: allocator).readableBytes, "\(name)")
            }
        }
        let statuses: [HTTPResponseStatus] = [.ok, .notFound, .custom(code: 1000, reasonPhrase: "Far Out"),
                                              .custom(code: 7, reasonPhrase: "x"), .custom(code: 299, reasonPhrase: "")]
        for status in statuses {
            for version in [HTTPVersion.http1_1, .http1_0, HTTPVersion(major: 2, minor: 0), HTTPVersion(major: 10, minor: 12)] {
                for headers in [HTTPHeaders(), HTTPHeaders(Self.manyHeaders)] {
                    let head = HTTPResponseHead(version: version, status: status, headers: headers)
                    #expect(HTTP1Wire.size(of: head) == HTTP1Wire.responseHead(head, allocator: allocator).readableBytes,
                            "\(status) \(version)")
                }
            }
        }
    }

    /// The router leaves out the end of a request whose encoder would write nothing for it; the
    /// encoder says a request is chunked exactly when its end writes bytes.
    @Test func anEndWritesBytesExactlyWhenTheEncoderSaysTheRequestIsChunked() throws {
        for (name, parts) in Self.requests {
            for trailers in [nil, HTTPHeaders([("x-checksum", "1")])] {
                let encoder = HTTP1RequestEncoder()
                let channel = EmbeddedChannel(handler: encoder)
                defer { _ = try? channel.finish() }
                try channel.writeOutbound(parts[0])
                while try channel.readOutbound(as: IOData.self) != nil {}
                try channel.writeOutbound(HTTPClientRequestPart.end(trailers))
                var wrote = 0
                while let data = try channel.readOutbound(as: IOData.self) { wrote += data.readableBytes }
                #expect((wrote > 0) == encoder.isChunked, "\(name), trailers \(trailers.map { "\($0)" } ?? "none")")
            }
        }
    }

    /// The answer to a HEAD keeps a GET's framing headers, but nothing follows its head: as NIO's
    /// server pipeline (which sees the request) writes it.
    @Test func theAnswerToAHeadIsWrittenAsNIOsServerPipelineWritesItWithNothingAfterItsHead() throws {
        for headers in [HTTPHeaders([("server", "x")]), HTTPHeaders([("content-length", "10")]),
                        HTTPHeaders([("transfer-encoding", "chunked")])] {
            let parts: [HTTPServerResponsePart] = [.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), .end(nil)]

            let nio = EmbeddedChannel()
            defer { _ = try? nio.finish() }
            try nio.pipeline.syncOperations.configureHTTPServerPipeline()
            try nio.writeInbound(ByteBuffer(string: "HEAD / HTTP/1.1\r\nhost: a\r\n\r\n"))
            for part in parts { try nio.writeOutbound(part) }
            var expected: [UInt8] = []
            while let data = try nio.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let b) = data else { continue }
                expected += b.readableBytesView
            }

            let encoder = HTTP1ResponseEncoder()
            encoder.answersHead = true
            let ours = try Self.encoded(parts, by: encoder)
            #expect(String(decoding: ours, as: UTF8.self) == String(decoding: expected, as: UTF8.self), "\(headers)")
            // The head alone: its empty line is the last thing written.
            let text = String(decoding: ours, as: UTF8.self)
            #expect(text.hasSuffix("\r\n\r\n") && text.components(separatedBy: "\r\n\r\n").count == 2, "\(text)")
        }
        // A body for a HEAD's answer is refused, not written.
        let encoder = HTTP1ResponseEncoder()
        encoder.answersHead = true
        let channel = EmbeddedChannel(handler: encoder)
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        while try channel.readOutbound(as: IOData.self) != nil {}
        let refused = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "x"))), promise: refused)
        #expect(throws: NIOHTTPResponseEncoderError.self) { try refused.futureResult.wait() }
        #expect(try channel.readOutbound(as: IOData.self) == nil)
    }

    /// The upstream's response decoder learns the method from the request parts written through
    /// it: the answer to a HEAD ends after its head, whatever its content-length says.
    @Test func theAnswerToAHeadRequestEndsAfterItsHead() throws {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish() }
        try channel.pipeline.syncOperations.addHandlers([
            HTTP1RequestEncoder(), ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)),
        ])
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/",
                                                                              headers: ["host": "a"])))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        let sent = try #require(try channel.readOutbound(as: IOData.self))
        guard case .byteBuffer(let head) = sent else { Issue.record("a file region came out"); return }
        #expect(String(buffer: head) == "HEAD / HTTP/1.1\r\nhost: a\r\n\r\n")

        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"))
        let parts = try [channel.readInbound(as: HTTPClientResponsePart.self), channel.readInbound(as: HTTPClientResponsePart.self)]
        guard case .head(let response) = parts[0], case .end = parts[1] else {
            Issue.record("expected a head and its end, got \(parts)")
            return
        }
        #expect(response.headers["content-length"] == ["10"])
    }
}
