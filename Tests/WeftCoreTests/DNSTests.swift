import Testing
@testable import WeftCore

@Suite struct DNSMessageParsing {
    static func query(_ name: String, type: UInt16 = 1, id: UInt16 = 0xBEEF, edns: UInt16? = nil) -> [UInt8] {
        var q: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns == nil ? 0 : 1]
        q += DNSResponse.encodeName(name) + [UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
        if let edns { q += [0, 0, 41, UInt8(edns >> 8), UInt8(edns & 0xFF), 0, 0, 0, 0, 0, 0] }
        return q
    }

    @Test func aQueryIsReadWithItsNameTypeAndEDNSSize() throws {
        let q = try DNSQuery.parse(Self.query("Catalog.Shop.svc.cluster.local", type: 33, edns: 4096))
        #expect(q.id == 0xBEEF && q.name == "catalog.shop.svc.cluster.local" && q.type == 33 && q.recursionDesired)
        #expect(q.ednsPayloadSize == 4096 && DNSResponse.udpLimit(q) == 1232)
    }

    @Test func randomAndTruncatedBytesNeverCrashAndAreRefused() {
        var rng = SystemRandomNumberGenerator()
        let good = Self.query("catalog.shop.svc.cluster.local")
        for n in 0..<good.count {
            #expect(throws: DNSParseError.self) { try DNSQuery.parse(Array(good.prefix(n))) }
        }
        var accepted = 0
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if (try? DNSQuery.parse(bytes)) != nil { accepted += 1 }
        }
        #expect(accepted < 200, "random bytes rarely form one valid question: \(accepted)")
    }

    @Test func compressionPointersThatLoopOrPointForwardAreRefused() {
        let header: [UInt8] = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        #expect(throws: DNSParseError.self) { try DNSQuery.parse(header + [0xC0, 0x0C, 0, 1, 0, 1]) }
        #expect(throws: DNSParseError.self) { try DNSQuery.parse(header + [0xC0, 0x20, 0, 1, 0, 1]) }
        let long = (0..<5).flatMap { _ in [UInt8(63)] + [UInt8](repeating: 97, count: 63) }
        #expect(throws: DNSParseError.self) { try DNSQuery.parse(header + long + [0, 0, 1, 0, 1]) }
        var response = Self.query("a.example")
        response[2] |= 0x80
        #expect(throws: DNSParseError.self) { try DNSQuery.parse(response) }
    }

    @Test func anAnswerOverTheUDPLimitIsTruncatedWithTC() throws {
        let q = try DNSQuery.parse(Self.query("x.example"))
        let many = (0..<60).map { i in DNSRecord(ttl: 5, data: .a(IPAddress(ipv4: 10, 0, 0, UInt8(i)))) }
        let udp = DNSResponse.build(q, rcode: .noError, authoritative: true, answers: many, limit: DNSResponse.udpLimit(q))
        #expect(udp.truncated && udp.bytes.count <= 512 && udp.bytes[2] & 0x02 != 0)
        let tcp = DNSResponse.build(q, rcode: .noError, authoritative: true, answers: many)
        #expect(!tcp.truncated && tcp.bytes[7] == 60)
    }
}

@Suite struct DNSTableAnswers {
    let table = DNSTable(snapshot: NodeSnapshot(
        version: 1, node: "a", trustDomain: "cluster.local", namespaces: [.init(name: "shop", mesh: true)], workloads: [],
        services: [.init(namespace: "shop", name: "catalog", virtualIP: "10.96.0.10",
                         ports: [.init(name: "http", port: 80, protocol_: "http"), .init(name: nil, port: 81, protocol_: "tcp")],
                         endpoints: [])]),
        clusterDomain: "cluster.local")

    @Test func aServiceNameAndItsSearchPathFormsGiveTheVirtualIP() {
        let vip = DNSRecord(ttl: DNSTable.ttl, data: .a(IPAddress("10.96.0.10")!))
        for name in ["catalog.shop.svc.cluster.local", "catalog.shop.svc.cluster.local.", "CATALOG.shop.svc", "catalog.shop"] {
            #expect(table.answer(name: name, type: 1) == .records([vip], additional: []), "\(name)")
        }
        #expect(table.answer(name: "catalog.shop.svc.cluster.local", type: 28) == .noData)
        #expect(table.answer(name: "catalog.shop.svc.cluster.local", type: 16) == .noData)
    }

    @Test func namedPortsHaveSRVRecords() {
        guard case .records(let srv, let additional) = table.answer(name: "_http._tcp.catalog.shop.svc.cluster.local", type: 33) else {
            Issue.record("no SRV")
            return
        }
        #expect(srv == [DNSRecord(ttl: DNSTable.ttl, data: .srv(priority: 0, weight: 100, port: 80, target: "catalog.shop.svc.cluster.local"))])
        #expect(additional.count == 1)
        #expect(table.answer(name: "_grpc._tcp.catalog.shop.svc.cluster.local", type: 33) == .nxDomain)
    }

    @Test func unknownNamesInTheClusterDomainDoNotExistAndOthersAreForwarded() {
        #expect(table.answer(name: "nope.shop.svc.cluster.local", type: 1) == .nxDomain)
        #expect(table.answer(name: "catalog.shop.svc.cluster.local.cluster.local", type: 1) == .nxDomain,
                "search-path expansions stay in the zone")
        #expect(table.answer(name: "example.org", type: 1) == .forward)
        #expect(table.answer(name: "catalog.blog", type: 1) == .forward, "blog is not a namespace of the mesh")
    }
}
