import Foundation
import Testing
import WeftCore
import WeftIdentity

@Suite("SPIFFE IDs")
struct SpiffeIDTests {
    @Test func workloadIDParsesIntoNamespaceAndServiceAccount() throws {
        let id = try SpiffeID(parsing: "spiffe://cluster.local/ns/shop/sa/frontend")
        #expect(id.trustDomain.name == "cluster.local")
        #expect(id.segments == ["ns", "shop", "sa", "frontend"])
        #expect(id.kind == .workload(namespace: try NamespaceName("shop"), serviceAccount: try ServiceAccountName("frontend")))
        #expect(id.uri == "spiffe://cluster.local/ns/shop/sa/frontend")
        #expect(id == workloadID())
    }

    @Test func nodeIDIsRecognised() throws {
        let id = try SpiffeID(parsing: "spiffe://cluster.local/node/node-a")
        #expect(id.kind == .node(name: "node-a"))
        #expect(try SpiffeID.node(trustDomain: td, name: "node-a") == id)
    }

    @Test func bareTrustDomainIDNamesTheTrustDomain() throws {
        let id = try SpiffeID(parsing: "spiffe://example.org")
        #expect(id.kind == .trustDomain)
        #expect(id.path == "")
        #expect(id == (try TrustDomain("example.org")).id)
    }

    @Test(arguments: [
        "spiffe://example.org/payments/Web_1.v2",   // valid, but neither Weft shape
        "spiffe://example.org/ns/Shop/sa/web",      // upper case: valid SPIFFE, not a namespace
        "spiffe://example.org/ns/shop/sa",          // incomplete workload shape
        "spiffe://example.org/node/a/b",
    ])
    func validIDsOutsideWeftShapesAreOther(_ uri: String) throws {
        let id = try SpiffeID(parsing: uri)
        #expect(id.kind == .other)
        #expect(id.uri == uri)
    }

    @Test(arguments: [
        ("http://example.org/ns/a/sa/b", "must start with"),
        ("SPIFFE://example.org/x", "must start with"),
        ("spiffe://", "empty"),
        ("spiffe:///ns/a", "empty"),
        ("spiffe://Example.org/x", "upper case"),
        ("spiffe://example.org:8443/x", "port"),
        ("spiffe://user@example.org/x", "user info"),
        ("spiffe://example.org/", "empty segment"),
        ("spiffe://example.org/ns//sa/b", "empty segment"),
        ("spiffe://example.org/ns/./b", "\".\""),
        ("spiffe://example.org/ns/../b", "\"..\""),
        ("spiffe://example.org/a%20b", "percent"),
        ("spiffe://example.org/a?b=c", "query"),
        ("spiffe://example.org/a#frag", "fragment"),
        ("spiffe://example.org/a b", "space"),
        ("spiffe://example.org/caf\u{E9}", "U+E9"),
    ])
    func malformedIDsAreRefusedWithTheRuleTheyBreak(_ uri: String, _ reason: String) {
        let error = #expect(throws: ValidationError.self) { try SpiffeID(parsing: uri, field: "principal") }
        #expect(error?.field == "principal")
        #expect(error?.message.contains(reason) == true, "\(String(describing: error))")
    }

    @Test func overlongIDsAreRefused() {
        let long = "spiffe://example.org/" + String(repeating: "a", count: 2100)
        #expect(throws: ValidationError.self) { try SpiffeID(parsing: long) }
        let longTD = String(repeating: "a", count: 256)
        #expect(throws: ValidationError.self) { try TrustDomain(longTD) }
    }

    @Test func segmentsAreValidatedWhenBuildingAnID() throws {
        #expect(try SpiffeID(trustDomain: td, segments: ["a", "b"]).uri == "spiffe://cluster.local/a/b")
        #expect(throws: ValidationError.self) { try SpiffeID(trustDomain: td, segments: ["a/b"]) }
        #expect(throws: ValidationError.self) { try SpiffeID(trustDomain: td, segments: [".."]) }
        #expect(throws: ValidationError.self) { try SpiffeID(trustDomain: td, segments: [""]) }
    }

    @Test(arguments: ["Node-A", "node_a", "-a", "", String(repeating: "a", count: 64)])
    func nodeIDRefusesNamesThatAreNotDNSLabels(_ name: String) {
        #expect(throws: ValidationError.self) { try SpiffeID.node(trustDomain: td, name: name) }
    }

    @Test func serviceAccountNamesFollowKubernetes() throws {
        #expect(try ServiceAccountName("build.bot-1").rawValue == "build.bot-1")
        for bad in ["", "Build", "a_b", ".a", "a.", "a..b", String(repeating: "a", count: 254)] {
            #expect(throws: ValidationError.self, "\(bad)") { try ServiceAccountName(bad) }
        }
    }

    @Test func idsRoundTripThroughJSONAsTheirURI() throws {
        let id = workloadID()
        let data = try JSONEncoder().encode([id])
        #expect(String(decoding: data, as: UTF8.self) == #"["spiffe:\/\/cluster.local\/ns\/shop\/sa\/frontend"]"#)
        #expect(try JSONDecoder().decode([SpiffeID].self, from: data) == [id])
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([SpiffeID].self, from: Data(#"["spiffe://x/../y"]"#.utf8)) }
    }
}
