// weftctl against a real weft-control, both as subprocesses: what an operator
// types, and what they see.
import Foundation
import Testing
import WeftCore

@Suite("weftctl end to end", .serialized)
struct WeftctlEndToEndTests {
    static let shop = WeftctlManifestTests.shop

    /// Runs `body` with a fresh server; stops it and removes its data dir whatever happens.
    static func withServer(_ body: (WeftControlProcess) throws -> Void) throws {
        let server = try WeftControlProcess()
        defer { server.stop() }
        do {
            try body(server)
        } catch {
            throw WeftctlTestError("\(error)\n--- weft-control log\n\(server.log)")
        }
    }

    @Test("apply stores a multi-document file; get shows it as a table, JSON, YAML and names")
    func applyAndGet() throws {
        try Self.withServer { server in
            let dir = try WeftctlTempDir()
            defer { dir.remove() }
            let file = try dir.file("shop.yaml", Self.shop)

            let applied = try weftctl(["apply", "-f", file], server: server)
            #expect(applied.status == 0, "\(applied)")
            #expect(applied.stdout == "namespace/shop created\nworkload/catalog-v1 created\nservice/catalog created\n")

            let again = try weftctl(["apply", "-f", file], server: server)
            #expect(again.stdout == "namespace/shop unchanged\nworkload/catalog-v1 unchanged\nservice/catalog unchanged\n", "\(again)")

            let changed = try weftctl(["apply", "-f", "-"], server: server,
                                      stdin: Self.shop.replacingOccurrences(of: "port: 80,", with: "port: 81,"))
            #expect(changed.stdout == "namespace/shop unchanged\nworkload/catalog-v1 unchanged\nservice/catalog configured\n", "\(changed)")

            let table = try weftctl(["get", "workloads", "-n", "shop"], server: server)
            #expect(table.status == 0, "\(table)")
            let rows = table.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            #expect(rows.first == ["NAME", "NODE", "UNIT/CGROUP", "PORTS", "AGE"])
            #expect(rows.dropFirst().first?.prefix(4) == ["catalog-v1", "node-a", "catalog-v1.service", "8080/http,9090/auto"])

            let wide = try weftctl(["get", "svc", "-A", "-o", "wide"], server: server)
            #expect(wide.stdout.hasPrefix("NAMESPACE"), "\(wide)")
            #expect(wide.stdout.contains("81→http/http"))
            #expect(wide.stdout.contains("app=catalog"))

            let json = try weftctl(["get", "svc", "catalog", "-n", "shop", "-o", "json"], server: server)
            #expect(json.status == 0, "\(json)")
            let service = try JSONValue.parse(json.stdout)
            #expect(service["kind"] == "Service")
            #expect(service["metadata"]?["resourceVersion"]?.stringValue != nil)
            #expect(service["spec"]?["virtualIP"]?.stringValue?.hasPrefix("10.96.") == true)
            #expect(service["spec"]?["ports"]?.arrayValue?.first?["port"] == .int(81))

            let yaml = try weftctl(["get", "wl/catalog-v1", "-n", "shop", "-o", "yaml"], server: server)
            #expect(yaml.stdout.hasPrefix("apiVersion: weft.dev/v1alpha1\nkind: Workload\n"), "\(yaml)")
            #expect(yaml.stdout.contains("version: \"1\""))

            let list = try weftctl(["get", "ns,svc", "-A", "-o", "json"], server: server)
            #expect(try JSONValue.parse(list.stdout)["items"]?.arrayValue?.count == 2)

            let names = try weftctl(["get", "svc,wl", "-n", "shop", "-o", "name"], server: server)
            #expect(names.stdout == "service/catalog\nworkload/catalog-v1\n")

            let ns = try weftctl(["get", "ns"], server: server)
            #expect(ns.stdout.contains("shop   enabled"), "\(ns)")

            // Several kinds in one table listing: one table each, names qualified by kind.
            let all = try weftctl(["get", "all", "-n", "shop"], server: server)
            #expect(all.status == 0, "\(all)")
            #expect(all.stdout.contains("\nworkload/catalog-v1 "), "\(all)")
            #expect(all.stdout.contains("\nservice/catalog "), "\(all)")
            #expect(all.stdout.contains("\n\nNAME"))

            // Global flags go before the subcommand too, as with kubectl.
            let before = try weftctl(["--server", server.url, "get", "svc", "-n", "shop", "-o", "name"], server: server,
                                     environment: ["WEFT_SERVER": "https://127.0.0.1:1"])
            #expect(before.stdout == "service/catalog\n", "\(before)")
        }
    }

    @Test("get -o yaml output can be applied back unchanged")
    func getOutputReapplies() throws {
        try Self.withServer { server in
            #expect(try weftctl(["apply", "-f", "-"], server: server, stdin: Self.shop).status == 0)
            let yaml = try weftctl(["get", "wl,svc", "-n", "shop", "-o", "yaml"], server: server)
            #expect(yaml.stdout.hasPrefix("apiVersion: v1\nkind: List\n"), "\(yaml)")
            let back = try weftctl(["apply", "-f", "-"], server: server, stdin: yaml.stdout)
            #expect(back.status == 0, "\(back)")
            #expect(back.stdout == "workload/catalog-v1 unchanged\nservice/catalog unchanged\n")
        }
    }

    @Test("--dry-run asks the server to check without storing")
    func serverDryRun() throws {
        try Self.withServer { server in
            let result = try weftctl(["apply", "-f", "-", "--dry-run"], server: server, stdin: Self.shop)
            #expect(result.status == 0, "\(result)")
            #expect(result.stdout.contains("service/catalog created (server dry run)"))
            let get = try weftctl(["get", "ns", "shop"], server: server)
            #expect(get.status == 1)
            #expect(get.stderr.contains("does not exist"), "\(get)")
        }
    }

    @Test("a document the server refuses is reported at its place in the file, exit 1, nothing stored")
    func serverRefusalIsLocated() throws {
        try Self.withServer { server in
            let dir = try WeftctlTempDir()
            defer { dir.remove() }
            // Valid locally; only the server knows that namespace ghost does not exist.
            let text = Self.shop + "\n---\n" + """
                apiVersion: weft.dev/v1alpha1
                kind: Service
                metadata: {name: lost, namespace: ghost}
                spec: {selector: {app: lost}, ports: [{port: 80}]}
                """
            let file = try dir.file("shop.yaml", text)
            let result = try weftctl(["apply", "-f", file], server: server)
            #expect(result.status == 1)
            #expect(result.stderr.hasPrefix("error: \(file): document 4: metadata.namespace: namespace \"ghost\" does not exist"), "\(result)")
            #expect(try weftctl(["get", "ns"], server: server).stderr.contains("No resources found"))
        }
    }

    @Test("a locally invalid file is refused before the server is asked")
    func localValidationFirst() throws {
        try Self.withServer { server in
            let result = try weftctl(["apply", "-f", "-"], server: server,
                                     stdin: Self.shop.replacingOccurrences(of: "protocol: http\n  - port", with: "protocol: htp\n  - port"))
            #expect(result.status == 1)
            #expect(result.stderr.hasPrefix("error: stdin: document 2: spec.ports[0].protocol: "), "\(result)")
            #expect(!server.log.contains("apply"))
        }
    }

    @Test("namespace enable creates or updates the Namespace; disable turns mesh off and keeps it")
    func namespaceEnableDisable() throws {
        try Self.withServer { server in
            let enable = try weftctl(["namespace", "enable", "payments"], server: server)
            #expect(enable.status == 0, "\(enable)")
            #expect(enable.stdout == "namespace/payments mesh enabled\n")
            #expect(try weftctl(["namespace", "enable", "payments"], server: server).stdout == "namespace/payments mesh already enabled\n")

            let ns = try JSONValue.parse(try weftctl(["get", "ns", "payments", "-o", "json"], server: server).stdout)
            #expect(ns["spec"]?["mesh"]?["enabled"] == .bool(true))

            let disable = try weftctl(["ns", "disable", "payments"], server: server)
            #expect(disable.stdout == "namespace/payments mesh disabled\n", "\(disable)")
            let table = try weftctl(["get", "ns"], server: server)
            #expect(table.stdout.contains("payments   disabled"), "\(table)")

            let bad = try weftctl(["namespace", "enable", "Bad_Name"], server: server)
            #expect(bad.status == 1)
            #expect(bad.stderr.contains("not a valid namespace name"))
        }
    }

    @Test("node token create prints only the token; -o json adds its expiry")
    func nodeTokenCreate() throws {
        try Self.withServer { server in
            let plain = try weftctl(["node", "token", "create", "--ttl", "1h"], server: server)
            #expect(plain.status == 0, "\(plain)")
            let lines = plain.stdout.split(separator: "\n")
            #expect(lines.count == 1)
            #expect(lines.first?.hasPrefix("weft.") == true)
            #expect(plain.stderr.isEmpty)

            let json = try JSONValue.parse(try weftctl(["node", "token", "create", "-o", "json"], server: server).stdout)
            #expect(json["token"]?.stringValue?.hasPrefix("weft.") == true)
            #expect(json["expiresAt"]?.stringValue != nil)

            let tooShort = try weftctl(["node", "token", "create", "--ttl", "10s"], server: server)
            #expect(tooShort.status == 1)
            #expect(tooShort.stderr.contains("ttlSeconds"), "\(tooShort)")
        }
    }

    @Test("delete by name, by KIND/NAME and by file; a missing object exits 1 unless --ignore-not-found")
    func delete() throws {
        try Self.withServer { server in
            let dir = try WeftctlTempDir()
            defer { dir.remove() }
            let file = try dir.file("shop.yaml", Self.shop)
            #expect(try weftctl(["apply", "-f", file], server: server).status == 0)

            let one = try weftctl(["delete", "svc", "catalog", "-n", "shop"], server: server)
            #expect(one.status == 0, "\(one)")
            #expect(one.stdout == "service \"catalog\" deleted from namespace shop\n")

            let missing = try weftctl(["delete", "svc/catalog", "-n", "shop"], server: server)
            #expect(missing.status == 1)
            #expect(missing.stderr.contains("does not exist"), "\(missing)")
            #expect(try weftctl(["delete", "svc/catalog", "-n", "shop", "--ignore-not-found"], server: server).status == 0)

            // The namespace still holds the workload: the server refuses, the rest goes on.
            let early = try weftctl(["delete", "ns", "shop"], server: server)
            #expect(early.status == 1)
            #expect(early.stderr.contains("still holds"), "\(early)")

            let byFile = try weftctl(["delete", "-f", file, "--ignore-not-found"], server: server)
            #expect(byFile.status == 0, "\(byFile)")
            #expect(byFile.stdout == "workload \"catalog-v1\" deleted from namespace shop\nnamespace \"shop\" deleted\n")
            #expect(try weftctl(["get", "ns"], server: server).stderr == "No resources found\n")
        }
    }

    @Test("get of a missing object exits 1 with the server's message")
    func getMissing() throws {
        try Self.withServer { server in
            let result = try weftctl(["get", "wl", "nope", "-n", "shop"], server: server)
            #expect(result.status == 1)
            #expect(result.stderr.hasPrefix("error: "), "\(result)")
            #expect(result.stderr.contains("does not exist"))
            let empty = try weftctl(["get", "wl", "-n", "shop"], server: server)
            #expect(empty.status == 0)
            #expect(empty.stderr == "No resources found in shop namespace.\n")
        }
    }

    @Test("a wrong token is refused with a hint at admin.token")
    func wrongToken() throws {
        try Self.withServer { server in
            let dir = try WeftctlTempDir()
            defer { dir.remove() }
            let token = try dir.file("token", "not-the-token\n")
            let result = try weftctl(["get", "ns", "--token-file", token], server: server)
            #expect(result.status == 1)
            #expect(result.stderr.hasPrefix("error from server (Unauthorized): "), "\(result)")
            #expect(result.stderr.contains("admin.token"))
        }
    }

    @Test("a CA bundle of another mesh fails the TLS handshake with a hint at the CA bundle")
    func wrongCA() throws {
        try Self.withServer { server in
            let dir = try WeftctlTempDir()
            defer { dir.remove() }
            let ca = try dir.file("other-ca.crt", try foreignCAPEM())
            let result = try weftctl(["get", "ns", "--ca-file", ca], server: server)
            #expect(result.status == 1)
            #expect(result.stderr.contains("does the CA bundle (--ca-file) match this server?"), "\(result)")
        }
    }

    @Test("status shows nodes and workloads; version says the server is reachable")
    func statusAndVersion() throws {
        try Self.withServer { server in
            #expect(try weftctl(["apply", "-f", "-"], server: server, stdin: Self.shop).status == 0)
            let status = try weftctl(["status"], server: server)
            #expect(status.status == 0, "\(status)")
            #expect(status.stdout.contains("No nodes have joined"))
            #expect(status.stdout.contains("WORKLOADS"))
            #expect(status.stdout.contains("catalog-v1"))
            #expect(status.stdout.contains("node node-a has not joined"))
            let json = try JSONValue.parse(try weftctl(["status", "-o", "json"], server: server).stdout)
            #expect(json["workloads"]?.arrayValue?.count == 1)

            let version = try weftctl(["version"], server: server)
            #expect(version.status == 0, "\(version)")
            #expect(version.stdout == "Client Version: weftctl 0.1.0\nServer: \(server.url) reachable (ok)\n")
        }
    }
}
