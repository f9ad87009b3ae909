import Foundation
import Testing
@testable import WeftControl
import WeftCore
import WeftIdentity
import X509

@Suite("Authentication, joining and certificates")
struct IdentityTests {
    @Test("admin endpoints need the admin token: none or a wrong one is 401")
    func adminTokenIsRequired() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let none = try await server.request(.GET, "/v1/workloads", as: .anonymous)
        #expect(none.status == 401 && none.code == "Unauthorized", "\(none)")
        let wrong = try await server.request(.GET, "/v1/workloads", as: .bearer(String(repeating: "0", count: 64)))
        #expect(wrong.status == 401 && wrong.message.contains("admin token is wrong"), "\(wrong)")
        let nodeCert = try await server.join("node-a")
        let asNode = try await server.request(.POST, "/v1/apply", body: #"{"items": []}"#, as: .node(nodeCert))
        #expect(asNode.status == 401, "a node credential is not an operator's: \(asNode)")
        #expect(try await server.request(.POST, "/v1/tokens", as: .anonymous).status == 401)
        #expect(try await server.request(.GET, "/v1/status", as: .anonymous).status == 401)
        #expect(try await server.request(.GET, "/v1/workloads").status == 200)
    }

    @Test("node endpoints need the node's own certificate: none is 401, another node's is 403")
    func nodesActOnlyForThemselves() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let a = try await server.join("node-a")
        _ = try await server.join("node-b")

        let anonymous = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .anonymous)
        #expect(anonymous.status == 401, "\(anonymous)")
        let admin = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .admin)
        #expect(admin.status == 401, "the admin token is not a node credential: \(admin)")

        let own = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a))
        #expect(own.status == 200 && own.json["node"] == "node-a", "\(own)")
        let other = try await server.request(.GET, "/v1/nodes/node-b/snapshot", as: .node(a))
        #expect(other.status == 403 && other.code == "Forbidden" && other.message.contains("node-a may not act for node node-b"), "\(other)")
        let status = try await server.request(.PUT, "/v1/nodes/node-b/status", body: Self.status(), as: .node(a))
        #expect(status.status == 403, "\(status)")
        let cert = try await server.request(.POST, "/v1/nodes/node-b/certificates", body: "{}", as: .node(a))
        #expect(cert.status == 403, "\(cert)")
    }

    @Test("a bootstrap token joins one node once, even when two joins race")
    func joinTokenIsSingleUse() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let token = try await server.createToken()
        func joinBody(_ node: String) throws -> String {
            let (_, csr) = try SpiffeID.node(trustDomain: TrustDomain("cluster.local"), name: node).makeKeyAndCSR()
            return JSONValue.object(["token": .string(token), "node": .string(node), "csr": .string(try PEM.encode(csr))]).serialized()
        }
        let first = try await server.request(.POST, "/v1/nodes/join", body: try joinBody("node-a"), as: .anonymous)
        #expect(first.status == 200, "\(first)")
        #expect(first.json["trustDomain"] == "cluster.local")
        #expect(first.json["caBundle"]?.stringValue == server.caPEM)
        let cert = try PEM.decodeCertificate(try #require(first.json["certificate"]?.stringValue))
        #expect(try cert.spiffeID().uri == "spiffe://cluster.local/node/node-a")

        let second = try await server.request(.POST, "/v1/nodes/join", body: try joinBody("node-b"), as: .anonymous)
        #expect(second.status == 401 && second.field == "token" && second.message.contains("already used"), "\(second)")

        // Racing joins with one fresh token: exactly one wins.
        let raced = try await server.createToken()
        let bodies = try (0..<8).map { i -> String in
            let (_, csr) = try SpiffeID.node(trustDomain: TrustDomain("cluster.local"), name: "race-\(i)").makeKeyAndCSR()
            return JSONValue.object(["token": .string(raced), "node": .string("race-\(i)"), "csr": .string(try PEM.encode(csr))]).serialized()
        }
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for body in bodies { group.addTask { try await server.request(.POST, "/v1/nodes/join", body: body, as: .anonymous).status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.filter { $0 == 200 }.count == 1, "\(statuses)")
        #expect(statuses.filter { $0 == 401 }.count == 7, "\(statuses)")
    }

    @Test("join refuses bad tokens, bad node names and CSRs that do not prove their key, without spending the token")
    func joinRefusals() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        let token = try await server.createToken()
        let (key, csr) = try SpiffeID.node(trustDomain: TrustDomain("cluster.local"), name: "node-a").makeKeyAndCSR()
        _ = key
        let pem = try PEM.encode(csr)
        func join(_ fields: JSONObject) async throws -> InProcessServer.Reply {
            try await server.request(.POST, "/v1/nodes/join", body: JSONValue.object(fields).serialized(), as: .anonymous)
        }
        let malformed = try await join(["token": "nope", "node": "node-a", "csr": .string(pem)])
        #expect(malformed.status == 401 && malformed.field == "token", "\(malformed)")
        let unknown = try await join(["token": "weft.aaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "node": "node-a", "csr": .string(pem)])
        #expect(unknown.status == 401 && unknown.message.contains("not known"), "\(unknown)")
        let badName = try await join(["token": .string(token), "node": "Node_A", "csr": .string(pem)])
        #expect(badName.status == 422 && badName.field == "node", "\(badName)")
        let notPEM = try await join(["token": .string(token), "node": "node-a", "csr": "hello"])
        #expect(notPEM.status == 422 && notPEM.field == "csr", "\(notPEM)")
        // A CSR asking for another node's identity.
        let (_, otherCSR) = try SpiffeID.node(trustDomain: TrustDomain("cluster.local"), name: "node-z").makeKeyAndCSR()
        let otherName = try await join(["token": .string(token), "node": "node-a", "csr": .string(try PEM.encode(otherCSR))])
        #expect(otherName.status == 422 && otherName.message.contains("node-z"), "\(otherName)")
        let missing = try await join(["token": .string(token), "node": "node-a"])
        #expect(missing.status == 422 && missing.field == "csr", "\(missing)")
        let extra = try await join(["token": .string(token), "node": "node-a", "csr": .string(pem), "role": "admin"])
        #expect(extra.status == 422 && extra.field == "role", "\(extra)")
        // The token survived all of that.
        let ok = try await join(["token": .string(token), "node": "node-a", "csr": .string(pem)])
        #expect(ok.status == 200, "\(ok)")
    }

    @Test("a node gets workload certificates for its own workloads only, with the workload's SPIFFE ID, chaining to the CA")
    func workloadCertificates() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        _ = try await server.apply([ServerManifests.namespace("shop"), ServerManifests.workload("catalog-v1", node: "node-a", serviceAccount: "catalog")])
        let a = try await server.join("node-a")
        let b = try await server.join("node-b")
        let id = SpiffeID.workload(trustDomain: try TrustDomain("cluster.local"), namespace: try NamespaceName("shop"),
                                   serviceAccount: try ServiceAccountName("catalog"))
        let (_, csr) = try id.makeKeyAndCSR()
        let body = JSONValue.object(["namespace": "shop", "workload": "catalog-v1", "csr": .string(try PEM.encode(csr))]).serialized()

        let refused = try await server.request(.POST, "/v1/nodes/node-b/certificates", body: body, as: .node(b))
        #expect(refused.status == 403 && refused.message.contains("runs on node node-a"), "\(refused)")
        let missing = try await server.request(.POST, "/v1/nodes/node-a/certificates",
                                               body: body.replacingOccurrences(of: "catalog-v1", with: "nope"), as: .node(a))
        #expect(missing.status == 403 && missing.message.contains("does not exist"), "\(missing)")

        let issued = try await server.request(.POST, "/v1/nodes/node-a/certificates", body: body, as: .node(a))
        #expect(issued.status == 200, "\(issued)")
        let certificate = try PEM.decodeCertificate(try #require(issued.json["certificate"]?.stringValue))
        #expect(try certificate.spiffeID() == id)
        let bundle = try TrustBundle(trustDomain: TrustDomain("cluster.local"), pem: try #require(issued.json["caBundle"]?.stringValue))
        #expect(try await bundle.verifyPeer([certificate], role: .server) == id)

        // A CSR for another service account than the workload's is refused.
        let wrong = SpiffeID.workload(trustDomain: try TrustDomain("cluster.local"), namespace: try NamespaceName("shop"),
                                      serviceAccount: try ServiceAccountName("admin"))
        let (_, wrongCSR) = try wrong.makeKeyAndCSR()
        let mismatch = try await server.request(.POST, "/v1/nodes/node-a/certificates", body: JSONValue.object([
            "namespace": "shop", "workload": "catalog-v1", "csr": .string(try PEM.encode(wrongCSR)),
        ]).serialized(), as: .node(a))
        #expect(mismatch.status == 422 && mismatch.field == "csr", "\(mismatch)")
    }

    @Test("an operator-supplied CA placed in the data dir is used, and a readable admin token is refused")
    func operatorCAAndTokenPermissions() async throws {
        let directory = InProcessServer.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ca = try MeshCA.create(trustDomain: TrustDomain("cluster.local"))
        try ca.save(to: directory + "/ca")
        let server = try await InProcessServer.start(directory: directory)
        #expect(server.caPEM == ca.certificatePEM)
        let joined = try await server.join("node-a")
        let credential = try PEM.decodeCertificate(joined.certificatePEM)
        #expect(credential.issuer == ca.certificate.subject)
        await server.stop(keepingData: true)

        chmod(directory + "/admin.token", 0o644)
        await #expect(throws: BootstrapError.self) { _ = try await InProcessServer.start(directory: directory) }
    }

    static func status(applied: Int64 = 0, workloads: String = "[]") -> String {
        #"{"appliedVersion": \#(applied), "weftdVersion": "0.1.0", "workloads": \#(workloads), "certificates": [{"spiffeID": "spiffe://cluster.local/ns/shop/sa/catalog", "notAfter": "2030-01-01T00:00:00Z"}]}"#
    }
}
