import WeftCore

/// A failed control API call: the server's answer when it gave one
/// (`{"error": {"code", "message", "field", "document"}}`, docs/control-api.md),
/// or what went wrong on the way, with what to check.
///
/// A struct over a private enum, so kinds can be added without breaking callers.
public struct ControlError: Error, CustomStringConvertible, Sendable {
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case unreachable, tls, timeout, rejected, badResponse, usage
        }
        private let base: Base

        /// No connection: refused, unresolvable host, connect timeout.
        public static let unreachable = Kind(base: .unreachable)
        /// The TLS handshake failed: the server's certificate does not verify
        /// against the CA bundle, or the server refused our certificate.
        public static let tls = Kind(base: .tls)
        /// Connected, but no complete answer in time.
        public static let timeout = Kind(base: .timeout)
        /// The server answered with an error status; see ``ControlError/status`` and ``ControlError/code``.
        public static let rejected = Kind(base: .rejected)
        /// The server answered something that is not what the API promises.
        public static let badResponse = Kind(base: .badResponse)
        /// The request could not be made as asked (a bad URL, an unreadable
        /// CA bundle or key, an unknown kind): nothing was sent.
        public static let usage = Kind(base: .usage)

        public var description: String { base.rawValue }
    }

    public var kind: Kind
    /// The HTTP status, when the server answered.
    public var status: Int?
    /// The server's error code (`Invalid`, `NotFound`, `Conflict`…).
    public var code: String?
    /// The server's message, or what failed on the way.
    public var message: String
    /// The field the server blamed, as a full path (`spec.ports[0].port`).
    public var field: String?
    /// The index (from 0) of the document the server blamed in a multi-document apply.
    public var document: Int?
    /// What to check, when there is something to say.
    public var hint: String?

    public init(kind: Kind, status: Int? = nil, code: String? = nil, message: String, field: String? = nil,
                document: Int? = nil, hint: String? = nil) {
        self.kind = kind
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.document = document
        self.hint = hint
    }

    static func usage(_ message: String) -> ControlError { ControlError(kind: .usage, message: message) }

    /// `field: message — hint`, without the document (callers that know
    /// which file it came from say so themselves).
    public var detail: String {
        var text = field.map { "\($0): \(message)" } ?? message
        if let hint { text += " — \(hint)" }
        return text
    }

    public var description: String {
        var prefix = ""
        if let document { prefix = "document \(document + 1): " }
        return prefix + detail
    }

    /// True when the server said the object does not exist.
    public var isNotFound: Bool { status == 404 }
}
