import Foundation

/// `[ip, port]` as netprobe.py prints socket addresses.
struct Endpoint: Decodable, Equatable, CustomStringConvertible {
    var ip: String
    var port: Int

    init(_ ip: String, _ port: Int) {
        self.ip = ip
        self.port = port
    }

    init(from decoder: any Decoder) throws {
        var items = try decoder.unkeyedContainer()
        ip = try items.decode(String.self)
        port = try items.decode(Int.self)
    }

    var description: String { ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)" }

    /// The proxy's listener is on loopback: a socket bound there really
    /// connected to the proxy, whatever getpeername() claims.
    var isLoopback: Bool { ["127.0.0.1", "::1", "::ffff:127.0.0.1"].contains(ip) }
}

/// One `netprobe.py probe` (or one `loop` iteration).
struct ProbeResult: Decodable, CustomStringConvertible {
    var ok: Bool
    var error: String?
    var stage: String
    var local: Endpoint?
    var peer: Endpoint?
    var hello: String?
    var echo: String?
    var echoLen: Int
    var echoMatches: Bool
    var eof: Bool
    var pid: Int32
    var elapsedMs: Double
    var seq: Int?
    var raw = ""

    private enum CodingKeys: String, CodingKey {
        case ok, error, stage, local, peer, hello, echo, echoLen, echoMatches, eof, pid, elapsedMs, seq
    }

    static func parse(_ line: String) throws -> ProbeResult {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        var result = try decoder.decode(ProbeResult.self, from: Data(line.utf8))
        result.raw = line
        return result
    }

    /// Connected through the node proxy (see `Endpoint.isLoopback`).
    var viaProxy: Bool { local?.isLoopback == true }
    /// Connected straight to the destination, bypassing the proxy.
    var direct: Bool { local.map { !$0.isLoopback } ?? false }

    var description: String { raw }
}

/// `netprobe.py many`.
struct ManySummary: Decodable, CustomStringConvertible {
    var ok: Int
    var failed: Int
    var loopbackLocal: Int
    var errors: [String: Int]
    var elapsedMs: Double
    var raw = ""

    private enum CodingKeys: String, CodingKey { case ok, failed, loopbackLocal, errors, elapsedMs }

    static func parse(_ line: String) throws -> ManySummary {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        var summary = try decoder.decode(ManySummary.self, from: Data(line.utf8))
        summary.raw = line
        return summary
    }

    var description: String { raw }
}

/// weftd's `GET /debug/capture` (docs/weftd.md). Fields the tests do not
/// rely on are optional, so that an addition to the document does not break
/// every test.
struct CaptureState: Decodable, CustomStringConvertible {
    struct Namespace: Decodable {
        var name: String
        var mesh: Bool
        var cgroup: String?
        var attached: Bool
    }

    struct Workload: Decodable {
        var namespace: String
        var name: String
        var cgroup: String?
        var cgroupID: UInt64?
        var netns: String?
        var captured: Bool
        var hooks: [String]?
        var connections: Int?
    }

    struct Listener: Decodable {
        var netns: String
        var addresses: [String]
    }

    var node: String
    var ready: Bool
    var configGeneration: Int?
    var repairs: Int
    var namespaces: [Namespace]
    var workloads: [Workload]
    var listeners: [Listener]?
    var maps: [String: Int]
    /// The proxy's counters (its `identities` list is read from `raw`).
    var proxy: [String: Int]? = nil
    /// The weft-control snapshot applied; absent or null when weftd runs from its file.
    var appliedVersion: Int64?
    var raw = ""

    private enum CodingKeys: String, CodingKey {
        case node, ready, configGeneration, repairs, namespaces, workloads, listeners, maps, appliedVersion
    }

    static func parse(_ body: String) throws -> CaptureState {
        do {
            var state = try JSONDecoder().decode(CaptureState.self, from: Data(body.utf8))
            state.raw = body
            if let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
               let proxy = object["proxy"] as? [String: Any] {
                state.proxy = proxy.compactMapValues { $0 as? Int }
            }
            return state
        } catch {
            throw HarnessError("/debug/capture is not the documented JSON (\(error)):\n\(body)")
        }
    }

    func workload(_ namespace: String, _ name: String) -> Workload? {
        workloads.first { $0.namespace == namespace && $0.name == name }
    }

    func namespace(_ name: String) -> Namespace? {
        namespaces.first { $0.name == name }
    }

    /// Connections the proxy accepted from a workload; 0 if weftd does not list it.
    func connections(_ namespace: String, _ name: String) -> Int {
        workload(namespace, name)?.connections ?? 0
    }

    var description: String { raw }
}
