import Testing
@testable import WeftCore

@Suite struct IPAddressParsing {
    @Test(arguments: [
        ("198.18.0.1", "198.18.0.1"),
        ("::1", "::1"),
        ("fd00:77::1", "fd00:77::1"),
        ("FD00:0077:0:0:0:0:0:1", "fd00:77::1"),
        ("::", "::"),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
        ("::ffff:198.18.0.1", "198.18.0.1"),
    ])
    func parsesAndPrintsCanonicalText(input: String, expected: String) throws {
        let ip = try #require(IPAddress(input))
        #expect(ip.description == expected)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1::2::3", "12345::", "g::1", "1.2.3.4/8", ":::"])
    func rejectsMalformedText(input: String) {
        #expect(IPAddress(input) == nil)
    }

    @Test func ipv4IsStoredMappedLikeTheKernelMaps() throws {
        let ip = try #require(IPAddress("10.1.2.3"))
        #expect(ip.bytes == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3])
        #expect(ip.isIPv4)
        #expect(ip == IPAddress("::ffff:10.1.2.3"))
    }

    @Test func loopbackIsRecognisedInBothFamilies() {
        #expect(IPAddress("127.0.0.53")!.isLoopback)
        #expect(IPAddress("::1")!.isLoopback)
        #expect(!IPAddress("198.18.0.1")!.isLoopback)
        #expect(!IPAddress("::2")!.isLoopback)
    }
}

@Suite struct CIDRParsing {
    @Test func clearsHostBitsSoEqualPrefixesCompareEqual() throws {
        #expect(try CIDR("10.1.2.3/8") == CIDR("10.0.0.0/8"))
        #expect(try CIDR("fd00:77::1/64").description == "fd00:77::/64")
        #expect(try CIDR("198.18.0.1").prefixLength == 32)
    }

    @Test func containsMatchesOnlyItsFamilyAndPrefix() throws {
        let v4 = try CIDR("198.18.0.0/15")
        #expect(v4.contains(IPAddress("198.19.255.1")!))
        #expect(!v4.contains(IPAddress("198.20.0.1")!))
        #expect(!v4.contains(IPAddress("::1")!))
        let v6 = try CIDR("fd00::/8")
        #expect(v6.contains(IPAddress("fd12::5")!))
        #expect(!v6.contains(IPAddress("fe80::1")!))
    }

    @Test func errorsNameTheField() {
        #expect(throws: ValidationError(field: "capture.excludeCIDRs[2]", "\"10.0.0.0/33\": prefix length must be 0 to 32")) {
            try CIDR("10.0.0.0/33", field: "capture.excludeCIDRs[2]")
        }
        #expect(throws: ValidationError.self) { try CIDR("nonsense/8") }
        #expect(throws: ValidationError.self) { try CIDR("::/129") }
        #expect(throws: ValidationError.self) { try CIDR("1.2.3.4/8/9") }
    }
}

@Suite struct EndpointParsing {
    @Test func ipPortAndBracketedIPv6PortParseAndAnythingElseIsRefused() {
        #expect(IPAddress.parseEndpoint("10.0.0.1:53").map { "\($0.address) \($0.port)" } == "10.0.0.1 53")
        #expect(IPAddress.parseEndpoint("[fd00::1]:15008").map { "\($0.address) \($0.port)" } == "fd00::1 15008")
        for bad in ["10.0.0.1", "host.example:80", "[fd00::1]53", "fd00::1]:53", "[fd00::1:53", "10.0.0.1:70000", "10.0.0.1:x", ":80"] {
            #expect(IPAddress.parseEndpoint(bad) == nil, "\(bad)")
        }
    }
}
