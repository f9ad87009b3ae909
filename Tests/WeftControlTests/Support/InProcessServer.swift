import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import Testing
@testable import WeftControl
import WeftCore
import WeftIdentity
import X509

/// A weft-control server running in this process on 127.0.0.1 and a free port,
/// with its own temporary data dir, spoken to over real TLS.
final class InProcessServer: Sendable {
    let directory: String
    let server: ControlServer
    let port: Int
    private let task: Task<Void, any Error>

    static let trustDomain = "cluster.local"

    /// - Parameter etcd: the etcd store's endpoints and prefix; nil: SQLite in the data dir.
    static func start(directory: String? = nil, serviceCIDR: String = "10.96.0.0/16", logLevel: Logger.Level = .warning,
                      etcd: (endpoints: [String], prefix: String)? = nil) async throws -> InProcessServer {
        let dir = directory ?? Self.temporaryDirectory()
        var logger = Logger(label: "weft-control-test")
        logger.logLevel = logLevel
        let configuration = try ControlServerConfiguration(
            dataDirectory: dir, listen: "127.0.0.1:0", trustDomain: trustDomain, serviceCIDR: serviceCIDR,
            store: etcd == nil ? "sqlite" : "etcd", etcdEndpoints: etcd?.endpoints.joined(separator: ","), etcdPrefix: etcd?.prefix)
        let server = try await ControlServer(configuration: configuration, logger: logger)
        let task = Task { try await server.run() }
        let port = await server.boundPort()
        return InProcessServer(directory: dir, server: server, port: port, task: task)
    }

    private init(directory: String, server: ControlServer, port: Int, task: Task<Void, any Error>) {
        self.directory = directory
        self.server = server
        self.port = port
        self.task = task
    }

    static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "weft-control-test-" + UUID().uuidString
        return path
    }

    /// Answers waiting long polls, then stops serving, and removes the data
    /// dir unless a test restarts a server on it.
    func stop(keepingData: Bool = false) async {
        await server.shutdown()
        _ = await task.result
        if !keepingData { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Another replica on the same etcd store: a data dir of its own holding
    /// copies of this one's CA pair and admin token, as an operator would make.
    func replica(etcd: (endpoints: [String], prefix: String)) async throws -> InProcessServer {
        let dir = Self.temporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir + "/ca", withIntermediateDirectories: true)
        for file in ["ca/ca.crt", "ca/ca.key", "admin.token"] {
            try FileManager.default.copyItem(atPath: directory + "/" + file, toPath: dir + "/" + file)
        }
        return try await Self.start(directory: dir, etcd: etcd)
    }

    var adminToken: String { server.adminToken }
    var caPEM: String { server.caCertificatePEM }

    // MARK: Requests

    enum Caller: Sendable {
        case anonymous
        case admin
        case bearer(String)
        case node(JoinedNode)
    }

    struct Reply: Sendable, CustomStringConvertible {
        var status: Int
        var text: String
        var json: JSONValue { (try? JSONValue.parse(text)) ?? .null }
        /// `error.field` of an error reply.
        var field: String? { json["error"]?["field"]?.stringValue }
        var code: String? { json["error"]?["code"]?.stringValue }
        var message: String { json["error"]?["message"]?.stringValue ?? "" }
        var document: Int64? {
            if case .int(let n)? = json["error"]?["document"] { return n }
            return nil
        }
        var revision: Int64? {
            if case .int(let n)? = json["revision"] { return n }
            return nil
        }
        var description: String { "\(status) \(text)" }
    }

    func tls(for caller: Caller) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8)))
        tls.minimumTLSVersion = .tlsv13
        if case .node(let credential) = caller {
            tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(credential.certificatePEM.utf8)).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(credential.keyPEM.utf8), format: .pem))
        }
        return tls
    }

    func request(_ method: HTTPMethod, _ path: String, body: String? = nil, as caller: Caller = .admin,
                 timeout: TimeAmount = .seconds(30)) async throws -> Reply {
        var request = HTTPClientRequest(url: "https://127.0.0.1:\(port)\(path)")
        request.method = method
        request.tlsConfiguration = try tls(for: caller)
        switch caller {
        case .admin: request.headers.add(name: "Authorization", value: "Bearer \(adminToken)")
        case .bearer(let token): request.headers.add(name: "Authorization", value: "Bearer \(token)")
        case .anonymous, .node: break
        }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: body))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 32 << 20)
        return Reply(status: Int(response.status.code), text: String(buffer: bytes))
    }

    func apply(_ documents: [String], dryRun: Bool = false) async throws -> Reply {
        try await request(.POST, "/v1/apply" + (dryRun ? "?dryRun=true" : ""), body: #"{"items": [\#(documents.joined(separator: ","))]}"#)
    }

    /// A node joined with a fresh one-time token, holding its credential.
    func join(_ node: String) async throws -> JoinedNode {
        let token = try await createToken()
        let (key, csr) = try SpiffeID.node(trustDomain: TrustDomain(Self.trustDomain), name: node).makeKeyAndCSR()
        let reply = try await request(.POST, "/v1/nodes/join", body: JSONValue.object([
            "token": .string(token), "node": .string(node), "csr": .string(try PEM.encode(csr)),
        ]).serialized(), as: .anonymous)
        guard reply.status == 200, let cert = reply.json["certificate"]?.stringValue else {
            throw InProcessFailure("join of \(node) failed: \(reply)")
        }
        return JoinedNode(node: node, certificatePEM: cert, keyPEM: PEM.encode(key))
    }

    func createToken() async throws -> String {
        let reply = try await request(.POST, "/v1/tokens", body: #"{"ttlSeconds": 600}"#)
        guard reply.status == 201, let token = reply.json["token"]?.stringValue else { throw InProcessFailure("token: \(reply)") }
        return token
    }

    func currentRevision() async throws -> Int64 {
        try await request(.GET, "/healthz", as: .anonymous).revision ?? -1
    }
}

struct JoinedNode: Sendable {
    var node: String
    var certificatePEM: String
    var keyPEM: String
}

struct InProcessFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

// MARK: Documents

enum ServerManifests {
    static func namespace(_ name: String, mesh: Bool = true) -> String {
        #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Namespace", "metadata": {"name": "\#(name)"}, "spec": {"mesh": {"enabled": \#(mesh)}}}"#
    }

    static func workload(_ name: String, namespace: String = "shop", node: String = "node-a", labels: String = #"{"app": "catalog"}"#,
                         serviceAccount: String = "catalog", address: String = "198.18.0.1", resourceVersion: String? = nil) -> String {
        let rv = resourceVersion.map { #", "resourceVersion": "\#($0)""# } ?? ""
        return #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "\#(name)", "namespace": "\#(namespace)", "labels": \#(labels)\#(rv)}, "spec": {"node": "\#(node)", "unit": "\#(name).service", "serviceAccount": "\#(serviceAccount)", "addresses": ["\#(address)"], "ports": [{"name": "http", "port": 8080, "protocol": "http"}]}}"#
    }

    static func service(_ name: String, namespace: String = "shop", selector: String = #"{"app": "catalog"}"#,
                        virtualIP: String? = nil, port: Int = 80) -> String {
        let vip = virtualIP.map { #", "virtualIP": "\#($0)""# } ?? ""
        return #"{"apiVersion": "weft.dev/v1alpha1", "kind": "Service", "metadata": {"name": "\#(name)", "namespace": "\#(namespace)"}, "spec": {"selector": \#(selector), "ports": [{"name": "http", "port": \#(port), "targetPort": 8080, "protocol": "http"}]\#(vip)}}"#
    }

    static func route(_ name: String, namespace: String = "shop", parent: String = "catalog", pathType: String = "PathPrefix", path: String = "/") -> String {
        #"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "\#(name)", "namespace": "\#(namespace)"}, "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "\#(parent)"}], "rules": [{"matches": [{"path": {"type": "\#(pathType)", "value": "\#(path)"}}], "backendRefs": [{"name": "\#(parent)", "port": 80}]}]}}"#
    }
}

extension JSONValue {
    var int64: Int64? {
        if case .int(let n) = self { return n }
        return nil
    }
}
