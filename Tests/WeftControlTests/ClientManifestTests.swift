import Testing
import WeftControlClient
import WeftCore

@Suite("Client: local manifest validation")
struct ClientManifestTests {
    static let namespace: JSONValue = [
        "apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": ["name": "shop"],
        "spec": ["mesh": ["enabled": true]],
    ]

    static func service(name: String = "catalog", namespace: String? = "shop", port: JSONValue = 80) -> JSONValue {
        var metadata: JSONObject = ["name": .string(name)]
        if let namespace { metadata["namespace"] = .string(namespace) }
        return [
            "apiVersion": "weft.dev/v1alpha1", "kind": "Service", "metadata": .object(metadata),
            "spec": ["selector": ["app": "catalog"], "ports": [["name": "http", "port": port, "protocol": "http"]]],
        ]
    }

    static func docs(_ values: [JSONValue], source: String = "shop.yaml") -> [ManifestDocument] {
        values.enumerated().map { ManifestDocument(source: source, number: $0.offset + 1, value: $0.element) }
    }

    @Test("valid documents pass unchanged")
    func validDocumentsPass() throws {
        let docs = Self.docs([Self.namespace, Self.service()])
        #expect(try Manifest.validate(docs) == docs)
    }

    @Test("an invalid document is reported as FILE: document N: field: message")
    func errorNamesFileDocumentAndField() {
        let docs = Self.docs([Self.namespace, Self.service(port: "80")])
        do {
            _ = try Manifest.validate(docs)
            Issue.record("accepted a string port")
        } catch {
            #expect(error.description == "shop.yaml: document 2: spec.ports[0].port: expected an integer, found the string \"80\"")
        }
    }

    @Test("every invalid document is reported, not only the first")
    func everyProblemIsReported() {
        var bad: JSONValue = Self.service(name: "b")
        if case .object(var o) = bad { o["spex"] = [:]; bad = .object(o) }
        let docs = Self.docs([Self.service(port: "80"), Self.namespace, bad])
        do {
            _ = try Manifest.validate(docs)
            Issue.record("accepted invalid documents")
        } catch {
            #expect(error.problems.count == 2)
            #expect(error.problems.map(\.location) == ["shop.yaml: document 1", "shop.yaml: document 3"])
            #expect(error.problems[1].field == "spex")
            #expect(error.problems[1].message.contains("did you mean \"spec\"?"))
        }
    }

    @Test("stdin is called stdin")
    func stdinIsNamed() {
        let docs = Self.docs([Self.service(port: -1)], source: "-")
        #expect(throws: ManifestError.self) { try Manifest.validate(docs) }
        do { _ = try Manifest.validate(docs) } catch {
            #expect(error.description.hasPrefix("stdin: document 1: spec.ports[0].port: "))
        }
    }

    @Test("-n fills in the namespace of documents without one")
    func namespaceFlagFillsIn() throws {
        let docs = Self.docs([Self.service(namespace: nil)])
        let out = try Manifest.validate(docs, namespace: try NamespaceName("shop"))
        #expect(out[0].value["metadata"]?["namespace"] == "shop")
    }

    @Test("a namespaced document without a namespace and without -n is refused")
    func namespaceIsRequired() {
        do {
            _ = try Manifest.validate(Self.docs([Self.service(namespace: nil)]))
            Issue.record("accepted a Service without a namespace")
        } catch {
            #expect(error.problems.first?.field == "metadata.namespace")
        }
    }

    @Test("a document in another namespace than -n is refused, as kubectl does")
    func namespaceMismatchIsRefused() {
        let shop = try! NamespaceName("shop")
        do {
            _ = try Manifest.validate(Self.docs([Self.service(namespace: "other")]), namespace: shop)
            Issue.record("accepted a namespace mismatch")
        } catch {
            #expect(error.description.contains("metadata.namespace: \"other\" does not match --namespace \"shop\""))
        }
    }

    @Test("the same object twice in one apply is refused, naming the first")
    func duplicatesAreRefused() {
        do {
            _ = try Manifest.validate(Self.docs([Self.service(), Self.namespace, Self.service()]))
            Issue.record("accepted a duplicate")
        } catch {
            #expect(error.description.hasPrefix("shop.yaml: document 3: metadata.name: Service \"catalog\" in namespace shop is also shop.yaml: document 1"))
        }
    }

    @Test("a kind: List is expanded, and errors inside it carry items[i]")
    func listsAreExpanded() throws {
        let list: JSONValue = ["apiVersion": "v1", "kind": "List", "items": [Self.namespace, Self.service(port: 0)]]
        let expanded = try Manifest.expandLists(Self.docs([list]))
        #expect(expanded.count == 2)
        #expect(expanded[1].listPath == "items[1]")
        do {
            _ = try Manifest.validate(expanded)
            Issue.record("accepted port 0")
        } catch {
            #expect(error.description.hasPrefix("shop.yaml: document 1: items[1].spec.ports[0].port: "))
        }
    }

    @Test("the server's complaint about document D is placed in the user's file")
    func serverErrorsAreLocated() {
        let docs = Self.docs([Self.namespace, Self.service()], source: "a.yaml")
        let error = ControlError(kind: .rejected, status: 422, code: "Invalid", message: "overlaps service x",
                                 field: "spec.virtualIP", document: 1)
        #expect(Manifest.locate(error, in: docs)?.description == "a.yaml: document 2: spec.virtualIP: overlaps service x")
        #expect(Manifest.locate(ControlError(kind: .rejected, message: "m", document: 7), in: docs) == nil)
    }
}
