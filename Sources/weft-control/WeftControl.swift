import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import WeftControl

/// weft-control: the control API server (docs/control-api.md). Parsing and
/// wiring only; everything else is in WeftControl.
@main
struct WeftControlCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weft-control",
        abstract: "Weft's control plane: desired state, node sync and the mesh CA, over HTTPS.")

    @Option(help: "Where the store, the mesh CA, the server certificate and admin.token live.")
    var dataDir: String = "/var/lib/weft-control"

    @Option(help: "Address to serve on, host:port or [IPv6]:port.")
    var listen: String = ControlServerConfiguration.defaultListen

    @Option(help: "The mesh's SPIFFE trust domain.")
    var trustDomain: String = "cluster.local"

    @Option(help: "Where Services' virtual IPs are allocated from.")
    var serviceCidr: String = "10.96.0.0/16"

    @Option(help: "Lifetime of workload certificates in seconds (agents renew at half of it).")
    var workloadCertTtl: Int = 86_400

    @Option(help: "Where desired state lives: sqlite (<data-dir>/weft.db, one replica) or etcd (shared by replicas).")
    var store: String = "sqlite"

    @Option(help: "With --store etcd: the etcd members' client URLs, comma-separated (http://HOST:PORT,...).")
    var etcdEndpoints: String?

    @Option(help: "With --store etcd: the key prefix this mesh's state lives under (default /weft/).")
    var etcdPrefix: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level: \"\(logLevel)\" is not one of trace, debug, info, notice, warning, error, critical")
        }
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "weft-control")
        let server: ControlServer
        do {
            let configuration = try ControlServerConfiguration(
                dataDirectory: dataDir, listen: listen, trustDomain: trustDomain, serviceCIDR: serviceCidr,
                workloadCertificateTTLSeconds: workloadCertTtl,
                store: store, etcdEndpoints: etcdEndpoints, etcdPrefix: etcdPrefix)
            server = try await ControlServer(configuration: configuration, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode.failure
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: ControlService(server: server))],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

/// Runs the server; on SIGTERM, answers the waiting long polls first so that the
/// graceful shutdown of the HTTP server does not wait up to a minute for them.
struct ControlService: Service {
    let server: ControlServer

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.run()
        } onGracefulShutdown: {
            // The server runs its own ServiceGroup; shut it down explicitly.
            Task { await server.shutdown() }
        }
    }
}

