// swift-tools-version:6.1
import PackageDescription

// Modules by layer (see docs/architecture.md):
//   WeftCore    value types, no I/O
//   CLibBPF     libbpf through pkg-config;  CWeftShim  C helpers sharing bpf/weft_abi.h
//   WeftBPF     loads, pins, attaches and checks the eBPF programs from bpf/
//   WeftProxy   the node proxy's data path (SwiftNIO)
//   WeftAgent   weftd's wiring: config, discovery, reconcile, admin server
//   weftd, weftctl   thin mains
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "weft",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "weftd", targets: ["weftd"]),
        .executable(name: "weftctl", targets: ["weftctl"]),
        .executable(name: "weft-control", targets: ["weft-control"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // OTLP over HTTP only: the OTLPGRPC trait would bring gRPC into the build.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
    ],
    targets: [
        .target(name: "WeftCore", swiftSettings: swiftSettings),
        // HTTP handling that must be exact and fuzzable: path normalisation,
        // header validation, HTTPRoute matching. No I/O.
        .target(name: "WeftHTTP", dependencies: ["WeftCore"], swiftSettings: swiftSettings),
        .target(
            name: "WeftIdentity",
            dependencies: [
                "WeftCore",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WeftStore",
            dependencies: [
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WeftControl",
            dependencies: [
                "WeftCore", "WeftStore", "WeftIdentity",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WeftControlClient",
            dependencies: [
                "WeftCore", "WeftIdentity",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "weft-control",
            dependencies: [
                "WeftControl",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .systemLibrary(
            name: "CLibBPF",
            pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev", "libelf-dev", "zlib1g-dev"])]
        ),
        .target(name: "CWeftShim", dependencies: ["CLibBPF"]),
        .executableTarget(name: "weft-bpf-embed", path: "Plugins/Tools/weft-bpf-embed"),
        .plugin(
            name: "BPFObjectsPlugin",
            capability: .buildTool(),
            dependencies: ["weft-bpf-embed"]
        ),
        .target(
            name: "WeftBPF",
            dependencies: [
                "WeftCore", "CWeftShim", "CLibBPF",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["BPFObjectsPlugin"]
        ),
        // Istio-compatible metrics (swift-prometheus), OTLP traces (swift-otel),
        // JSON access logs, process metrics. No NIO channels: the proxy calls in.
        .target(
            name: "WeftTelemetry",
            dependencies: [
                "WeftCore",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WeftProxy",
            dependencies: [
                "WeftCore", "CWeftShim", "WeftIdentity", "WeftHTTP", "WeftTelemetry",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "WeftAgent",
            dependencies: [
                "WeftCore", "WeftBPF", "WeftProxy", "CWeftShim", "WeftControlClient", "WeftIdentity", "WeftTelemetry",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "weftd",
            dependencies: [
                "WeftAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "weftctl",
            dependencies: [
                "WeftCore", "WeftControlClient",
                .product(name: "Yams", package: "Yams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "WeftCoreTests", dependencies: ["WeftCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WeftHTTPTests", dependencies: ["WeftHTTP", "WeftCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WeftBPFTests", dependencies: ["WeftBPF", "CWeftShim"], swiftSettings: swiftSettings),
        .testTarget(
            name: "WeftIdentityTests",
            dependencies: [
                "WeftIdentity", "WeftCore",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),
        // A throwaway etcd cluster (Debian's etcd-server) on loopback, for the
        // tests and the control-plane benchmark.
        .target(
            name: "WeftEtcdHarness",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/EtcdHarness/Cluster",
            swiftSettings: swiftSettings
        ),
        // The same cluster as a Swift Testing suite trait: started around a
        // suite, always torn down.
        .target(name: "WeftEtcdTesting", dependencies: ["WeftEtcdHarness"], path: "Tests/EtcdHarness/Trait", swiftSettings: swiftSettings),
        // `make bench-control`: simulated agents against weft-control (Benchmarks/control/).
        .executableTarget(
            name: "weft-control-bench",
            dependencies: [
                "WeftIdentity", "WeftEtcdHarness",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Benchmarks/control/Sources/weft-control-bench",
            swiftSettings: swiftSettings
        ),
        // `make bench-telemetry`: recording cost and /metrics render time (Benchmarks/telemetry/).
        .executableTarget(
            name: "weft-telemetry-bench",
            dependencies: ["WeftTelemetry", .product(name: "Prometheus", package: "swift-prometheus")],
            path: "Benchmarks/telemetry/Sources/weft-telemetry-bench",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WeftStoreTests",
            dependencies: [
                "WeftStore", "WeftEtcdTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WeftControlTests",
            dependencies: [
                "WeftControl", "WeftControlClient", "WeftIdentity", "WeftStore", "WeftCore", "WeftEtcdTesting",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "WeftAgentTests", dependencies: ["WeftAgent"], swiftSettings: swiftSettings),
        // The proxy's channel handlers on NIO's EmbeddedChannel: exact bytes and flushes, no sockets
        // (and the event loops' priority, on real threads).
        .testTarget(
            name: "WeftProxyTests",
            dependencies: [
                "WeftProxy",
                "WeftCore",
                "WeftIdentity",
                "WeftTelemetry",
                "CWeftShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "WeftTelemetryTests", dependencies: ["WeftTelemetry", "WeftCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "WeftIntegrationTests",
            dependencies: ["WeftCore"],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
