/// The control API's endpoints (docs/control-api.md), matched from method and
/// path. Pure, so the table is tested without a server.
enum APIRoute: Equatable, Sendable {
    case health
    case apply
    case status
    case createToken
    case join
    case snapshot(node: String)
    case nodeStatus(node: String)
    case certificates(node: String)
    case list(plural: String)
    case get(plural: String, name: String)
    case delete(plural: String, name: String)

    enum Caller: Equatable {
        case anyone
        case admin
        /// A node, authenticated by its client certificate, acting for itself only.
        case node(String)
    }

    var caller: Caller {
        switch self {
        case .health, .join: return .anyone
        case .apply, .status, .createToken, .list, .get, .delete: return .admin
        case .snapshot(let n), .nodeStatus(let n), .certificates(let n): return .node(n)
        }
    }

    /// Path segments under /v1 that are not resource types.
    private static let reserved: Set<String> = ["apply", "status", "tokens", "nodes"]

    static func match(method: String, path: String) throws(APIError) -> APIRoute {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        func only(_ allowed: String, _ route: APIRoute) throws(APIError) -> APIRoute {
            guard method == allowed else {
                throw APIError(.methodNotAllowed, "\(path) answers \(allowed) only, not \(method)")
            }
            return route
        }
        switch segments.count {
        case 1 where segments[0] == "healthz":
            return try only("GET", .health)
        case 2 where segments[0] == "v1":
            switch segments[1] {
            case "apply": return try only("POST", .apply)
            case "status": return try only("GET", .status)
            case "tokens": return try only("POST", .createToken)
            case "nodes": break
            case let plural: return try only("GET", .list(plural: plural))
            }
        case 3 where segments[0] == "v1":
            if segments[1] == "nodes", segments[2] == "join" { return try only("POST", .join) }
            if reserved.contains(segments[1]) { break }
            switch method {
            case "GET": return .get(plural: segments[1], name: segments[2])
            case "DELETE": return .delete(plural: segments[1], name: segments[2])
            default: throw APIError(.methodNotAllowed, "\(path) answers GET and DELETE only, not \(method); create and change objects with POST /v1/apply")
            }
        case 4 where segments[0] == "v1" && segments[1] == "nodes":
            let node = segments[2]
            switch segments[3] {
            case "snapshot": return try only("GET", .snapshot(node: node))
            case "status": return try only("PUT", .nodeStatus(node: node))
            case "certificates": return try only("POST", .certificates(node: node))
            default: break
            }
        default: break
        }
        throw APIError(.notFound, "no endpoint \(method) \(path); the API is described in docs/control-api.md and docs/openapi.yaml")
    }
}
