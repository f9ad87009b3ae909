// WeftControl: the weft-control server (docs/control-api.md).
//
//   Bootstrap/  the data dir: store, mesh CA, server certificate, admin token
//   API/        the behaviour, below HTTP: ControlAPI (one method per endpoint) over
//               pure, table-tested parts — ApplyPlanner, VirtualIPAllocator,
//               NodeSnapshotBuilder, WorkloadReports, StatusReportBuilder
//   Server/     HTTP: routes, authentication, the Hummingbird responder, ControlServer
//
import Foundation
import Hummingbird
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import WeftCore
import WeftIdentity
import WeftStore

/// weft-control's settings: the flags of `weft-control` (docs/control-api.md, "Running").
public struct ControlServerConfiguration: Sendable {
    public var dataDirectory: String
    public var host: String
    /// 0 picks a free port (tests).
    public var port: Int
    public var trustDomain: TrustDomain
    public var serviceCIDR: CIDR
    /// Lifetime of workload certificates; agents renew them at half of it.
    public var workloadCertificateTTL: Duration
    public var store: StoreBackend

    /// Where the desired state lives (`--store`).
    public enum StoreBackend: Sendable, Equatable {
        /// `<data-dir>/weft.db`: one replica.
        case sqlite
        /// An etcd cluster shared by any number of replicas.
        case etcd(endpoints: [String], prefix: String)
    }

    public static let defaultListen = "127.0.0.1:15443"
    public static let defaultEtcdPrefix = "/weft/"

    public init(dataDirectory: String, listen: String = defaultListen, trustDomain: String = "cluster.local",
                serviceCIDR: String = "10.96.0.0/16", workloadCertificateTTLSeconds: Int = 86_400,
                store: String = "sqlite", etcdEndpoints: String? = nil, etcdPrefix: String? = nil) throws {
        self.dataDirectory = dataDirectory
        self.store = try Self.parseStore(store, endpoints: etcdEndpoints, prefix: etcdPrefix)
        guard (10...(30 * 86_400)).contains(workloadCertificateTTLSeconds) else {
            throw BootstrapError("--workload-cert-ttl: \(workloadCertificateTTLSeconds) must be from 10 seconds to 30 days (2592000)")
        }
        self.workloadCertificateTTL = .seconds(workloadCertificateTTLSeconds)
        (host, port) = try Self.parseListen(listen)
        do {
            self.trustDomain = try TrustDomain(trustDomain, field: "--trust-domain")
            self.serviceCIDR = try CIDR(serviceCIDR, field: "--service-cidr")
        } catch {
            throw BootstrapError("\(error.field): \(error.message)")
        }
    }

    /// `--store`, `--etcd-endpoints` and `--etcd-prefix`, checked together.
    static func parseStore(_ store: String, endpoints: String?, prefix: String?) throws -> StoreBackend {
        switch store {
        case "sqlite":
            if endpoints != nil { throw BootstrapError("--etcd-endpoints is only used with --store etcd (the store is sqlite)") }
            if prefix != nil { throw BootstrapError("--etcd-prefix is only used with --store etcd (the store is sqlite)") }
            return .sqlite
        case "etcd":
            guard let endpoints, !endpoints.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw BootstrapError("--etcd-endpoints is required with --store etcd: the client URLs of the etcd members, such as http://10.0.0.1:2379,http://10.0.0.2:2379")
            }
            var urls: [String] = []
            for raw in endpoints.split(separator: ",", omittingEmptySubsequences: false) {
                let e = raw.trimmingCharacters(in: .whitespaces)
                guard let url = URL(string: e), url.scheme == "http", let host = url.host, !host.isEmpty, let port = url.port,
                      (1...65535).contains(port), url.path.isEmpty || url.path == "/", url.query == nil else {
                    throw BootstrapError("--etcd-endpoints: \"\(e)\" is not an etcd client URL of the form http://HOST:PORT (https is not supported yet)")
                }
                guard !urls.contains(e) else { throw BootstrapError("--etcd-endpoints: \(e) is listed twice") }
                urls.append(e)
            }
            let prefix = prefix ?? defaultEtcdPrefix
            guard prefix.hasPrefix("/"), prefix.hasSuffix("/"), prefix.count >= 2, !prefix.contains("//") else {
                throw BootstrapError("--etcd-prefix: \"\(prefix)\" must start and end with '/', such as /weft/")
            }
            return .etcd(endpoints: urls, prefix: prefix)
        default:
            throw BootstrapError("--store: \"\(store)\" is not a store; use sqlite (the default, one replica) or etcd (replicas sharing an etcd cluster)")
        }
    }

    /// `host:port` or `[v6]:port`.
    static func parseListen(_ text: String) throws -> (String, Int) {
        var host: Substring
        var port: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(after: close)...]
            guard port.hasPrefix(":") else { throw BootstrapError("--listen \"\(text)\" must be host:port or [IPv6]:port") }
            port = port.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else {
                throw BootstrapError("--listen \"\(text)\" must be host:port or [IPv6]:port, such as 127.0.0.1:15443")
            }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let number = Int(port), (0...65535).contains(number) else {
            throw BootstrapError("--listen \"\(text)\" must be host:port with a port from 0 to 65535")
        }
        return (String(host), number)
    }
}

/// The control API server: the data dir made ready, the store opened, and a
/// Hummingbird application serving ``ControlResponder`` over TLS.
public final class ControlServer: Sendable {
    public let configuration: ControlServerConfiguration
    /// The operators' bearer token (`admin.token`).
    public let adminToken: String
    /// The mesh CA certificate clients trust (`ca/ca.crt`).
    public let caCertificatePEM: String
    let api: ControlAPI
    private let application: Application<ControlResponder>
    private let port = BoundPort()
    private let group = Mutex<ServiceGroup?>(nil)
    private let logger: Logger
    private let closeStore: @Sendable () async -> Void

    public init(configuration: ControlServerConfiguration, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        let directory = DataDirectory(path: configuration.dataDirectory)
        let store: any ResourceStore
        let material: DataDirectory.Material
        switch configuration.store {
        case .sqlite:
            material = try directory.prepare(trustDomain: configuration.trustDomain, listenHost: configuration.host)
            store = try SQLiteStore(path: directory.storePath)
            closeStore = {}
        case .etcd(let endpoints, let prefix):
            let etcd = try await EtcdStore.connect(endpoints: endpoints, prefix: prefix)
            do {
                material = try await SharedMeshCA.prepare(directory, store: etcd, trustDomain: configuration.trustDomain,
                                                          listenHost: configuration.host, where: "etcd \(prefix)")
            } catch {
                await etcd.shutdown()
                throw error
            }
            store = etcd
            closeStore = { await etcd.shutdown() }
        }
        adminToken = material.adminToken
        caCertificatePEM = material.ca.certificatePEM

        let versions: SnapshotVersion
        do {
            versions = try await SnapshotVersion.load(from: store)
        } catch {
            await closeStore()
            throw error
        }
        api = ControlAPI(store: store, ca: material.ca, serviceCIDR: configuration.serviceCIDR, logger: logger, versions: versions,
                         workloadCertificateTTL: configuration.workloadCertificateTTL)

        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(material.serverCertificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(material.serverKeyPEM.utf8), format: .pem)))
        tls.minimumTLSVersion = .tlsv13
        // Optional at the TLS layer, so operators (bearer token) and joining nodes
        // (bootstrap token) connect without one; a certificate that is sent must
        // chain to the mesh CA, and node endpoints require one (ControlResponder).
        tls.certificateVerification = .optionalVerification
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(material.ca.certificatePEM.utf8)))
        // A peer that never answers our close_notify would hold graceful
        // shutdown for NIOSSL's default 5 s per connection.
        tls.shutdownTimeout = .seconds(1)

        let responder = ControlResponder(
            api: api,
            auth: Authenticator(adminToken: material.adminToken, trustBundle: material.ca.trustBundle, logger: logger),
            logger: logger)
        let bound = port
        application = Application(
            responder: responder,
            // Idle connections (never between a request and its answer, so long
            // polls are safe) are closed after two minutes: agents poll again at
            // once, so a connection that quiet belongs to no one.
            server: try .tls(.http1(configuration: .init(idleTimeout: .seconds(120))), tlsConfiguration: tls),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { channel in
                let number = channel.localAddress?.port ?? configuration.port
                bound.announce(number)
                logger.info("weft-control listening", metadata: ["address": "\(configuration.host):\(number)", "trustDomain": "\(configuration.trustDomain)"])
            },
            logger: logger)
        let revision = (try? await store.revision()) ?? -1
        logger.info("weft-control ready", metadata: [
            "dataDir": "\(configuration.dataDirectory)", "store": "\(configuration.store)", "revision": "\(revision)",
            "snapshotVersion": "\(versions.current.version)", "serviceCIDR": "\(configuration.serviceCIDR)",
        ])
    }

    /// Serves until ``shutdown()``, until the task is cancelled, or — run as a
    /// service of a ServiceGroup — until that group shuts down gracefully (call
    /// ``beginShutdown()`` from the graceful-shutdown handler so long polls answer).
    public func run() async throws {
        let serviceGroup = ServiceGroup(configuration: .init(services: [application], logger: logger))
        group.withLock { $0 = serviceGroup }
        do {
            try await serviceGroup.run()
        } catch {
            api.stop()
            await closeStore()
            throw error
        }
        api.stop()
        await closeStore()
    }

    /// The port the server listens on, once it does.
    public func boundPort() async -> Int {
        await port.wait()
    }

    /// Answers every waiting snapshot long poll, so that graceful shutdown does
    /// not wait for them (they can last a minute).
    public func beginShutdown() {
        api.drainLongPolls()
    }

    /// Graceful shutdown: long polls answered, requests in flight finished, then ``run()`` returns.
    public func shutdown() async {
        beginShutdown()
        let serviceGroup = group.withLock { $0 }
        await serviceGroup?.triggerGracefulShutdown()
    }
}

/// The listening port, announced once the socket is bound (port 0 picks one).
private final class BoundPort: Sendable {
    private let state = Mutex<(port: Int?, waiting: [CheckedContinuation<Int, Never>])>((nil, []))

    func announce(_ port: Int) {
        let waiting = state.withLock { s in
            s.port = port
            defer { s.waiting = [] }
            return s.waiting
        }
        for w in waiting { w.resume(returning: port) }
    }

    func wait() async -> Int {
        await withCheckedContinuation { c in
            let now = state.withLock { s -> Int? in
                if let p = s.port { return p }
                s.waiting.append(c)
                return nil
            }
            if let now { c.resume(returning: now) }
        }
    }
}
