import Testing
@testable import WeftHTTP

@Suite struct PathNormalizationBehaviour {
    @Test("dot segments, encoded unreserved characters and repeated slashes all reach one form", arguments: [
        ("/a/b/../c", "/a/c"),
        ("/a/./b/.", "/a/b/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/%61dmin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/a/%2E%2E/admin", "/admin"),
        ("//admin///x", "/admin/x"),
        ("/admin/%7euser", "/admin/~user"),
        ("/x/%3a", "/x/%3A"),
        ("/x/%3A", "/x/%3A"),
        ("/", "/"),
        ("/a/..", "/"),
    ])
    func normalises(_ raw: String, _ expected: String) throws {
        #expect(try PathNormalization.normalize(raw).path == expected)
    }

    @Test func theQueryIsKeptAsReceivedAndAbsoluteFormLosesItsAuthority() throws {
        let t = try PathNormalization.normalize("/a/../b?x=1&y=%2F")
        #expect(t.path == "/b" && t.query == "x=1&y=%2F" && t.requestTarget == "/b?x=1&y=%2F")
        #expect(try PathNormalization.normalize("http://catalog.shop:80/x/./y?q").requestTarget == "/x/y?q")
        #expect(try PathNormalization.normalize("http://catalog.shop").path == "/")
        #expect(try PathNormalization.normalize("*").path == "*")
    }

    @Test("requests that could be read two ways are refused", arguments: [
        "/admin%2Fsecret", "/admin%2fsecret", "/a%5Cb", "/a%zz", "/a%4", "/a b", "/a\u{0}b", "/a#frag", "relative/path",
        "/caf\u{e9}", "/x?a b", "/a\\b", "/%00",
    ])
    func refuses(_ raw: String) {
        #expect(throws: PathNormalization.Refusal.self) { try PathNormalization.normalize(raw) }
    }

    @Test func escapedSlashesMayBeAllowedAndSlashMergingTurnedOff() throws {
        let lenient = PathNormalization.Options(mergeSlashes: false, allowEscapedSlashes: true)
        #expect(try PathNormalization.normalize("//a%2Fb", options: lenient).path == "//a%2Fb")
    }

    @Test func normalisingTwiceChangesNothingForRandomInput() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("/.%2eEfF0aA?&=~-_:@!$'()*+,;".utf8)
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 1...24, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let raw = "/" + String(decoding: bytes, as: UTF8.self)
            guard let once = try? PathNormalization.normalize(raw) else { continue }
            let twice = try? PathNormalization.normalize(once.requestTarget)
            #expect(twice == once, "\(raw) -> \(once.requestTarget) -> \(twice?.requestTarget ?? "refused")")
            #expect(!once.path.contains("/../") && !once.path.hasSuffix("/..") && !once.path.contains("//"))
        }
    }

    @Test func theShortcutForPathsAlreadyInFormAgreesWithTheLongWay() throws {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("/./.a/b%2e?~-é\u{301}".utf8)
        var shortcuts = 0
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...16, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }
            let raw = "/" + String(decoding: bytes, as: UTF8.self)
            let long = Result { () throws(PathNormalization.Refusal) in try PathNormalization.normalize(raw, options: .init(), shortcut: false) }
            let short = Result { () throws(PathNormalization.Refusal) in try PathNormalization.normalize(raw) }
            switch (short, long) {
            case (.success(let a), .success(let b)): #expect(a == b, "\(raw)")
            case (.failure(let a), .failure(let b)): #expect(a == b, "\(raw)")
            default: Issue.record("\(raw): \(short) but the long way gives \(long)")
            }
            if PathNormalization.isCanonical(Substring(raw.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]).utf8) {
                shortcuts += 1
            }
        }
        #expect(shortcuts > 100)
        // Dot segments, empty segments and escapes never take the shortcut.
        for raw in ["/a/./b", "/a/../b", "/a//b", "/a/.", "/a/..", "/%61", "/.", "/.."] {
            #expect(!PathNormalization.isCanonical(Substring(raw).utf8), "\(raw)")
        }
        for raw in ["/", "/a", "/a/", "/a.b/..c/x", "/.well-known/x"] {
            #expect(PathNormalization.isCanonical(Substring(raw).utf8), "\(raw)")
        }
    }
}

@Suite struct HeaderValidationBehaviour {
    @Test func ordinaryHeadersPass() throws {
        try HeaderValidation.check([("Host", "catalog"), ("Content-Length", "12"), ("X-Id", "a b\tc")])
        try HeaderValidation.check([("Content-Length", "5, 5")])
        try HeaderValidation.check([("Transfer-Encoding", "chunked")])
    }

    @Test("framing that two parties could read differently is refused", arguments: [
        [("Content-Length", "5"), ("Content-Length", "6")],
        [("Content-Length", "5, 6")],
        [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "chunked, identity")],
        [("Content-Length", "-1")],
        [("Content-Length", "")],
        [("Bad Name", "x")],
        [("X", "a\r\nInjected: 1")],
        [("X", " leading")],
        [("", "x")],
    ] as [[(String, String)]])
    func refuses(_ headers: [(String, String)]) {
        #expect(throws: HeaderValidation.Refusal.self) { try HeaderValidation.check(headers.map { (name: $0.0, value: $0.1) }) }
    }

    @Test func oversizedHeadersAreRefusedByTheConfiguredLimits() {
        let limits = HeaderValidation.Limits(maxHeaderBytes: 100, maxHeaderCount: 3)
        #expect(throws: HeaderValidation.Refusal.self) {
            try HeaderValidation.check([("X", String(repeating: "a", count: 200))], limits: limits)
        }
        #expect(throws: HeaderValidation.Refusal.self) {
            try HeaderValidation.check((0..<4).map { (name: "X-\($0)", value: "v") }, limits: limits)
        }
    }

    @Test func hopByHopHeadersAndThoseConnectionNamesAreNotForwarded() {
        let kept = HeaderValidation.forwardable([
            ("Host", "a"), ("Connection", "keep-alive, X-Secret"), ("Keep-Alive", "5"), ("X-Secret", "s"),
            ("TE", "trailers"), ("Upgrade", "h2c"), ("X-Request-Id", "1"),
        ])
        #expect(kept.map(\.name) == ["Host", "X-Request-Id"])
        // The usual Connection values name nothing else; mixed case is still hop-by-hop.
        #expect(HeaderValidation.forwardable([("CONNECTION", "Keep-Alive"), ("Keep-alive", "5"), ("Close", "x")]).map(\.name) == ["Close"])
        #expect(HeaderValidation.forwardable([("Connection", " close ,  X-A "), ("x-a", "1"), ("x-b", "2")]).map(\.name) == ["x-b"])
    }

    @Test func theHopByHopNameCheckKnowsExactlyTheHopByHopHeadersInAnyCase() {
        for name in HeaderValidation.hopByHop {
            #expect(HeaderValidation.isHopByHopName(name) && HeaderValidation.isHopByHopName(name.uppercased()), "\(name)")
        }
        for name in ["host", "content-length", "x-te", "trailers", "upgrades", "connections", "keep-alives", "proxy-connectio",
                     "transfer-encodings", "content-type", "authorization", ""] {
            #expect(!HeaderValidation.isHopByHopName(name), "\(name)")
        }
    }

    @Test func requestIDsAreVersion4UUIDsAndDoNotRepeat() {
        var ids = RequestIDGenerator()
        var seen = Set<String>()
        let uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
        for _ in 0..<10_000 {
            let id = ids.generate()
            #expect(id.wholeMatch(of: uuid) != nil, "\(id)")
            seen.insert(id)
        }
        #expect(seen.count == 10_000)
        // Each connection's generator is seeded on its own: two never start on the same id.
        var a = RequestIDGenerator(), b = RequestIDGenerator()
        #expect(a.generate() != b.generate())
        var c = RequestIDGenerator(seed: 7), d = RequestIDGenerator(seed: 7)
        #expect(c.generate() == d.generate())
    }
}
