import Foundation
import Hummingbird
import Logging
import NIOCore
import WeftStore

/// HTTP in and out: matches the route, authenticates, reads the body and query,
/// calls ``ControlAPI``, and turns every failure into the contract's error JSON.
/// Never throws: a bad request must not become Hummingbird's empty 500.
struct ControlResponder: HTTPResponder {
    typealias Context = ControlRequestContext

    let api: ControlAPI
    let auth: Authenticator
    let logger: Logger

    static let maximumApplyBody = 8 << 20
    static let maximumBody = 1 << 20

    func respond(to request: Request, context: Context) async throws -> Response {
        let method = request.method.rawValue
        let path = request.uri.path
        do {
            return Self.response(try await handle(request, context: context))
        } catch let error as APIError {
            if error.code == .internal { logger.error("request failed", metadata: ["method": "\(method)", "path": "\(path)", "error": "\(error.message)"]) }
            return Self.response(error)
        } catch is NIOTooManyBytesError {
            return Self.response(APIError(.tooLarge, "the body is larger than this endpoint accepts (\(Self.maximumApplyBody >> 20) MiB for apply, \(Self.maximumBody >> 10) KiB otherwise); split the apply"))
        } catch {
            logger.error("request failed", metadata: ["method": "\(method)", "path": "\(path)", "error": "\(error)"])
            return Self.response(APIError(.internal, "the server failed: \(error); see weft-control's log"))
        }
    }

    private func handle(_ request: Request, context: Context) async throws -> APIResponse {
        var request = request
        let route = try APIRoute.match(method: request.method.rawValue, path: request.uri.path)
        let query = try Query(request.uri.queryParameters, allowed: Self.queryParameters(route))
        var peerNotAfter: Date?
        switch route.caller {
        case .anyone: break
        case .admin: try auth.admin(authorization: request.headers[.authorization])
        case .node(let node):
            let peer = try await auth.node(node, peer: await context.peerCertificate(), endpoint: request.uri.path)
            peerNotAfter = peer.notValidAfter
        }
        let limit = route == .apply ? Self.maximumApplyBody : Self.maximumBody
        let body = Array(try await request.collectBody(upTo: limit).readableBytesView)

        switch route {
        case .health:
            return try await api.health()
        case .apply:
            return try await api.apply(body: body, dryRun: try query.bool("dryRun") ?? false)
        case .list(let plural):
            return try await api.list(plural: plural, namespace: query["namespace"])
        case .get(let plural, let name):
            return try await api.get(plural: plural, name: name, namespace: query["namespace"])
        case .delete(let plural, let name):
            return try await api.delete(plural: plural, name: name, namespace: query["namespace"], resourceVersion: query["resourceVersion"])
        case .createToken:
            return try await api.createToken(body: body)
        case .status:
            return try await api.status()
        case .join:
            return try await api.join(body: body)
        case .snapshot(let node):
            let after = try query.integer("after", in: 0...Int64.max)
            let timeout = try query.integer("timeoutSeconds", in: 0...Int64.max).map { Duration.seconds($0) } ?? ControlAPI.defaultPoll
            return try await api.snapshot(node: node, after: after, timeout: timeout)
        case .nodeStatus(let node):
            return try await api.putStatus(node: node, body: body, credentialNotAfter: peerNotAfter)
        case .certificates(let node):
            return try await api.issueWorkloadCertificate(node: node, body: body)
        }
    }

    /// Unknown query parameters are refused: a misspelt `dryrun=true` that was
    /// silently ignored would write what the operator meant only to check.
    static func queryParameters(_ route: APIRoute) -> [String] {
        switch route {
        case .apply: return ["dryRun"]
        case .list, .get: return ["namespace"]
        case .delete: return ["namespace", "resourceVersion"]
        case .snapshot: return ["after", "timeoutSeconds"]
        default: return []
        }
    }

    static func response(_ r: APIResponse) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: .init(code: r.status), headers: headers, body: .init(byteBuffer: ByteBuffer(string: r.body + "\n")))
    }

    static func response(_ error: APIError) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        if error.code == .unauthorized { headers[.wwwAuthenticate] = "Bearer realm=\"weft-control\"" }
        return Response(status: .init(code: error.status), headers: headers,
                        body: .init(byteBuffer: ByteBuffer(string: error.json.serialized() + "\n")))
    }
}

/// The query string, checked against the parameters an endpoint takes.
struct Query {
    private var values: [String: String] = [:]

    init<Parameters: Sequence>(_ parameters: Parameters, allowed: [String]) throws(APIError)
    where Parameters.Element == (key: Substring, value: Substring) {
        for (key, value) in parameters {
            let k = String(key)
            guard allowed.contains(k) else {
                let takes = allowed.isEmpty ? "takes no query parameters" : "takes \(allowed.joined(separator: ", "))"
                throw APIError(.badRequest, "unknown query parameter; this endpoint \(takes)", field: k)
            }
            values[k] = String(value)
        }
    }

    subscript(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let v = self[key] else { return nil }
        switch v {
        case "true": return true
        case "false": return false
        default: throw APIError(.badRequest, "\"\(v)\" is not true or false", field: key)
        }
    }

    func integer(_ key: String, in range: ClosedRange<Int64>) throws(APIError) -> Int64? {
        guard let v = self[key] else { return nil }
        guard let n = Int64(v), range.contains(n) else {
            throw APIError(.badRequest, "\"\(v)\" is not a whole number of at least \(range.lowerBound)", field: key)
        }
        return n
    }
}
