import WeftCore

/// Every refusal of the control API, in the contract's shape
/// (`{"error": {"code", "message", "field"?, "document"?}}`, docs/control-api.md).
///
/// The message says what was wrong and what to check; `field` is the full path
/// into the document (`spec.ports[0].port`) and `document` the index of the
/// document in a multi-document apply, so `weftctl` can point at the line.
public struct APIError: Error, CustomStringConvertible, Sendable, Equatable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public let status: Int

        /// Malformed JSON, or a request the API cannot read at all (bad query, wrong envelope).
        public static let badRequest = Code(name: "BadRequest", status: 400)
        /// No credential, or one that does not verify.
        public static let unauthorized = Code(name: "Unauthorized", status: 401)
        /// A valid credential for the wrong thing (another node's snapshot or workload).
        public static let forbidden = Code(name: "Forbidden", status: 403)
        public static let notFound = Code(name: "NotFound", status: 404)
        public static let methodNotAllowed = Code(name: "MethodNotAllowed", status: 405)
        /// A stale `resourceVersion`, or a state that forbids the change (a Namespace that still has contents).
        public static let conflict = Code(name: "Conflict", status: 409)
        public static let tooLarge = Code(name: "TooLarge", status: 413)
        /// A document fails validation.
        public static let invalid = Code(name: "Invalid", status: 422)
        /// The server failed; nothing the client sent is at fault.
        public static let `internal` = Code(name: "Internal", status: 500)

        public var description: String { name }
    }

    public var code: Code
    public var message: String
    public var field: String?
    public var document: Int?

    public init(_ code: Code, _ message: String, field: String? = nil, document: Int? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.document = document
    }

    public var status: Int { code.status }

    public var description: String {
        var s = "\(code.name) (\(code.status))"
        if let document { s += " document \(document)" }
        if let field { s += " \(field)" }
        return s + ": " + message
    }

    /// A validation failure of one document.
    static func invalid(_ error: ValidationError, document: Int? = nil) -> APIError {
        APIError(.invalid, error.message, field: error.field, document: document)
    }

    /// The body as the contract spells it.
    public var json: JSONValue {
        var inner = JSONObject()
        inner["code"] = .string(code.name)
        inner["message"] = .string(message)
        if let field { inner["field"] = .string(field) }
        if let document { inner["document"] = .int(Int64(document)) }
        return ["error": .object(inner)]
    }

    func withDocument(_ index: Int) -> APIError {
        var e = self
        e.document = index
        return e
    }
}
