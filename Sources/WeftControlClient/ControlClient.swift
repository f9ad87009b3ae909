// The control API client shared by weftctl (operators, admin token) and weftd
// (agents, node certificate). The contract is docs/control-api.md.
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import WeftCore

/// Where weft-control listens, and the CA bundle its certificate must chain to.
public struct ControlEndpoint: Sendable, Hashable {
    /// `https://host:port`, without a trailing slash. A bare `host:port` is
    /// taken as https, as kubectl does.
    public var url: String
    /// PEM text of the CA certificate(s) to trust; the only roots trusted
    /// (the system store is not consulted: weft-control's certificate comes
    /// from the mesh CA).
    public var caBundlePEM: String
    /// How the user set the URL and the CA bundle, for errors that say what
    /// to check (`--server`, `--ca-file`; weftd passes its config keys).
    public var urlOrigin: String
    public var caOrigin: String

    public init(url: String, caBundlePEM: String, urlOrigin: String = "--server", caOrigin: String = "--ca-file") {
        var url = url.trimmingCharacters(in: .whitespacesAndNewlines)
        if !url.contains("://") { url = "https://" + url }
        while url.hasSuffix("/") { url.removeLast() }
        self.url = url
        self.caBundlePEM = caBundlePEM
        self.urlOrigin = urlOrigin
        self.caOrigin = caOrigin
    }
}

/// Who the client is to weft-control.
public enum ControlCredentials: Sendable {
    /// An operator: the contents of `<data-dir>/admin.token`.
    case adminToken(String)
    /// A node: the certificate from `/v1/nodes/join` and its key, presented in mutual TLS.
    case nodeCertificate(certificatePEM: String, privateKeyPEM: String)
    /// Only `/healthz` and `/v1/nodes/join` answer without credentials.
    case none
}

/// A client of weft-control's API. Create one per process and call
/// ``shutdown()`` when done (or use ``withClient(endpoint:credentials:timeout:_:)``).
public final class ControlClient: Sendable {
    /// The version of this build of Weft's client tools.
    public static let version = "0.1.0"

    public let endpoint: ControlEndpoint
    private let credentials: ControlCredentials
    private let http: HTTPClient
    private let timeout: TimeAmount
    private let connectTimeout: TimeAmount
    private let userAgent: String

    /// Largest answer read: a list of every resource of a big mesh fits many times over.
    static let maximumResponseBytes = 64 << 20

    /// - Parameters:
    ///   - timeout: for a whole request (connect, send, answer); the
    ///     snapshot long poll gets its own poll time on top.
    ///   - connectTimeout: for the TCP connection alone.
    ///   - retryConnecting: keep trying to connect (with backoff) until
    ///     `connectTimeout` instead of failing at the first refused
    ///     connection or failed handshake. Off by default: weftctl should say
    ///     at once that the server is down or the CA is wrong, and weftd's
    ///     sync loop already retries with its own backoff.
    public init(endpoint: ControlEndpoint, credentials: ControlCredentials, timeout: Duration = .seconds(30),
                connectTimeout: Duration = .seconds(5), retryConnecting: Bool = false,
                userAgent: String = "weft/\(ControlClient.version)") throws(ControlError) {
        guard let url = URL(string: endpoint.url), url.scheme == "https", let host = url.host, !host.isEmpty else {
            throw ControlError(kind: .usage, message: "\"\(endpoint.url)\" is not a weft-control address",
                               hint: "write \(endpoint.urlOrigin) as https://HOST:PORT (weft-control listens on 127.0.0.1:15443 by default)")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.certificateVerification = .fullVerification
        do {
            let roots = try NIOSSLCertificate.fromPEMBytes(Array(endpoint.caBundlePEM.utf8))
            guard !roots.isEmpty else { throw NIOSSLError.failedToLoadCertificate }
            tls.trustRoots = .certificates(roots)
        } catch {
            throw ControlError(kind: .usage, message: "the CA bundle holds no readable PEM certificate",
                               hint: "\(endpoint.caOrigin) should name weft-control's ca.crt (<data-dir>/ca/ca.crt)")
        }
        if case .nodeCertificate(let certificatePEM, let keyPEM) = credentials {
            do {
                let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8))
                guard !chain.isEmpty else { throw NIOSSLError.failedToLoadCertificate }
                tls.certificateChain = chain.map { .certificate($0) }
            } catch {
                throw ControlError.usage("the node certificate is not a readable PEM certificate")
            }
            do {
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem))
            } catch {
                throw ControlError.usage("the node's private key is not a readable PEM key")
            }
        }
        self.timeout = TimeAmount(timeout)
        self.connectTimeout = TimeAmount(connectTimeout)
        var configuration = HTTPClient.Configuration(
            tlsConfiguration: tls,
            // A control API has no reason to redirect, and following one would
            // hand the bearer token to whoever the redirect names.
            redirectConfiguration: .disallow,
            timeout: .init(connect: self.connectTimeout, read: nil))
        configuration.httpVersion = .automatic
        configuration.connectionPool.retryConnectionEstablishment = retryConnecting
        self.http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        self.endpoint = endpoint
        self.credentials = credentials
        self.userAgent = userAgent
    }

    /// Closes the connections. Required before the client is released.
    public func shutdown() async throws {
        try await http.shutdown()
    }

    /// Runs `body` with a client and shuts the client down afterwards, also when `body` throws.
    public static func withClient<T: Sendable>(
        endpoint: ControlEndpoint, credentials: ControlCredentials, timeout: Duration = .seconds(30),
        _ body: (ControlClient) async throws -> T
    ) async throws -> T {
        let client = try ControlClient(endpoint: endpoint, credentials: credentials, timeout: timeout)
        do {
            let result = try await body(client)
            try? await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    // MARK: - Resources (admin)

    /// `POST /v1/apply`: all items or none. Returns what the server stored
    /// (with resourceVersion, generation, defaults) and the store revision.
    public func apply(_ items: [JSONValue], dryRun: Bool = false) async throws(ControlError) -> (items: [JSONValue], revision: Int64) {
        let body: JSONValue = ["items": .array(items)]
        let answer = try await json(.POST, "/v1/apply", query: dryRun ? [("dryRun", "true")] : [], body: body)
        return (try itemsOf(answer, "/v1/apply"), try revisionOf(answer, "/v1/apply"))
    }

    /// `GET /v1/{plural}`; every namespace when `namespace` is nil.
    public func list(plural: String, namespace: String? = nil) async throws(ControlError) -> (items: [JSONValue], revision: Int64) {
        let path = "/v1/" + Self.segment(plural)
        let answer = try await json(.GET, path, query: namespace.map { [("namespace", $0)] } ?? [])
        return (try itemsOf(answer, path), try revisionOf(answer, path))
    }

    /// `GET /v1/{plural}/{name}`.
    public func get(plural: String, name: String, namespace: String? = nil) async throws(ControlError) -> JSONValue {
        try await json(.GET, "/v1/\(Self.segment(plural))/\(Self.segment(name))", query: namespace.map { [("namespace", $0)] } ?? [])
    }

    /// `DELETE /v1/{plural}/{name}`; with `resourceVersion`, only if the object is still at it (else 409).
    @discardableResult
    public func delete(plural: String, name: String, namespace: String? = nil, resourceVersion: String? = nil) async throws(ControlError) -> Int64 {
        var query: [(String, String)] = []
        if let namespace { query.append(("namespace", namespace)) }
        if let resourceVersion { query.append(("resourceVersion", resourceVersion)) }
        let path = "/v1/\(Self.segment(plural))/\(Self.segment(name))"
        return try revisionOf(try await json(.DELETE, path, query: query), path)
    }

    /// `POST /v1/tokens`: a one-use bootstrap token with which a weftd joins (its `control.tokenFile`).
    public func createToken(ttlSeconds: Int? = nil) async throws(ControlError) -> (token: String, expiresAt: String) {
        var body = JSONObject()
        if let ttlSeconds { body["ttlSeconds"] = .int(Int64(ttlSeconds)) }
        let answer = try await json(.POST, "/v1/tokens", body: .object(body))
        guard let token = answer["token"]?.stringValue, let expiresAt = answer["expiresAt"]?.stringValue else {
            throw badResponse("/v1/tokens", "has no token and expiresAt")
        }
        return (token, expiresAt)
    }

    /// `GET /v1/status`: nodes and workloads as weft-control sees them.
    public func status() async throws(ControlError) -> JSONValue {
        try await json(.GET, "/v1/status")
    }

    /// `GET /healthz`, which needs no credentials: whether the server answers.
    public func health() async throws(ControlError) -> String {
        String(decoding: try await call(.GET, "/healthz"), as: UTF8.self)
    }

    // MARK: - Nodes

    /// `POST /v1/nodes/join` with a bootstrap token: trades the token (spent
    /// by this call) and a CSR of the node's key for the node certificate.
    public static func join(endpoint: ControlEndpoint, token: String, node: String, csrPEM: String,
                            timeout: Duration = .seconds(30)) async throws(ControlError) -> (certificatePEM: String, caBundlePEM: String, trustDomain: String) {
        let client = try ControlClient(endpoint: endpoint, credentials: .none, timeout: timeout)
        let result: Result<JSONValue, ControlError>
        do {
            result = .success(try await client.json(.POST, "/v1/nodes/join", body: ["token": .string(token), "node": .string(node), "csr": .string(csrPEM)]))
        } catch {
            result = .failure(error)
        }
        try? await client.shutdown()
        let answer = try result.get()
        guard let certificate = answer["certificate"]?.stringValue, let bundle = answer["caBundle"]?.stringValue,
              let trustDomain = answer["trustDomain"]?.stringValue else {
            throw client.badResponse("/v1/nodes/join", "has no certificate, caBundle and trustDomain")
        }
        return (certificate, bundle, trustDomain)
    }

    /// `GET /v1/nodes/{node}/snapshot`: answers once the store revision is
    /// above `after`, or after `timeoutSeconds` (at most 60) with the current
    /// snapshot. Without `after`, answers at once.
    public func snapshot(node: String, after: Int64? = nil, timeoutSeconds: Int = 30) async throws(ControlError) -> NodeSnapshot {
        var query: [(String, String)] = []
        if let after { query.append(("after", String(after))) }
        let poll = min(max(timeoutSeconds, 0), 60)
        query.append(("timeoutSeconds", String(poll)))
        let path = "/v1/nodes/\(Self.segment(node))/snapshot"
        let bytes = try await call(.GET, path, query: query, timeout: timeout + .seconds(Int64(poll)))
        return try decode(NodeSnapshot.self, from: bytes, path)
    }

    /// `PUT /v1/nodes/{node}/status`.
    public func putStatus(node: String, _ status: NodeStatus) async throws(ControlError) {
        let body: Data
        do {
            body = try JSONEncoder().encode(status)
        } catch {
            throw ControlError.usage("could not encode the node status: \(error)")
        }
        _ = try await call(.PUT, "/v1/nodes/\(Self.segment(node))/status", bodyBytes: Array(body))
    }

    /// `POST /v1/nodes/{node}/certificates`: a workload certificate for a
    /// Workload whose `spec.node` is this node.
    public func requestCertificate(node: String, namespace: String, workload: String, csrPEM: String) async throws(ControlError) -> (certificatePEM: String, caBundlePEM: String) {
        let path = "/v1/nodes/\(Self.segment(node))/certificates"
        let answer = try await json(.POST, path, body: ["namespace": .string(namespace), "workload": .string(workload), "csr": .string(csrPEM)])
        guard let certificate = answer["certificate"]?.stringValue, let bundle = answer["caBundle"]?.stringValue else {
            throw badResponse(path, "has no certificate and caBundle")
        }
        return (certificate, bundle)
    }

    // MARK: - Transport

    private func json(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], body: JSONValue? = nil) async throws(ControlError) -> JSONValue {
        let bytes = try await call(method, path, query: query, bodyBytes: body.map { Array($0.serialized().utf8) })
        do {
            return try JSONValue.parse(utf8: bytes)
        } catch {
            throw badResponse(path, "is not JSON (\(error))")
        }
    }

    private func call(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], bodyBytes: [UInt8]? = nil,
                      timeout: TimeAmount? = nil) async throws(ControlError) -> [UInt8] {
        var url = endpoint.url + path
        if !query.isEmpty {
            url += "?" + query.map { "\(Self.queryComponent($0.0))=\(Self.queryComponent($0.1))" }.joined(separator: "&")
        }
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: userAgent)
        if case .adminToken(let token) = credentials {
            request.headers.add(name: "Authorization", value: "Bearer \(token.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        if let bodyBytes {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: bodyBytes))
        }
        let status: Int
        let bytes: [UInt8]
        do {
            let response = try await http.execute(request, timeout: timeout ?? self.timeout)
            status = Int(response.status.code)
            var body = try await response.body.collect(upTo: Self.maximumResponseBytes)
            bytes = body.readBytes(length: body.readableBytes) ?? []
        } catch {
            throw transportError(error, method: method, path: path)
        }
        guard (200..<300).contains(status) else {
            throw serverError(status: status, body: bytes, method: method, path: path)
        }
        return bytes
    }

    /// The server's `{"error": {...}}`, with a hint where the status alone says what to check.
    private func serverError(status: Int, body: [UInt8], method: HTTPMethod, path: String) -> ControlError {
        let parsed = try? JSONValue.parse(utf8: body)
        let error = parsed?["error"]
        let message: String
        if let given = error?["message"]?.stringValue {
            message = given
        } else {
            let text = String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            message = "\(method.rawValue) \(path) answered HTTP \(status)" + (text.isEmpty ? "" : ": \(text)")
        }
        var document: Int?
        if case .int(let n)? = error?["document"] { document = Int(n) }
        var hint: String?
        switch status {
        case 401 where path.hasPrefix("/v1/nodes/") && path != "/v1/nodes/join":
            if case .nodeCertificate = credentials {
                hint = "is the node certificate from this mesh's CA, and still valid? Join the node again if not"
            } else {
                hint = "node endpoints take the node's certificate from /v1/nodes/join, not the admin token"
            }
        case 401:
            switch credentials {
            case .adminToken:
                if !message.contains("admin.token") { hint = "is the token file this server's admin.token (<data-dir>/admin.token)?" }
            case .nodeCertificate: hint = "is the node certificate from this mesh's CA, and still valid? Join the node again if not"
            case .none:
                hint = path == "/v1/nodes/join"
                    ? "bootstrap tokens are single-use and expire; create a fresh one with weftctl node token create"
                    : "this request needs credentials"
            }
        case 413: hint = "the request is too large; apply fewer documents at a time"
        default: break
        }
        return ControlError(kind: .rejected, status: status, code: error?["code"]?.stringValue, message: message,
                            field: error?["field"]?.stringValue, document: document, hint: hint)
    }

    /// Says what failed on the way to the server, and what to check.
    private func transportError(_ error: any Error, method: HTTPMethod, path: String) -> ControlError {
        let server = "weft-control at \(endpoint.url)"
        let text = String(describing: error)
        let reflected = String(reflecting: error)

        if let error = error as? HTTPClientError {
            switch error {
            case .connectTimeout:
                return ControlError(kind: .unreachable, message: "cannot reach \(server): no connection within \(Self.seconds(connectTimeout))",
                                    hint: "is it running, is \(endpoint.urlOrigin) right, and does a firewall let the port through?")
            case .deadlineExceeded, .readTimeout:
                return ControlError(kind: .timeout, message: "\(server) did not answer \(method.rawValue) \(path) in time",
                                    hint: "is the server overloaded or stuck? Its log may say")
            case .tlsHandshakeTimeout:
                return ControlError(kind: .tls, message: "TLS handshake with \(server) timed out",
                                    hint: "is \(endpoint.urlOrigin) the TLS port of weft-control?")
            case .remoteConnectionClosed:
                return ControlError(kind: .unreachable, message: "\(server) closed the connection without answering",
                                    hint: credentialsHint)
            default: break
            }
        }
        if error is NIOSSLError || error is NIOSSLExtraError || error is BoringSSLError
            || reflected.contains("NIOSSL") || reflected.contains("BoringSSL") {
            if text.contains("ailedToValidateHostname") || text.contains("hostname") || text.contains("cannotMatchULabel") {
                return ControlError(kind: .tls, message: "\(server): the server certificate is not valid for \(URL(string: endpoint.url)?.host ?? "this host")",
                                    hint: "weft-control's certificate names weft-control, localhost and its listen IP; use one of those in \(endpoint.urlOrigin)")
            }
            if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
                return ControlError(kind: .tls, message: "the certificate of \(server) does not verify against the CA bundle",
                                    hint: "does the CA bundle (\(endpoint.caOrigin)) match this server? It is <data-dir>/ca/ca.crt of this weft-control (and the clocks must agree)")
            }
            if text.contains("WRONG_VERSION_NUMBER") || text.contains("wrong version number") {
                return ControlError(kind: .tls, message: "\(server) does not speak TLS on that port",
                                    hint: "is \(endpoint.urlOrigin) the port weft-control listens on (its --listen)?")
            }
            return ControlError(kind: .tls, message: "TLS handshake with \(server) failed (\(text))",
                                hint: "does the CA bundle (\(endpoint.caOrigin)) match this server? \(credentialsHint)")
        }
        let lower = (text + " " + reflected).lowercased()
        if lower.contains("connection refused") || lower.contains("econnrefused") {
            return ControlError(kind: .unreachable, message: "cannot reach \(server): connection refused",
                                hint: "is it running, and is \(endpoint.urlOrigin) right?")
        }
        if lower.contains("dns") || lower.contains("name or service not known") || lower.contains("no address") {
            return ControlError(kind: .unreachable, message: "cannot reach \(server): the host name does not resolve (\(text))",
                                hint: "is \(endpoint.urlOrigin) right?")
        }
        if lower.contains("network is unreachable") || lower.contains("no route to host") || lower.contains("timed out") {
            return ControlError(kind: .unreachable, message: "cannot reach \(server): \(text)",
                                hint: "is \(endpoint.urlOrigin) right, and is the address reachable from here?")
        }
        return ControlError(kind: .unreachable, message: "\(method.rawValue) \(path) to \(server) failed: \(text)",
                            hint: "is it running, and is \(endpoint.urlOrigin) right?")
    }

    private var credentialsHint: String {
        switch credentials {
        case .nodeCertificate: return "if it refused the node certificate, check that it is from this mesh's CA and not expired"
        default: return "is \(endpoint.urlOrigin) the address of weft-control?"
        }
    }

    // MARK: - Helpers

    private func itemsOf(_ answer: JSONValue, _ path: String) throws(ControlError) -> [JSONValue] {
        guard let items = answer["items"]?.arrayValue else { throw badResponse(path, "has no items list") }
        return items
    }

    private func revisionOf(_ answer: JSONValue, _ path: String) throws(ControlError) -> Int64 {
        switch answer["revision"] {
        case .int(let n)?: return n
        case .string(let s)?: if let n = Int64(s) { return n }
        default: break
        }
        throw badResponse(path, "has no revision number")
    }

    private func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], _ path: String) throws(ControlError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw badResponse(path, "does not match the API (\(error))")
        }
    }

    fileprivate func badResponse(_ path: String, _ what: String) -> ControlError {
        ControlError(kind: .badResponse, message: "the answer of \(endpoint.url)\(path) \(what)",
                     hint: "are weftctl/weftd and weft-control the same version? (this is \(Self.version))")
    }

    private static func seconds(_ t: TimeAmount) -> String {
        let ms = t.nanoseconds / 1_000_000
        return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }

    /// A path segment: names are DNS-like already, but a stray '/' or '?'
    /// must not change the path.
    static func segment(_ s: String) -> String {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/?#;")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    static func queryComponent(_ s: String) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+#")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
