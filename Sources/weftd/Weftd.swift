import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import WeftAgent
import WeftBPF

@main
struct Weftd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weftd",
        abstract: "Weft's node agent: eBPF capture of meshed workloads and the node proxy.",
        subcommands: [Run.self, Cleanup.self],
        defaultSubcommand: Run.self)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the agent (the default).")

    @Option(help: "Node configuration file.")
    var config: String = "/etc/weft/weftd.yaml"

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
        let logger = Logger(label: "weftd")
        if !AllocatorTuning.apply() {
            logger.warning("glibc refused the allocator thresholds (mallopt): freed buffers go back to the kernel, and bulk traffic costs more CPU")
        }
        let nodeConfig: NodeConfig
        do {
            nodeConfig = try NodeConfig.load(path: config)
        } catch {
            fail("invalid configuration \(config): \(error)")
        }
        let agent: NodeAgent
        do {
            agent = try NodeAgent(configPath: config, config: nodeConfig, logger: logger)
        } catch {
            fail("\(error)")
        }
        let admin = AdminServer(route: agent.adminRoute())
        let exporter = AdminServer(route: agent.metricsRoute())
        let adminChannel: any NIOChannelLike
        var exporterChannel: (any NIOChannelLike)?
        do {
            adminChannel = try await admin.bind(host: nodeConfig.adminHost, port: nodeConfig.adminPort)
            if let host = nodeConfig.telemetry.metricsHost {
                exporterChannel = try await exporter.bind(host: host, port: nodeConfig.telemetry.metricsPort, what: "telemetry.metrics.address")
                logger.info("metrics exporter listening", metadata: ["address": "\(host):\(nodeConfig.telemetry.metricsPort)/metrics"])
            }
        } catch {
            fail("\(error)")
        }
        defer {
            Task { [exporterChannel] in
                try? await exporterChannel?.close()
                await exporter.shutdown()
            }
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: agent)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            try? await adminChannel.close()
            await admin.shutdown()
            fail("\(error)")
        }
        try? await adminChannel.close()
        await admin.shutdown()
    }
}

struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Detach every eBPF program of a node and remove its pins (for uninstall and tests).")

    @Option(help: "Node name, as in the config's `node:`.")
    var node: String

    @Option(help: "Pin folder root.")
    var bpfRoot: String = "/sys/fs/bpf/weft"

    func run() throws {
        guard !node.isEmpty, !node.contains("/"), node != ".", node != ".." else {
            throw ValidationError("--node: \"\(node)\" is not a node name")
        }
        CaptureDataplane.removeAll(layout: PinLayout(root: bpfRoot, node: node))
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("weftd: \(message)\n".utf8))
    exit(1)
}
