import Foundation
import Logging
import WeftControlClient
import WeftCore
import WeftIdentity
import X509

/// The agent's side of weft-control: join once with a bootstrap token, then
/// watch the node's snapshot (long poll), apply each new version, report what
/// was applied and what the node sees, and keep a certificate for every
/// meshed workload of this node, renewed at half-life.
///
/// Everything here fails soft: while weft-control is unreachable the node
/// keeps enforcing the last snapshot it applied (persisted in the state dir)
/// and retries with capped, jittered backoff.
struct ControlSync {
    let settings: NodeConfig.Control
    let node: String
    let agent: NodeAgent
    let logger: Logger
    let schedule = RenewalSchedule()
    static let weftdVersion = "0.1.0"

    func run() async {
        let state = NodeStateDir(path: settings.stateDir)
        var attempt = 0
        var client: ControlClient?
        var applied = await agent.appliedVersion
        // Version 0 is a real version (an empty control plane): whether a
        // snapshot was applied at all is tracked on its own.
        var hasApplied = await agent.isSynced
        var lastError = ""
        var replicas = ControlReplicas(settings.servers.isEmpty ? [settings.server] : settings.servers)
        defer { if let client { Task { try? await client.shutdown() } } }
        while !Task.isCancelled {
            do {
                if client == nil { client = try await connect(state, server: replicas.current) }
                // The poll returns in time for the next certificate renewal.
                var wait = 25
                if let due = await agent.nextRenewal(schedule) {
                    wait = max(0, min(25, Int(due.timeIntervalSinceNow.rounded(.up))))
                }
                let snapshot = try await client!.snapshot(node: node, after: hasApplied ? applied : nil, timeoutSeconds: wait)
                if !hasApplied || snapshot.version != applied {
                    do {
                        try state.saveSnapshot(snapshot)
                    } catch {
                        logger.warning("cannot persist the snapshot; a restart without weft-control would lose it", metadata: ["error": "\(error)"])
                    }
                    await agent.applySnapshot(snapshot)
                    applied = snapshot.version
                    hasApplied = true
                }
                await renewCertificates(client!)
                try await client!.putStatus(node: node, await agent.nodeStatus())
                agent.controlReachable(true)
                if !lastError.isEmpty {
                    logger.info("weft-control reachable again", metadata: ["version": "\(applied)"])
                    lastError = ""
                }
                attempt = 0
            } catch is CancellationError {
                return
            } catch {
                agent.controlReachable(false)
                let text = "\(error)"
                if text != lastError {
                    logger.warning("control API unavailable; running on the last applied snapshot",
                                   metadata: ["version": "\(applied)", "error": "\(text)"])
                    lastError = text
                }
                if let c = client, case let e as ControlError = error, e.status == 401 || e.status == 403 {
                    // The credential is refused: nothing to gain by retrying it fast.
                    try? await c.shutdown()
                    client = nil
                }
                // With replicas, the next try goes to the next one; the version
                // applied is a store revision, valid on every replica.
                if replicas.count > 1 {
                    if let c = client { try? await c.shutdown() }
                    client = nil
                    replicas.advance()
                }
                attempt += 1
                do { try await Task.sleep(for: schedule.retryDelay(attempt: attempt)) } catch { return }
            }
        }
    }

    /// A client with the node credential, joining first if there is none yet.
    private func connect(_ state: NodeStateDir, server: String) async throws -> ControlClient {
        guard let caPEM = try? String(contentsOfFile: settings.caFile, encoding: .utf8) else {
            throw AgentError("cannot read control.caFile \(settings.caFile): copy weft-control's <data-dir>/ca/ca.crt there")
        }
        let endpoint = ControlEndpoint(url: server, caBundlePEM: caPEM, urlOrigin: settings.servers.count > 1 ? "control.servers" : "control.server",
                                       caOrigin: "control.caFile")
        if let cred = state.credential() {
            return try ControlClient(endpoint: endpoint, credentials: .nodeCertificate(certificatePEM: cred.certificatePEM, privateKeyPEM: cred.keyPEM))
        }
        guard let tokenFile = settings.tokenFile,
              let token = try? String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
              !token.isEmpty else {
            throw AgentError("this node has no credential yet and no bootstrap token: create one with `weftctl node token create` and put it in control.tokenFile")
        }
        let (keyPEM, csrPEM) = try NodeKey.makeKeyAndCSR(node: node)
        let joined = try await ControlClient.join(endpoint: endpoint, token: token, node: node, csrPEM: csrPEM)
        try state.saveCredential(certificatePEM: joined.certificatePEM, keyPEM: keyPEM, caPEM: joined.caBundlePEM)
        logger.info("joined the mesh", metadata: ["node": "\(node)", "trustDomain": "\(joined.trustDomain)"])
        return try ControlClient(endpoint: endpoint, credentials: .nodeCertificate(certificatePEM: joined.certificatePEM, privateKeyPEM: keyPEM))
    }

    /// Requests or renews (at half-life) the certificate of every meshed
    /// workload of this node. A failure keeps the previous certificate: it
    /// is valid until its notAfter, long past the renewal point.
    private func renewCertificates(_ client: ControlClient) async {
        let wanted = await agent.workloadIdentities()
        let now = Date()
        for (ref, spiffe) in wanted {
            if let held = await agent.certificate(for: spiffe), schedule.renewAt(held.certificate) > now { continue }
            do {
                let (key, csr) = try spiffe.makeKeyAndCSR()
                let issued = try await client.requestCertificate(node: node, namespace: ref.namespace.rawValue,
                                                                 workload: ref.name.rawValue, csrPEM: try PEM.encode(csr))
                let cert = try PEM.decodeCertificate(issued.certificatePEM)
                await agent.store(WorkloadCertificate(spiffeID: spiffe, certificate: cert, privateKeyPEM: PEM.encode(key),
                                                      certificatePEM: issued.certificatePEM, caBundlePEM: issued.caBundlePEM))
                logger.info("workload certificate issued", metadata: ["identity": "\(spiffe)", "notAfter": "\(cert.notValidAfter)"])
            } catch {
                logger.warning("cannot get a workload certificate; keeping the previous one if any",
                               metadata: ["identity": "\(spiffe)", "error": "\(error)"])
            }
        }
    }
}

/// The weft-control replicas an agent may use, and the one in use: a failed
/// request moves it to the next, round the list.
struct ControlReplicas {
    private let servers: [String]
    private(set) var index = 0

    init(_ servers: [String]) {
        precondition(!servers.isEmpty, "NodeConfig guarantees at least one server")
        self.servers = servers
    }

    var count: Int { servers.count }
    var current: String { servers[index] }
    mutating func advance() { index = (index + 1) % servers.count }
}

/// A workload's SVID as the node holds it.
public struct WorkloadCertificate: Sendable {
    public var spiffeID: SpiffeID
    public var certificate: Certificate
    public var privateKeyPEM: String
    public var certificatePEM: String
    public var caBundlePEM: String
}
