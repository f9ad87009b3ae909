import Foundation
import Testing
@testable import WeftControl
import WeftCore
import WeftIdentity

/// docs/openapi.yaml is the machine-readable contract: it must be a valid
/// OpenAPI 3.0 document, and the running server's answers must match its
/// response schemas. The checks run in Python (openapi-spec-validator,
/// openapi-schema-validator, PyYAML), which the test reports as missing rather
/// than skipping silently.
@Suite("OpenAPI contract")
struct OpenAPITests {
    static let specPath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("docs/openapi.yaml").path

    @Test("docs/openapi.yaml is a valid OpenAPI 3.0 document")
    func specIsValid() throws {
        let result = try Self.python(Self.checker, arguments: ["validate-spec", Self.specPath])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test("the server's answers match the response schemas of docs/openapi.yaml, and a drifted answer is caught")
    func responsesMatchTheSpec() async throws {
        let server = try await InProcessServer.start()
        defer { Task { await server.stop() } }
        var samples: [JSONValue] = []
        func record(_ method: String, _ template: String, _ reply: InProcessServer.Reply, valid: Bool = true) {
            samples.append(["method": .string(method), "path": .string(template), "status": .int(Int64(reply.status)),
                            "body": (try? JSONValue.parse(reply.text)) ?? .string(reply.text), "expectValid": .bool(valid)])
        }

        record("get", "/healthz", try await server.request(.GET, "/healthz", as: .anonymous))
        record("post", "/v1/apply", try await server.apply([
            ServerManifests.namespace("shop"), ServerManifests.workload("catalog-v1"), ServerManifests.service("catalog"),
            ServerManifests.route("catalog"),
        ]))
        record("post", "/v1/apply", try await server.apply([ServerManifests.workload("new-one")], dryRun: true))
        record("post", "/v1/apply", try await server.apply([ServerManifests.service("bad", selector: "{}")]))
        record("post", "/v1/apply", try await server.request(.POST, "/v1/apply", body: "{"))
        record("post", "/v1/apply", try await server.apply([ServerManifests.workload("catalog-v1", resourceVersion: "99")]))
        record("post", "/v1/apply", try await server.request(.POST, "/v1/apply", body: "{}", as: .anonymous))
        record("get", "/v1/{plural}", try await server.request(.GET, "/v1/workloads?namespace=shop"))
        record("get", "/v1/{plural}", try await server.request(.GET, "/v1/gadgets"))
        record("get", "/v1/{plural}/{name}", try await server.request(.GET, "/v1/services/catalog?namespace=shop"))
        record("get", "/v1/{plural}/{name}", try await server.request(.GET, "/v1/namespaces/shop"))
        record("get", "/v1/{plural}/{name}", try await server.request(.GET, "/v1/services/nope?namespace=shop"))
        record("get", "/v1/{plural}/{name}", try await server.request(.GET, "/v1/services/catalog"))
        record("post", "/v1/tokens", try await server.request(.POST, "/v1/tokens", body: #"{"ttlSeconds": 600}"#))
        record("post", "/v1/tokens", try await server.request(.POST, "/v1/tokens", body: #"{"ttlSeconds": 1}"#))

        let a = try await server.join("node-a")
        let token = try await server.createToken()
        let (_, csr) = try SpiffeID.node(trustDomain: TrustDomain("cluster.local"), name: "node-b").makeKeyAndCSR()
        let join = JSONValue.object(["token": .string(token), "node": "node-b", "csr": .string(try PEM.encode(csr))]).serialized()
        record("post", "/v1/nodes/join", try await server.request(.POST, "/v1/nodes/join", body: join, as: .anonymous))
        record("post", "/v1/nodes/join", try await server.request(.POST, "/v1/nodes/join", body: join, as: .anonymous))

        let snapshot = try await server.request(.GET, "/v1/nodes/node-a/snapshot", as: .node(a))
        record("get", "/v1/nodes/{node}/snapshot", snapshot)
        record("get", "/v1/nodes/{node}/snapshot", try await server.request(.GET, "/v1/nodes/node-b/snapshot", as: .node(a)))
        record("get", "/v1/nodes/{node}/snapshot", try await server.request(.GET, "/v1/nodes/node-a/snapshot"))
        let reported = #"[{"namespace": "shop", "name": "cart.service", "cgroup": "/sys/fs/cgroup/weft.slice/weft-shop.slice/cart.service", "captured": false, "reason": "no process", "netns": "node"}]"#
        record("put", "/v1/nodes/{node}/status", try await server.request(.PUT, "/v1/nodes/node-a/status",
                                                                           body: IdentityTests.status(applied: 1, workloads: reported), as: .node(a)))
        record("put", "/v1/nodes/{node}/status", try await server.request(.PUT, "/v1/nodes/node-a/status", body: "{}", as: .node(a)))
        let id = SpiffeID.workload(trustDomain: try TrustDomain("cluster.local"), namespace: try NamespaceName("shop"),
                                   serviceAccount: try ServiceAccountName("catalog"))
        let (_, workloadCSR) = try id.makeKeyAndCSR()
        let certBody = JSONValue.object(["namespace": "shop", "workload": "catalog-v1", "csr": .string(try PEM.encode(workloadCSR))]).serialized()
        record("post", "/v1/nodes/{node}/certificates", try await server.request(.POST, "/v1/nodes/node-a/certificates", body: certBody, as: .node(a)))
        record("post", "/v1/nodes/{node}/certificates", try await server.request(.POST, "/v1/nodes/node-a/certificates",
                                                                                  body: certBody.replacingOccurrences(of: "catalog-v1", with: "cart.service"), as: .node(a)))
        record("get", "/v1/status", try await server.request(.GET, "/v1/status"))
        record("delete", "/v1/{plural}/{name}", try await server.request(.DELETE, "/v1/namespaces/shop"))
        record("delete", "/v1/{plural}/{name}", try await server.request(.DELETE, "/v1/httproutes/catalog?namespace=shop"))

        // Drift the checker must catch: a snapshot without its version, a
        // workload with a field the spec does not know, an error with a code
        // outside the contract, a status the operation does not declare.
        var drifted = try #require(snapshot.json.objectValue)
        drifted["version"] = nil
        record("get", "/v1/nodes/{node}/snapshot", .init(status: 200, text: JSONValue.object(drifted).serialized()), valid: false)
        record("get", "/v1/nodes/{node}/snapshot", .init(status: 200, text: snapshot.text.replacingOccurrences(of: #""serviceAccount""#, with: #""extra":1,"serviceAccount""#)), valid: false)
        record("get", "/v1/{plural}", .init(status: 404, text: #"{"error": {"code": "Missing", "message": "x"}}"#), valid: false)
        record("get", "/v1/status", .init(status: 418, text: #"{"error": {"code": "Internal", "message": "x"}}"#), valid: false)

        let file = NSTemporaryDirectory() + "weft-openapi-samples-\(UUID().uuidString).json"
        try JSONValue.array(samples).serialized().write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let result = try Self.python(Self.checker, arguments: ["check-responses", Self.specPath, file])
        #expect(result.status == 0, "\(result.output)")
        print(result.output.split(separator: "\n").last ?? "")
    }

    // MARK: Python

    static func python(_ script: String, arguments: [String]) throws -> (status: Int32, output: String) {
        let path = NSTemporaryDirectory() + "weft-openapi-check-\(UUID().uuidString).py"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", path] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static let checker = #"""
    import json, sys
    try:
        import yaml
        from openapi_spec_validator import validate as validate_spec
        from openapi_schema_validator import OAS30Validator, oas30_format_checker
    except ImportError as e:
        print(f"missing Python module: {e.name}; run: pip install openapi-spec-validator pyyaml")
        sys.exit(2)

    def load(path):
        with open(path) as f:
            return yaml.safe_load(f)

    def resolve(node, spec, depth=0):
        """Inlines every local $ref (the spec has no recursive schemas)."""
        if depth > 50:
            raise RuntimeError("$ref nesting too deep")
        if isinstance(node, dict):
            if "$ref" in node:
                target = spec
                for part in node["$ref"].lstrip("#/").split("/"):
                    target = target[part]
                return resolve(target, spec, depth + 1)
            return {k: resolve(v, spec, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v, spec, depth) for v in node]
        return node

    def check_responses(spec_path, samples_path):
        spec = load(spec_path)
        with open(samples_path) as f:
            samples = json.load(f)
        problems = []
        for i, s in enumerate(samples):
            where = f'#{i} {s["method"].upper()} {s["path"]} -> {s["status"]}'
            errors = []
            operation = spec["paths"].get(s["path"], {}).get(s["method"])
            if operation is None:
                errors.append("no such operation in the spec")
            else:
                response = operation["responses"].get(str(s["status"])) or operation["responses"].get("default")
                if response is None:
                    errors.append(f'status {s["status"]} is not declared (declared: {", ".join(operation["responses"])})')
                else:
                    response = resolve(response, spec)
                    schema = response.get("content", {}).get("application/json", {}).get("schema")
                    if schema is None:
                        errors.append("the response declares no JSON schema")
                    else:
                        validator = OAS30Validator(schema, format_checker=oas30_format_checker)
                        errors += [f'{"/".join(map(str, e.absolute_path)) or "(root)"}: {e.message}' for e in validator.iter_errors(s["body"])]
            if s["expectValid"] and errors:
                problems.append(f"{where}: the server's answer does not match the spec: " + "; ".join(errors[:5]) + f"\n    body: {json.dumps(s['body'])[:600]}")
            if not s["expectValid"] and not errors:
                problems.append(f"{where}: a deliberately drifted answer was accepted; the check is too loose")
        if problems:
            print("\n".join(problems))
            sys.exit(1)
        print(f"{len(samples)} answers checked against {spec_path}")

    if sys.argv[1] == "validate-spec":
        validate_spec(load(sys.argv[2]))
        print("valid OpenAPI 3.0")
    else:
        check_responses(sys.argv[2], sys.argv[3])
    """#
}
