import Foundation
import Testing
import WeftIdentity
import WeftTelemetry
@testable import WeftProxy

@Suite("Baggage on a CONNECT: the source's labels as the destination reads them")
struct BaggageTests {
    /// What the decoder read with Foundation before it read bytes: the reference it must match,
    /// but for a member that starts with `;` (the old one trapped on `;` alone, and took the
    /// property of `;x=1` for the member).
    static func foundationDecode(_ header: String) -> [String: String] {
        var out: [String: String] = [:]
        for member in header.split(separator: ",").prefix(32) {
            guard let kv = member.split(separator: ";", maxSplits: 1).first else { continue }
            guard let eq = kv.firstIndex(of: "=") else { continue }
            let key = kv[..<eq].trimmingCharacters(in: .whitespaces)
            let value = kv[kv.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            out[key] = value.removingPercentEncoding ?? value
        }
        return out
    }

    static let headers = [
        "k8s.namespace.name=shop,k8s.workload.name=frontend,app=frontend,version=v1,service.name=frontend,service.version=v1",
        " app = web ,\tversion=\tv2\t, service.name=web;prop=1;other",
        "app=caf%C3%A9,version=100%25,service.name=a%2Cb",
        "app=bad%2,version=bad%zz,service.name=%,k8s.workload.name=%FF%FE",
        ",,app=x,,=empty-key,novalue,k=,=",
        (0..<40).map { "k\($0)=v\($0)" }.joined(separator: ","),
        "", ";", "a=b=c", "app=%41%42%43",
    ]

    @Test func decodingMatchesFoundationsTrimmingAndPercentDecodingOnEveryShape() {
        for h in Self.headers {
            #expect(Baggage.decode(h) == Self.foundationDecode(h), "\(h)")
        }
    }

    @Test func aMemberMadeOnlyOfPropertiesIsSkippedNotATrap() {
        // A peer's `baggage: ;` used to take the destination weftd down (an index out of range),
        // and `;x=1` was read as the member `x=1`: what follows `;` is a property, never a member.
        #expect(Baggage.decode(";") == [:])
        #expect(Baggage.decode("app=web,;x=1,;") == ["app": "web"])
    }

    @Test func theFirst32MembersAreReadAndTheRestIgnored() {
        let decoded = Baggage.decode(Self.headers[5])
        #expect(decoded.count == 32)
        #expect(decoded["k31"] == "v31")
        #expect(decoded["k32"] == nil)
    }

    @Test func whatTheSourceEncodesTheDestinationReadsBack() throws {
        let p = PeerLabels(workload: "front end", namespace: "shop", principal: "spiffe://td/ns/shop/sa/fe", app: "café",
                           version: "v1,2", canonicalService: "front", canonicalRevision: "r;1")
        let read = Baggage.sourceLabels(peer: try SpiffeID(parsing: "spiffe://td/ns/shop/sa/fe"), baggage: Baggage.encode(p))
        #expect(read == p)
    }

    /// What the destination reads from `peer`'s certificate and baggage naming workload `fe` of `shop`.
    static func read(peer: String) throws -> PeerLabels {
        let sent = PeerLabels(workload: "fe", namespace: "shop", principal: "x", app: "a", version: "v",
                              canonicalService: "s", canonicalRevision: "r")
        return Baggage.sourceLabels(peer: try SpiffeID(parsing: peer), baggage: Baggage.encode(sent))
    }

    @Test func labelsNamingAnotherNamespaceThanTheCertificateAreNotBelieved() throws {
        let read = try Self.read(peer: "spiffe://td/ns/kube-system/sa/fe")
        #expect(read.namespace == "kube-system")
        #expect(read.workload == "unknown")
        #expect(read.principal == "spiffe://td/ns/kube-system/sa/fe")
    }

    @Test func aPeerWhoseIdentityIsNoWorkloadsIsReportedUnknownByItsPrincipal() throws {
        let read = try Self.read(peer: "spiffe://td/node/a")
        #expect(read.principal == "spiffe://td/node/a")
        #expect(read.namespace == "unknown")
        #expect(read.workload == "unknown")
    }
}
