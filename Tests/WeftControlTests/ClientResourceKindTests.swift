import Testing
import WeftControlClient
import WeftCore

@Suite("Client: kind names")
struct ClientResourceKindTests {
    @Test("every kind has the plural of the API paths in docs/control-api.md")
    func pluralsMatchTheContract() {
        let plurals = Dictionary(uniqueKeysWithValues: ResourceKind.allCases.map { ($0, $0.plural) })
        #expect(plurals == [
            .namespace: "namespaces", .workload: "workloads", .service: "services",
            .faultInjection: "faultinjections", .httpRoute: "httproutes",
            .authorizationPolicy: "authorizationpolicies", .peerAuthentication: "peerauthentications",
            .destinationRule: "destinationrules",
        ])
        for kind in ResourceKind.allCases { #expect(ResourceKind.forPlural(kind.plural) == kind) }
    }

    @Test("kubectl's short names, singulars, plurals and kinds resolve, case-insensitively",
          arguments: [
              ("ns", ResourceKind.namespace), ("namespace", .namespace), ("Namespaces", .namespace),
              ("svc", .service), ("service", .service), ("Service", .service),
              ("wl", .workload), ("workloads", .workload),
              ("route", .httpRoute), ("routes", .httpRoute), ("HTTPRoute", .httpRoute),
              ("httproutes.gateway.networking.k8s.io", .httpRoute),
              ("ap", .authorizationPolicy), ("authorizationpolicy", .authorizationPolicy),
              ("pa", .peerAuthentication), ("PeerAuthentication", .peerAuthentication),
              ("fault", .faultInjection), ("fi", .faultInjection), ("faultinjections", .faultInjection),
              ("dr", .destinationRule), ("DestinationRule", .destinationRule),
              ("destinationrules.networking.istio.io", .destinationRule),
          ])
    func namesResolve(name: String, kind: ResourceKind) throws {
        #expect(ResourceKind.named(name) == kind)
        #expect(try ResourceKind.resolve(name) == kind)
    }

    @Test("no two kinds share a name")
    func namesAreUnambiguous() {
        let all = ResourceKind.allCases.flatMap(\.names)
        #expect(Set(all).count == all.count)
    }

    @Test("an unknown type is refused with the closest name and the list of types")
    func unknownTypeSuggestsTheClosest() {
        do {
            _ = try ResourceKind.resolve("workloda")
            Issue.record("resolved a misspelt type")
        } catch {
            #expect(error.kind == .usage)
            #expect(error.message.contains("unknown resource type \"workloda\""))
            #expect(error.message.contains("did you mean \"workload"))
            #expect(error.message.contains("services (svc)"))
        }
    }
}
