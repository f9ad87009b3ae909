import Foundation
import Testing
@testable import WeftControl
import WeftCore

/// One refused request: what is sent, and the exact status, error code, field
/// and document the answer must carry.
struct BadApplyInput: Sendable, CustomTestStringConvertible {
    let what: String
    let path: String
    let body: String
    let status: Int
    let code: String
    let field: String?
    let document: Int64?
    /// Words the message must contain, so it says what to check.
    let says: String

    var testDescription: String { what }
}

private func items(_ docs: String...) -> String { #"{"items": [\#(docs.joined(separator: ","))]}"# }

/// The shared server of the table holds Namespace shop and Service first
/// (virtual IP 10.96.0.10), so clashes can be provoked.
let badApplyInputs: [BadApplyInput] = [
    .init(what: "unknown kind", path: "/v1/apply",
          body: items(#"{"apiVersion": "weft.dev/v1alpha1", "kind": "Gadget", "metadata": {"name": "x"}}"#),
          status: 422, code: "Invalid", field: "kind", document: 0, says: "is not a kind of weft.dev/v1alpha1"),
    .init(what: "unknown apiVersion", path: "/v1/apply",
          body: items(#"{"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": {"name": "x"}}"#),
          status: 422, code: "Invalid", field: "apiVersion", document: 0, says: "is not served by Weft"),
    .init(what: "unknown field", path: "/v1/apply",
          body: items(ServerManifests.workload("w").replacingOccurrences(of: #""node": "node-a""#, with: #""nodee": "node-a""#)),
          status: 422, code: "Invalid", field: "spec.nodee", document: 0, says: "did you mean \"node\""),
    .init(what: "empty selector", path: "/v1/apply",
          body: items(ServerManifests.service("s", selector: "{}")),
          status: 422, code: "Invalid", field: "spec.selector", document: 0, says: "at least one label"),
    .init(what: "selector with an invalid label value", path: "/v1/apply",
          body: items(ServerManifests.service("s", selector: #"{"app": "not valid!"}"#)),
          status: 422, code: "Invalid", field: "spec.selector[app]", document: 0, says: "not valid!"),
    .init(what: "virtual IP of another Service", path: "/v1/apply",
          body: items(ServerManifests.service("second", virtualIP: "10.96.0.10")),
          status: 422, code: "Invalid", field: "spec.virtualIP", document: 0, says: "already the virtual IP of Service shop/first"),
    .init(what: "two new Services asking for one virtual IP", path: "/v1/apply",
          body: items(ServerManifests.service("a", virtualIP: "10.96.0.20"), ServerManifests.service("b", virtualIP: "10.96.0.20")),
          status: 422, code: "Invalid", field: "spec.virtualIP", document: 1, says: "already the virtual IP of Service shop/a"),
    .init(what: "virtual IP outside the service CIDR", path: "/v1/apply",
          body: items(ServerManifests.service("s", virtualIP: "192.168.1.10")),
          status: 422, code: "Invalid", field: "spec.virtualIP", document: 0, says: "outside the service CIDR 10.96.0.0/16"),
    .init(what: "invalid regex in a route", path: "/v1/apply",
          body: items(ServerManifests.route("r", pathType: "RegularExpression", path: "/(unclosed")),
          status: 422, code: "Invalid", field: "spec.rules[0].matches[0].path.value", document: 0, says: "regular expression"),
    .init(what: "port out of range", path: "/v1/apply",
          body: items(ServerManifests.service("s", port: 70000)),
          status: 422, code: "Invalid", field: "spec.ports[0].port", document: 0, says: "65535"),
    .init(what: "namespace that does not exist", path: "/v1/apply",
          body: items(ServerManifests.workload("w", namespace: "ghost")),
          status: 422, code: "Invalid", field: "metadata.namespace", document: 0, says: "namespace \"ghost\" does not exist"),
    .init(what: "the second document is the bad one", path: "/v1/apply",
          body: items(ServerManifests.workload("ok"), ServerManifests.workload("bad", node: "Node_A")),
          status: 422, code: "Invalid", field: "spec.node", document: 1, says: "Node_A"),
    .init(what: "the same object twice", path: "/v1/apply",
          body: items(ServerManifests.workload("w"), ServerManifests.workload("w")),
          status: 422, code: "Invalid", field: "metadata.name", document: 1, says: "also document 0"),
    .init(what: "a stale resourceVersion", path: "/v1/apply",
          body: items(ServerManifests.service("first", virtualIP: "10.96.0.10").replacingOccurrences(of: #""namespace": "shop""#, with: #""namespace": "shop", "resourceVersion": "999""#)),
          status: 409, code: "Conflict", field: "metadata.resourceVersion", document: 0, says: "changed by someone else"),
    .init(what: "a resourceVersion for an object that does not exist", path: "/v1/apply",
          body: items(ServerManifests.workload("new", resourceVersion: "3")),
          status: 409, code: "Conflict", field: "metadata.resourceVersion", document: 0, says: "does not exist"),
    .init(what: "malformed JSON", path: "/v1/apply", body: #"{"items": [{"kind": "#,
          status: 400, code: "BadRequest", field: nil, document: nil, says: "not valid JSON"),
    .init(what: "a body that is not an object", path: "/v1/apply", body: "[]",
          status: 400, code: "BadRequest", field: nil, document: nil, says: "{\"items\""),
    .init(what: "a misspelt envelope", path: "/v1/apply", body: #"{"item": []}"#,
          status: 400, code: "BadRequest", field: "item", document: nil, says: "allowed: items"),
    .init(what: "items that is not a list", path: "/v1/apply", body: #"{"items": {}}"#,
          status: 400, code: "BadRequest", field: "items", document: nil, says: "list of resources"),
    .init(what: "a misspelt query parameter", path: "/v1/apply?dryrun=true", body: items(ServerManifests.namespace("x")),
          status: 400, code: "BadRequest", field: "dryrun", document: nil, says: "takes dryRun"),
    .init(what: "dryRun that is not a boolean", path: "/v1/apply?dryRun=yes", body: items(ServerManifests.namespace("x")),
          status: 400, code: "BadRequest", field: "dryRun", document: nil, says: "not true or false"),
    .init(what: "a document that is not an object", path: "/v1/apply", body: #"{"items": [42]}"#,
          status: 422, code: "Invalid", field: "(root)", document: 0, says: "expected an object"),
]

private enum TableServerDirectory {
    nonisolated(unsafe) static var path: String?
}

/// One server for the whole table: every case is refused, so they cannot disturb each other.
private let tableServer = Task { () throws -> InProcessServer in
    let server = try await InProcessServer.start()
    // It lives as long as the test process; its data dir goes when that exits.
    TableServerDirectory.path = server.directory
    atexit { if let path = TableServerDirectory.path { try? FileManager.default.removeItem(atPath: path) } }
    let reply = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.service("first", virtualIP: "10.96.0.10")])
    guard reply.status == 200 else { throw InProcessFailure("setup apply: \(reply)") }
    return server
}

@Suite("Apply")
struct ApplyTests {
    @Test("bad input is refused with the exact status, field and document", arguments: badApplyInputs)
    func badInputIsRefused(_ input: BadApplyInput) async throws {
        let server = try await tableServer.value
        let before = try await server.currentRevision()
        let reply = try await server.request(.POST, input.path, body: input.body)
        #expect(reply.status == input.status, "\(reply)")
        #expect(reply.code == input.code, "\(reply)")
        #expect(reply.field == input.field, "\(reply)")
        #expect(reply.document == input.document, "\(reply)")
        #expect(reply.message.contains(input.says), "\(reply)")
        #expect(try await server.currentRevision() == before, "a refused apply must not write")
    }

    @Test("a multi-document apply with one bad document writes none of them")
    func multiDocumentApplyIsAllOrNothing() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let reply = try await server.apply([
            ServerManifests.namespace("shop"), ServerManifests.workload("catalog-v1"), ServerManifests.service("catalog"),
            ServerManifests.service("broken", selector: "{}"),
        ])
        #expect(reply.status == 422 && reply.document == 3 && reply.field == "spec.selector", "\(reply)")
        #expect(try await server.currentRevision() == 0)
        for plural in ["namespaces", "workloads", "services"] {
            let list = try await server.request(.GET, "/v1/\(plural)")
            #expect(list.json["items"] == [], "\(plural): \(list)")
        }
        // The same documents without the bad one go in as one revision.
        let good = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.workload("catalog-v1"), ServerManifests.service("catalog")])
        #expect(good.status == 200 && good.revision == 1, "\(good)")
        #expect(good.json["items"]?.arrayValue?.allSatisfy { $0["metadata"]?["resourceVersion"] == "1" } == true)
    }

    @Test("dryRun validates and allocates fully but writes nothing")
    func dryRunWritesNothing() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let reply = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.service("catalog")], dryRun: true)
        #expect(reply.status == 200, "\(reply)")
        #expect(reply.revision == 0)
        let service = reply.json["items"]?.arrayValue?.last
        #expect(service?["spec"]?["virtualIP"] == "10.96.0.1", "the dry run shows the address it would allocate")
        #expect(service?["metadata"]?["generation"]?.int64 == 1)
        #expect(try await server.request(.GET, "/v1/namespaces").json["items"] == [])
        #expect(try await server.currentRevision() == 0)

        let bad = try await server.apply([ServerManifests.workload("w", namespace: "ghost")], dryRun: true)
        #expect(bad.status == 422 && bad.field == "metadata.namespace", "\(bad)")
    }

    @Test("server fields are filled in, re-applying is a no-op, and a Service keeps its virtual IP")
    func reapplyKeepsVirtualIPAndRevision() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let first = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.service("catalog"), ServerManifests.service("orders")])
        #expect(first.status == 200, "\(first)")
        let catalog = first.json["items"]?.arrayValue?[1]
        let vip = catalog?["spec"]?["virtualIP"]
        #expect(vip == "10.96.0.1")
        #expect(first.json["items"]?.arrayValue?[2]["spec"]?["virtualIP"] == "10.96.0.2")
        #expect(catalog?["metadata"]?["uid"]?.stringValue?.count == 36)
        #expect(catalog?["metadata"]?["creationTimestamp"]?.stringValue.map(ResourceSyntax.isTimestamp) == true)

        let again = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.service("catalog"), ServerManifests.service("orders")])
        #expect(again.revision == first.revision, "an identical apply must not create a revision")
        #expect(again.json["items"] == first.json["items"])

        // A spec change keeps the address and uid, bumps generation.
        let changed = try await server.apply([ServerManifests.service("catalog", port: 8081)])
        let item = changed.json["items"]?.arrayValue?.first
        #expect(item?["spec"]?["virtualIP"] == vip)
        #expect(item?["metadata"]?["generation"]?.int64 == 2)
        #expect(item?["metadata"]?["uid"] == catalog?["metadata"]?["uid"])
        #expect(item?["metadata"]?["resourceVersion"] == .string(String(changed.revision ?? 0)))

        // `get -o json | apply` round-trips, server fields included.
        let fetched = try await server.request(.GET, "/v1/services/catalog?namespace=shop")
        let roundTrip = try await server.apply([fetched.text])
        #expect(roundTrip.status == 200 && roundTrip.revision == changed.revision, "\(roundTrip)")
    }

    @Test("a stale resourceVersion is a 409 Conflict, on apply and on delete")
    func optimisticConcurrency() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop")])
        let created = try await server.apply([ServerManifests.workload("w")])
        let version = try #require(created.json["items"]?.arrayValue?.first?["metadata"]?["resourceVersion"]?.stringValue)

        // Someone else changes it.
        _ = try await server.apply([ServerManifests.workload("w", address: "198.18.0.2")])
        let stale = try await server.apply([ServerManifests.workload("w", address: "198.18.0.3", resourceVersion: version)])
        #expect(stale.status == 409 && stale.code == "Conflict" && stale.field == "metadata.resourceVersion", "\(stale)")

        let current = try await server.request(.GET, "/v1/workloads/w?namespace=shop")
        let now = try #require(current.json["metadata"]?["resourceVersion"]?.stringValue)
        let fresh = try await server.apply([ServerManifests.workload("w", address: "198.18.0.3", resourceVersion: now)])
        #expect(fresh.status == 200, "\(fresh)")

        let staleDelete = try await server.request(.DELETE, "/v1/workloads/w?namespace=shop&resourceVersion=\(now)")
        #expect(staleDelete.status == 409 && staleDelete.field == "resourceVersion", "\(staleDelete)")
        let delete = try await server.request(.DELETE, "/v1/workloads/w?namespace=shop&resourceVersion=\(fresh.revision!)")
        #expect(delete.status == 200 && delete.revision == fresh.revision! + 1, "\(delete)")
    }

    @Test("get, list and delete by plural; unknown types and missing objects are 404")
    func getListDelete() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.namespace("blog"), ServerManifests.workload("a"),
                                    ServerManifests.workload("b", namespace: "blog"), ServerManifests.route("r", parent: "not-yet")])
        #expect(try await server.request(.GET, "/v1/workloads").json["items"]?.arrayValue?.count == 2)
        let shop = try await server.request(.GET, "/v1/workloads?namespace=shop")
        #expect(shop.json["items"]?.arrayValue?.map { $0["metadata"]?["name"] } == ["a"])
        #expect(shop.revision == 1)
        #expect(try await server.request(.GET, "/v1/httproutes/r?namespace=shop").status == 200,
                "a route may name a Service that does not exist yet")

        let missing = try await server.request(.GET, "/v1/workloads/zzz?namespace=shop")
        #expect(missing.status == 404 && missing.code == "NotFound", "\(missing)")
        let unknown = try await server.request(.GET, "/v1/gadgets")
        #expect(unknown.status == 404 && unknown.message.contains("workloads"), "\(unknown)")
        let noNamespace = try await server.request(.GET, "/v1/workloads/a")
        #expect(noNamespace.status == 400 && noNamespace.field == "namespace", "\(noNamespace)")

        #expect(try await server.request(.DELETE, "/v1/workloads/a?namespace=shop").status == 200)
        #expect(try await server.request(.GET, "/v1/workloads/a?namespace=shop").status == 404)
        #expect(try await server.request(.DELETE, "/v1/workloads/a?namespace=shop").status == 404)
    }

    @Test("a Namespace that still holds resources cannot be deleted")
    func namespaceWithContentsIsKept() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.workload("a")])
        let refused = try await server.request(.DELETE, "/v1/namespaces/shop")
        #expect(refused.status == 409 && refused.message.contains("Workload a"), "\(refused)")
        #expect(try await server.request(.DELETE, "/v1/workloads/a?namespace=shop").status == 200)
        #expect(try await server.request(.DELETE, "/v1/namespaces/shop").status == 200)
    }

    @Test("unknown routes and wrong methods answer JSON errors")
    func unknownRoutes() async throws {
        let server = try await tableServer.value
        let notFound = try await server.request(.GET, "/v2/things", as: .anonymous)
        #expect(notFound.status == 404 && notFound.code == "NotFound", "\(notFound)")
        let method = try await server.request(.PUT, "/v1/apply", body: "{}")
        #expect(method.status == 405 && method.code == "MethodNotAllowed", "\(method)")
        let health = try await server.request(.GET, "/healthz", as: .anonymous)
        #expect(health.status == 200 && health.json["status"] == "ok")
    }
}
