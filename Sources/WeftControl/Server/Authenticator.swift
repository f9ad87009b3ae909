import Foundation
import Logging
import WeftIdentity
import X509

/// Who may call what (docs/control-api.md, "Authentication"): operators with the
/// admin bearer token; nodes with their client certificate, for themselves only.
struct Authenticator: Sendable {
    let adminToken: String
    let trustBundle: TrustBundle
    let logger: Logger

    /// Checks `Authorization: Bearer <admin.token>`.
    func admin(authorization: String?) throws(APIError) {
        guard let authorization, !authorization.isEmpty else {
            throw APIError(.unauthorized, "this endpoint needs the admin token: send Authorization: Bearer <contents of admin.token in weft-control's data dir>")
        }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw APIError(.unauthorized, "the Authorization header must be \"Bearer <admin token>\"")
        }
        let given = parts[1].trimmingCharacters(in: .whitespaces)
        // Constant time: how long a mismatch takes must not reveal how much matched.
        guard Self.constantTimeEqual(Array(given.utf8), Array(adminToken.utf8)) else {
            logger.warning("admin request with a wrong token")
            throw APIError(.unauthorized, "the admin token is wrong; use the current contents of admin.token in weft-control's data dir")
        }
    }

    /// Checks that the TLS peer is node `node`: a certificate from the mesh CA
    /// with URI SAN `spiffe://<td>/node/<node>`. Returns the certificate.
    func node(_ node: String, peer: Certificate?, endpoint: String) async throws(APIError) -> Certificate {
        guard let peer else {
            throw APIError(.unauthorized, "this endpoint needs the node's client certificate (mutual TLS) issued by POST /v1/nodes/join")
        }
        let id: SpiffeID
        do {
            // The TLS layer has already checked the chain against the mesh CA;
            // this adds the SPIFFE rules (one URI SAN, trust domain, clientAuth).
            id = try await trustBundle.verifyPeer([peer], role: .client)
        } catch {
            if error.code == .peerNotTrusted { throw APIError(.unauthorized, error.message) }
            logger.warning("node endpoint called with an unusable certificate", metadata: ["endpoint": "\(endpoint)", "error": "\(error.message)"])
            throw APIError(.forbidden, error.message)
        }
        guard case .node(let caller) = id.kind else {
            logger.warning("node endpoint called with a non-node identity", metadata: ["endpoint": "\(endpoint)", "peer": "\(id)"])
            throw APIError(.forbidden, "\(id) is not a node identity; node endpoints take the node credential from /v1/nodes/join")
        }
        guard caller == node else {
            logger.warning("node asked for another node's data", metadata: ["node": "\(caller)", "requested": "\(node)", "endpoint": "\(endpoint)"])
            throw APIError(.forbidden, "node \(caller) may not act for node \(node)")
        }
        return peer
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for (x, y) in zip(a, b) { diff |= x ^ y }
        return diff == 0
    }
}
