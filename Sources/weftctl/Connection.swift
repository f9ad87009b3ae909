// Where weft-control is and who we are to it: flags, then environment, then
// the optional config file, then the defaults of a node that runs weft-control.
import ArgumentParser
import Foundation
import WeftControlClient
import WeftCore
import Yams

struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "weft-control's address (env WEFT_SERVER; default https://127.0.0.1:15443).", valueName: "url"))
    var server: String?

    @Option(name: .customLong("ca-file"), help: ArgumentHelp(
        "CA bundle weft-control's certificate must chain to (env WEFT_CA_FILE; default \(Settings.defaultCAFile)).",
        valueName: "path"), completion: .file())
    var caFile: String?

    @Option(name: .customLong("token-file"), help: ArgumentHelp(
        "File holding the admin token (env WEFT_TOKEN_FILE; default \(Settings.defaultTokenFile)).", valueName: "path"),
        completion: .file())
    var tokenFile: String?

    @Option(name: .customLong("config"), help: ArgumentHelp(
        "Optional config file with server, caFile, tokenFile, namespace (env WEFT_CONFIG; default ~/.weft/config when it exists).",
        valueName: "path"), completion: .file())
    var config: String?

    @Option(name: .customLong("request-timeout"), help: ArgumentHelp(
        "How long to wait for an answer (30s, 2m).", valueName: "duration"))
    var requestTimeout: String?

    /// The settings in force, each from the first place that sets it.
    func settings(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Settings {
        var s = Settings()
        let configPath = config ?? environment["WEFT_CONFIG"]
        let file = try ConfigFile.load(explicit: configPath, home: environment["HOME"])
        func pick(_ flag: String?, _ flagName: String, _ env: String, _ fromFile: String?, _ fileKey: String,
                  _ fallback: String) -> (String, String) {
            if let flag { return (flag, flagName) }
            if let v = environment[env], !v.isEmpty { return (v, env) }
            if let fromFile, let file { return (fromFile, "\(fileKey) in \(file.path)") }
            return (fallback, "")
        }
        (s.server, s.serverOrigin) = pick(server, "--server", "WEFT_SERVER", file?.server, "server", Settings.defaultServer)
        (s.caFile, s.caOrigin) = pick(caFile, "--ca-file", "WEFT_CA_FILE", file?.caFile, "caFile", Settings.defaultCAFile)
        (s.tokenFile, s.tokenOrigin) = pick(tokenFile, "--token-file", "WEFT_TOKEN_FILE", file?.tokenFile, "tokenFile", Settings.defaultTokenFile)
        // An empty origin means the default: hints then name the flag.
        s.caDefaulted = s.caOrigin.isEmpty
        s.tokenDefaulted = s.tokenOrigin.isEmpty
        if s.serverOrigin.isEmpty { s.serverOrigin = "--server" }
        if s.caOrigin.isEmpty { s.caOrigin = "--ca-file" }
        if s.tokenOrigin.isEmpty { s.tokenOrigin = "--token-file" }
        s.namespace = file?.namespace ?? "default"
        if let requestTimeout {
            s.timeout = try Durations.parse(requestTimeout, option: "--request-timeout")
        }
        return s
    }
}

struct Settings {
    static let defaultServer = "https://127.0.0.1:15443"
    static let defaultCAFile = "/var/lib/weft-control/ca/ca.crt"
    static let defaultTokenFile = "/var/lib/weft-control/admin.token"

    var server = defaultServer
    var serverOrigin = "--server"
    var caFile = defaultCAFile
    var caOrigin = "--ca-file"
    var tokenFile = defaultTokenFile
    var tokenOrigin = "--token-file"
    var caDefaulted = true
    var tokenDefaulted = true
    /// The namespace of `get`/`delete` without -n.
    var namespace = "default"
    var timeout: Duration = .seconds(30)

    func endpoint() throws -> ControlEndpoint {
        let pem: String
        do {
            pem = try String(contentsOfFile: caFile, encoding: .utf8)
        } catch {
            let fix = caDefaulted ? "pass --ca-file or set WEFT_CA_FILE" : "check \(caOrigin)"
            throw CLIError("cannot read the CA bundle \(caFile) (\(Files.reason(error))) — \(fix); weft-control writes it to <data-dir>/ca/ca.crt")
        }
        return ControlEndpoint(url: server, caBundlePEM: pem, urlOrigin: serverOrigin, caOrigin: caOrigin)
    }

    func adminToken() throws -> String {
        let token: String
        do {
            token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch {
            let fix = tokenDefaulted ? "pass --token-file or set WEFT_TOKEN_FILE" : "check \(tokenOrigin)"
            throw CLIError("cannot read the admin token \(tokenFile) (\(Files.reason(error))) — \(fix); weft-control writes it to <data-dir>/admin.token, readable by root only")
        }
        guard !token.isEmpty else {
            throw CLIError("the admin token file \(tokenFile) is empty — it should hold the contents of weft-control's <data-dir>/admin.token")
        }
        return token
    }

    /// Runs `body` with an admin client, shut down afterwards whatever happens.
    func withAdminClient<T: Sendable>(_ body: (ControlClient) async throws -> T) async throws -> T {
        let endpoint = try endpoint()
        let token = try adminToken()
        return try await ControlClient.withClient(endpoint: endpoint, credentials: .adminToken(token), timeout: timeout, body)
    }
}

/// `~/.weft/config`: the kubeconfig idea without contexts, for an operator
/// who talks to a remote weft-control:
///
///     server: https://10.0.0.5:15443
///     caFile: ca.crt            # relative to this file
///     tokenFile: admin.token
///     namespace: shop           # for get/delete without -n
struct ConfigFile {
    var path: String
    var server: String?
    var caFile: String?
    var tokenFile: String?
    var namespace: String?

    static func load(explicit: String?, home: String?) throws -> ConfigFile? {
        let path: String
        if let explicit {
            path = explicit
        } else if let home, FileManager.default.fileExists(atPath: home + "/.weft/config") {
            path = home + "/.weft/config"
        } else {
            return nil
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CLIError("cannot read the config file \(path) (\(Files.reason(error)))")
        }
        let docs: [ManifestDocument]
        do {
            docs = try YAMLDocuments.documents(in: text, source: path)
        } catch {
            throw CLIError("\(error)")
        }
        var file = ConfigFile(path: path)
        guard let object = docs.first?.value.objectValue else { return file }
        let dir = (path as NSString).deletingLastPathComponent
        func relative(_ p: String) -> String { p.hasPrefix("/") || dir.isEmpty ? p : dir + "/" + p }
        for member in object {
            guard case .string(let value) = member.value else {
                throw CLIError("\(path): \(member.key): expected a string, found \(member.value.serialized())")
            }
            switch member.key {
            case "server": file.server = value
            case "caFile": file.caFile = relative(value)
            case "tokenFile": file.tokenFile = relative(value)
            case "namespace": file.namespace = value
            default:
                throw CLIError("\(path): \(member.key): unknown key (allowed: server, caFile, tokenFile, namespace)")
            }
        }
        return file
    }
}

/// A failure to report as `error: message` with a non-zero exit, without usage text.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    var exitCode: Int32
    init(_ description: String, exitCode: Int32 = 1) {
        self.description = description
        self.exitCode = exitCode
    }
}

enum Files {
    /// "no such file", "permission denied", … from a Foundation file error.
    static func reason(_ error: any Error) -> String {
        let ns = error as NSError
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
           let message = strerror(Int32(underlying.code)) {
            return String(cString: message).lowercased()
        }
        switch ns.code {
        case NSFileReadNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError: return "permission denied"
        case NSFileReadInapplicableStringEncodingError: return "not UTF-8 text"
        default: return ns.localizedDescription
        }
    }

    /// Reads a file, or standard input for `-`.
    static func read(_ path: String) throws -> String {
        if path == "-" {
            let data = FileHandle.standardInput.readDataToEndOfFile()
            guard let text = String(data: data, encoding: .utf8) else { throw CLIError("stdin: not UTF-8 text") }
            return text
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CLIError("\(path): no such file")
        }
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CLIError("cannot read \(path) (\(reason(error)))")
        }
    }

    /// `-f` arguments expanded: a directory means its .yaml, .yml and .json
    /// files in name order (not recursive), as kubectl does.
    static func expand(_ paths: [String]) throws -> [String] {
        var out: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            if path != "-", FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                let manifests = names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") || $0.hasSuffix(".json") }.sorted()
                if manifests.isEmpty { throw CLIError("\(path): a directory without .yaml, .yml or .json files") }
                out += manifests.map { (path as NSString).appendingPathComponent($0) }
            } else {
                out.append(path)
            }
        }
        return out
    }

    /// Every document of every file, List documents expanded.
    static func documents(_ paths: [String]) throws -> [ManifestDocument] {
        guard !paths.isEmpty else { throw ArgumentParser.ValidationError("-f is required: a file, a directory, or - for stdin") }
        var docs: [ManifestDocument] = []
        for path in try expand(paths) {
            do {
                docs += try YAMLDocuments.documents(in: try read(path), source: path)
            } catch let failure as YAMLDocuments.Failure {
                throw CLIError(failure.description)
            }
        }
        do {
            return try Manifest.expandLists(docs)
        } catch {
            throw CLIError(error.description)
        }
    }
}

enum Durations {
    /// `90s`, `30m`, `1h`, `1h30m`, `7d`, or plain seconds.
    static func parse(_ text: String, option: String) throws -> Duration {
        if let seconds = Int(text), seconds > 0 { return .seconds(seconds) }
        var total = 0
        var number = ""
        var sawUnit = false
        for c in text {
            if c.isASCII, c.isNumber {
                number.append(c)
                continue
            }
            let unit: Int
            switch c {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            default: throw ArgumentParser.ValidationError("\(option): \"\(text)\" is not a duration such as 90s, 30m, 1h or 1h30m")
            }
            guard let n = Int(number) else { throw ArgumentParser.ValidationError("\(option): \"\(text)\" is not a duration such as 90s, 30m, 1h or 1h30m") }
            total += n * unit
            number = ""
            sawUnit = true
        }
        guard sawUnit, number.isEmpty, total > 0 else {
            throw ArgumentParser.ValidationError("\(option): \"\(text)\" is not a positive duration such as 90s, 30m, 1h or 1h30m")
        }
        return .seconds(total)
    }
}
