// weftctl's reading of YAML manifests, through the real binary: `apply
// --dry-run=client -o json` converts and validates locally and sends nothing,
// so no server is needed.
import Foundation
import Testing
import WeftCore

@Suite("weftctl: YAML manifests")
struct WeftctlManifestTests {
    static let shop = """
        # The shop namespace and its catalog.
        apiVersion: weft.dev/v1alpha1
        kind: Namespace
        metadata:
          name: shop
        spec:
          mesh:
            enabled: true
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Workload
        metadata:
          name: catalog-v1
          namespace: shop
          labels:
            app: catalog
            version: "1"
          annotations:
            port: "8080"
            answer: yes
            switch: on
            when: 2025-01-31
            ratio: 1:30
            empty: ""
        spec:
          node: node-a
          unit: catalog-v1.service
          ports:
          - name: http
            port: 8080
            protocol: http
          - port: 0x2382
        ---
        apiVersion: weft.dev/v1alpha1
        kind: Service
        metadata: {name: catalog, namespace: shop}
        spec:
          selector: {app: catalog}
          ports: [{name: http, port: 80, targetPort: http, protocol: http}]
        """

    /// The List weftctl printed, parsed back.
    static func converted(_ result: WeftctlResult) throws -> [JSONValue] {
        guard result.status == 0 else { throw WeftctlTestError("weftctl failed:\n\(result)") }
        let value = try JSONValue.parse(result.stdout)
        // One object prints as itself, several as a List, as in kubectl.
        guard value["kind"] == "List" else { return [value] }
        guard let items = value["items"]?.arrayValue else { throw WeftctlTestError("a List without items:\n\(result.stdout)") }
        return items
    }

    @Test("a multi-document file becomes one object per document, in order")
    func multiDocumentFile() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        let file = try dir.file("shop.yaml", Self.shop)
        let items = try Self.converted(try weftctl(["apply", "-f", file, "--dry-run=client", "-o", "json"]))
        #expect(items.map { $0["kind"] } == ["Namespace", "Workload", "Service"])
        #expect(items[2]["metadata"]?["name"] == "catalog")
    }

    @Test("types survive: integers stay integers, quoted numbers stay strings, only true/false are booleans")
    func scalarTypesArePreserved() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        let items = try Self.converted(try weftctl(["apply", "-f", try dir.file("shop.yaml", Self.shop), "--dry-run=client", "-o", "json"]))
        #expect(items[0]["spec"]?["mesh"]?["enabled"] == .bool(true))
        let workload = items[1]
        #expect(workload["spec"]?["ports"]?.arrayValue?[0]["port"] == .int(8080))
        #expect(workload["spec"]?["ports"]?.arrayValue?[1]["port"] == .int(9090))
        #expect(workload["metadata"]?["labels"]?["version"] == .string("1"))
        let annotations = workload["metadata"]?["annotations"]
        #expect(annotations?["port"] == .string("8080"))
        // YAML 1.2 core schema: yes/on, dates and sexagesimals are strings, as JSON would read them.
        #expect(annotations?["answer"] == .string("yes"))
        #expect(annotations?["switch"] == .string("on"))
        #expect(annotations?["when"] == .string("2025-01-31"))
        #expect(annotations?["ratio"] == .string("1:30"))
        #expect(annotations?["empty"] == .string(""))
    }

    @Test("-o yaml quotes strings a YAML reader would take for numbers or booleans, and reads back the same")
    func yamlOutputRoundTrips() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        let file = try dir.file("shop.yaml", Self.shop)
        let yaml = try weftctl(["apply", "-f", file, "--dry-run=client", "-o", "yaml"])
        #expect(yaml.status == 0, "\(yaml)")
        #expect(yaml.stdout.contains("version: \"1\""))
        #expect(yaml.stdout.contains("port: \"8080\""))
        #expect(yaml.stdout.contains("answer: \"yes\""))
        #expect(yaml.stdout.contains("port: 8080\n"))
        let direct = try Self.converted(try weftctl(["apply", "-f", file, "--dry-run=client", "-o", "json"]))
        let again = try Self.converted(try weftctl(["apply", "-f", "-", "--dry-run=client", "-o", "json"], stdin: yaml.stdout))
        #expect(again == direct)
    }

    @Test("a quoted number where an integer belongs fails locally with file, document and field, exit 1")
    func quotedPortIsRefused() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        let file = try dir.file("bad.yaml", Self.shop.replacingOccurrences(of: "port: 80,", with: "port: \"80\","))
        let result = try weftctl(["apply", "-f", file, "--dry-run=client"])
        #expect(result.status == 1)
        #expect(result.stderr == "error: \(file): document 3: spec.ports[0].port: expected an integer, found the string \"80\"\n")
        #expect(result.stdout.isEmpty)
    }

    @Test("a number where a string belongs names the field")
    func unquotedNumberLabelIsRefused() throws {
        let result = try weftctl(["apply", "-f", "-", "--dry-run=client"], stdin: Self.shop.replacingOccurrences(of: "version: \"1\"", with: "version: 1"))
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: stdin: document 2: metadata.labels[version]: expected a string, found the number 1"), "\(result)")
    }

    @Test("every invalid document is reported in one run")
    func everyProblemIsReported() throws {
        let text = Self.shop
            .replacingOccurrences(of: "node: node-a", with: "nodes: node-a")
            .replacingOccurrences(of: "kind: Service", with: "kind: Servce")
        let result = try weftctl(["apply", "-f", "-", "--dry-run=client"], stdin: text)
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 2, "\(result)")
        #expect(lines.first?.hasPrefix("error: stdin: document 2: spec.nodes: unknown field; did you mean \"node\"?") == true)
        #expect(lines.last?.hasPrefix("stdin: document 3: kind: \"Servce\" is not a kind of weft.dev/v1alpha1") == true)
    }

    @Test("document numbers count empty documents, as the file reads")
    func emptyDocumentsAreCounted() throws {
        let parts = Self.shop.components(separatedBy: "---\n")
        let text = parts[0] + "---\n---\n# nothing here\n---\n" + parts[2].replacingOccurrences(of: "port: 80,", with: "port: 70000,")
        let result = try weftctl(["apply", "-f", "-", "--dry-run=client"], stdin: text)
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: stdin: document 4: spec.ports[0].port: "), "\(result)")
    }

    @Test("a YAML syntax error gives the document, line and column")
    func syntaxError() throws {
        let text = Self.shop + "\n---\nkind: Namespace\nmetadata:\n  name: [unclosed\n"
        let result = try weftctl(["apply", "-f", "-", "--dry-run=client"], stdin: text)
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: stdin: document 4: YAML syntax error at line "), "\(result)")
    }

    @Test("a key given twice in one mapping is refused")
    func duplicateKey() throws {
        let text = "apiVersion: weft.dev/v1alpha1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n"
        let result = try weftctl(["apply", "-f", "-", "--dry-run=client"], stdin: text)
        #expect(result.status == 1)
        #expect(result.stderr.contains("duplicate key \"name\""), "\(result)")
    }

    @Test("anchors, aliases and merge keys are expanded")
    func anchorsAndMerges() throws {
        let text = """
            apiVersion: weft.dev/v1alpha1
            kind: Workload
            metadata:
              name: a
              namespace: shop
              labels: &labels {app: catalog, tier: web}
            spec:
              node: node-a
              unit: a.service
              ports:
              - &http {name: http, port: 8080, protocol: http}
              - <<: *http
                name: admin
                port: 8081
            """
        let items = try Self.converted(try weftctl(["apply", "-f", "-", "--dry-run=client", "-o", "json"], stdin: text))
        let ports = items[0]["spec"]?["ports"]?.arrayValue ?? []
        #expect(ports.count == 2)
        #expect(ports[1] == ["name": "admin", "port": 8081, "protocol": "http"])
    }

    @Test("a JSON file is read too, and -n fills in missing namespaces")
    func jsonAndNamespaceFlag() throws {
        let json = #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Service", "metadata": {"name": "catalog"}, "spec": {"selector": {"app": "catalog"}, "ports": [{"port": 80}]}}"#
        let items = try Self.converted(try weftctl(["apply", "-f", "-", "-n", "shop", "--dry-run=client", "-o", "json"], stdin: json))
        #expect(items[0]["metadata"]?["namespace"] == "shop")
    }

    @Test("-f with a directory reads its .yaml, .yml and .json files in name order")
    func directory() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        let parts = Self.shop.components(separatedBy: "---\n")
        _ = try dir.file("10-namespace.yaml", parts[0])
        _ = try dir.file("20-workload.yml", parts[1])
        _ = try dir.file("30-service.yaml", parts[2])
        _ = try dir.file("README.md", "not a manifest")
        let result = try weftctl(["apply", "-f", dir.path, "--dry-run=client"])
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout == "namespace/shop valid (client dry run)\nworkload/catalog-v1 valid (client dry run)\nservice/catalog valid (client dry run)\n")
    }

    @Test("a missing file, an empty file and a missing -f fail with what to fix")
    func fileProblems() throws {
        let missing = try weftctl(["apply", "-f", "/nonexistent/shop.yaml"])
        #expect(missing.status == 1)
        #expect(missing.stderr == "error: /nonexistent/shop.yaml: no such file\n")
        let empty = try weftctl(["apply", "-f", "-"], stdin: "# nothing\n")
        #expect(empty.status == 1)
        #expect(empty.stderr.contains("no objects passed to apply"))
        let noFlag = try weftctl(["apply"])
        #expect(noFlag.status == 64)
        #expect(noFlag.stderr.contains("-f is required"))
    }
}

@Suite("weftctl: commands without a server")
struct WeftctlOfflineTests {
    @Test("an unknown resource type exits 1 naming the types, before any connection")
    func unknownType() throws {
        let result = try weftctl(["get", "pods"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: unknown resource type \"pods\""))
        #expect(result.stderr.contains("workloads (wl)"))
    }

    @Test("a missing CA bundle says which file and how to point at another")
    func missingCABundle() throws {
        let result = try weftctl(["get", "ns"], environment: ["WEFT_CA_FILE": "/nonexistent/ca.crt"])
        #expect(result.status == 1)
        #expect(result.stderr == "error: cannot read the CA bundle /nonexistent/ca.crt (no such file) — check WEFT_CA_FILE; weft-control writes it to <data-dir>/ca/ca.crt\n")
    }

    @Test("a server that is not running is reported as such, exit 1, no backtrace")
    func serverDown() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        let ca = try dir.file("ca.crt", try foreignCAPEM())
        let token = try dir.file("admin.token", "x\n")
        let port = try weftctlUnusedPort()
        let result = try weftctl(["get", "ns", "--server", "https://127.0.0.1:\(port)", "--ca-file", ca, "--token-file", token])
        #expect(result.status == 1)
        #expect(result.stderr == "error: cannot reach weft-control at https://127.0.0.1:\(port): connection refused — is it running, and is --server right?\n")
    }

    @Test("flags win over the environment, which wins over the config file")
    func settingPrecedence() throws {
        let dir = try WeftctlTempDir()
        defer { dir.remove() }
        _ = try dir.file("config", "server: https://127.0.0.1:1\ncaFile: from-config.crt\n")
        let config = dir.path + "/config"
        // The CA file named by the config (relative to it) is the one reported missing.
        let fromFile = try weftctl(["get", "ns", "--config", config])
        #expect(fromFile.stderr.contains("cannot read the CA bundle \(dir.path)/from-config.crt"), "\(fromFile)")
        #expect(fromFile.stderr.contains("check caFile in \(config)"))
        let fromEnv = try weftctl(["get", "ns", "--config", config], environment: ["WEFT_CA_FILE": "/env/ca.crt"])
        #expect(fromEnv.stderr.contains("/env/ca.crt"))
        let fromFlag = try weftctl(["get", "ns", "--config", config, "--ca-file", "/flag/ca.crt"], environment: ["WEFT_CA_FILE": "/env/ca.crt"])
        #expect(fromFlag.stderr.contains("/flag/ca.crt"))
        _ = try dir.file("bad", "sever: x\n")
        let typo = try weftctl(["get", "ns", "--config", dir.path + "/bad"])
        #expect(typo.status == 1)
        #expect(typo.stderr.contains("sever: unknown key (allowed: server, caFile, tokenFile, namespace)"))
    }

    @Test("version --client prints the client version without a server")
    func clientVersion() throws {
        let result = try weftctl(["version", "--client"])
        #expect(result.status == 0)
        #expect(result.stdout == "Client Version: weftctl 0.1.0\n")
    }

    @Test("completion prints a script for bash, zsh and fish", arguments: ["bash", "zsh", "fish"])
    func completion(shell: String) throws {
        let result = try weftctl(["completion", shell])
        #expect(result.status == 0)
        #expect(result.stdout.contains("weftctl"))
        #expect(result.stdout.contains("apply"))
    }

    @Test("the capture subcommand is still there")
    func captureHelp() throws {
        let result = try weftctl(["capture", "--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("--admin"))
    }

    @Test("--ttl must be a duration", arguments: ["1x", "h", "-5m", "0s"])
    func badTTL(ttl: String) throws {
        let result = try weftctl(["node", "token", "create", "--ttl", ttl])
        #expect(result.status == 64)
        #expect(result.stderr.contains("--ttl"))
    }

    @Test("delete needs names or -f")
    func deleteNeedsTargets() throws {
        let result = try weftctl(["delete", "svc"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("name the services to delete") || result.stderr.contains("name what to delete"))
    }
}
