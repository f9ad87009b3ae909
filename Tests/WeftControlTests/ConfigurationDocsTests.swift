import Foundation
import Testing

/// docs/configuration.md against the truth: every flag the three binaries
/// accept (from their own `--experimental-dump-help`) and every weftd.yaml
/// key the parser allows must be documented there.
@Suite("configuration reference")
struct ConfigurationDocsTests {
    static let docs: String = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/configuration.md")
        return (try? String(contentsOf: url, encoding: .utf8)) ?? ""
    }()

    static func longFlags(_ binary: String) throws -> Set<String> {
        let r = try WeftctlSubprocess.run(try WeftctlBinaries.path(binary), ["--experimental-dump-help"])
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        var flags = Set<String>()
        func walk(_ command: [String: Any]) {
            for argument in command["arguments"] as? [[String: Any]] ?? [] where argument["kind"] as? String != "positional" {
                for name in argument["names"] as? [[String: Any]] ?? [] where name["kind"] as? String == "long" {
                    if let n = name["name"] as? String, n != "help", n != "version" { flags.insert(n) }
                }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] { walk(sub) }
        }
        walk(json["command"] as? [String: Any] ?? [:])
        return flags
    }

    @Test("every flag of weftd, weft-control and weftctl is documented", arguments: ["weftd", "weft-control", "weftctl"])
    func everyFlagIsDocumented(_ binary: String) throws {
        let flags = try Self.longFlags(binary)
        #expect(!flags.isEmpty)
        for flag in flags.sorted() {
            #expect(Self.docs.contains("`--\(flag)`") || Self.docs.contains("--\(flag)`"), "\(binary) --\(flag) is not in docs/configuration.md")
        }
    }

    @Test("every weftd.yaml key the parser accepts is documented")
    func everyConfigKeyIsDocumented() throws {
        // The parser's allowOnly lists, read from its source: adding a key
        // there without documenting it fails here.
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/WeftAgent/NodeConfig.swift")
        let text = try String(contentsOf: source, encoding: .utf8)
        var checked = 0
        for line in text.split(separator: "\n") where line.contains(".allowOnly([") {
            let reader = line.trimmingCharacters(in: .whitespaces).dropFirst("try ".count).prefix { $0 != "." }
            let keys = line.split(separator: "[")[1].split(separator: "]")[0].split(separator: ",")
                .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " \"")) }
            // Which section a list belongs to: its keys say it.
            let prefix: String
            switch true {
            case keys.contains("node"): prefix = ""
            case keys.contains("outboundPort"): prefix = "proxy."
            case keys == ["address"]: prefix = "admin."
            case keys.contains("clusterDomain"): prefix = "dns."
            case keys.contains("excludePorts"): prefix = "capture."
            case keys == ["name", "mesh"]: prefix = "namespaces[]."
            case keys.contains("cgroup"): prefix = "workloads[]."
            case keys.contains("tokenFile"): prefix = "control."
            case keys.contains("accessLog"): prefix = "telemetry."
            case keys.contains("maxSeriesPerMetric"): prefix = "telemetry.metrics."
            case keys.contains("serviceName"): prefix = "telemetry.tracing."
            case keys.contains("output"): prefix = "telemetry.accessLog."
            case keys == ["enabled", "samplePercent"]: prefix = "telemetry.accessLog.namespaces.<ns>."
            default: prefix = "?\(reader)."
            }
            for key in keys where !(prefix.isEmpty && ["proxy", "admin", "capture", "namespaces", "workloads", "control", "dns", "telemetry"].contains(key))
            && !(prefix == "telemetry." && ["metrics", "tracing", "accessLog"].contains(key))
            && !(prefix == "telemetry.accessLog." && key == "namespaces") {
                checked += 1
                #expect(Self.docs.contains("`\(prefix)\(key)`"), "weftd.yaml key \(prefix)\(key) is not in docs/configuration.md")
            }
        }
        #expect(checked >= 25, "found only \(checked) keys: did the parser change shape?")
    }
}
