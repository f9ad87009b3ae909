// Running the real binaries (weft-control, weftctl) as subprocesses, for the
// end-to-end tests of weftctl and the client. Every process and temporary
// directory made here is cleaned up by its owner's stop()/remove(), which the
// tests call in `defer`, so a failing expectation leaves nothing behind.
import Foundation
import Testing
import WeftControlClient

enum WeftctlBinaries {
    /// The directory of the test binary, where SwiftPM also puts the package's executables.
    static let directory: URL = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent()
    }()

    static func path(_ name: String) throws -> String {
        let candidates = [directory.appendingPathComponent(name).path,
                          directory.deletingLastPathComponent().appendingPathComponent(name).path]
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
        throw WeftctlTestError("\(name) is not built next to the tests (looked in \(candidates.joined(separator: ", "))); run swift build first")
    }
}

struct WeftctlTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A temporary directory, removed with everything in it.
final class WeftctlTempDir: @unchecked Sendable {
    let path: String

    init(_ prefix: String = "weftctl-test") throws {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
    }

    func file(_ name: String, _ contents: String) throws -> String {
        let p = path + "/" + name
        try contents.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// What a finished command printed.
struct WeftctlResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String
    var description: String { "exit \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)" }
}

enum WeftctlSubprocess {
    /// Runs `executable` to completion (killed after `timeout`), output captured through files
    /// so that a chatty process cannot block on a full pipe.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    stdin: String? = nil, timeout: TimeInterval = 60) throws -> WeftctlResult {
        let scratch = try WeftctlTempDir("weftctl-run")
        defer { scratch.remove() }
        let outPath = try scratch.file("stdout", "")
        let errPath = try scratch.file("stderr", "")
        let inPath = try scratch.file("stdin", stdin ?? "")

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        process.standardInput = FileHandle(forReadingAtPath: inPath)
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            throw WeftctlTestError("\(executable) \(arguments.joined(separator: " ")) did not finish within \(Int(timeout))s")
        }
        process.waitUntilExit()
        return WeftctlResult(status: process.terminationStatus,
                             stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                             stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}

/// A real `weft-control` on 127.0.0.1 and a free port, with its own data dir.
final class WeftControlProcess: @unchecked Sendable {
    let dataDir: WeftctlTempDir
    let process = Process()
    let logPath: String
    private(set) var port = 0

    var url: String { "https://127.0.0.1:\(port)" }
    var caFile: String { dataPath + "/ca/ca.crt" }
    var tokenFile: String { dataPath + "/admin.token" }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    init() throws {
        dataDir = try WeftctlTempDir("weft-control-test")
        let logs = dataDir.path + "/log"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        logPath = logs + "/weft-control.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: try WeftctlBinaries.path("weft-control"))
        // Port 0: the server picks a free port and logs it, so parallel tests never collide.
        process.arguments = ["--data-dir", dataDir.path + "/data", "--listen", "127.0.0.1:0"]
        process.standardOutput = FileHandle(forWritingAtPath: logPath)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        do {
            try process.run()
            try waitForPort()
        } catch {
            stop()
            throw error
        }
    }

    var dataPath: String { dataDir.path + "/data" }

    private func waitForPort() throws {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let text = log
            if let range = text.range(of: #"address=127\.0\.0\.1:([0-9]+)"#, options: .regularExpression) {
                let match = text[range]
                if let colon = match.lastIndex(of: ":"), let n = Int(match[match.index(after: colon)...]), n > 0 {
                    port = n
                    return
                }
            }
            if !process.isRunning {
                throw WeftctlTestError("weft-control exited with \(process.terminationStatus) before listening:\n\(text)")
            }
            usleep(50_000)
        }
        throw WeftctlTestError("weft-control did not log its listening address within 30s:\n\(log)")
    }

    /// The environment that points weftctl at this server (HOME isolated from the user's ~/.weft/config).
    var environment: [String: String] {
        ["WEFT_SERVER": url, "WEFT_CA_FILE": caFile, "WEFT_TOKEN_FILE": tokenFile,
         "HOME": dataDir.path, "PATH": "/usr/bin:/bin"]
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning, Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        dataDir.remove()
    }
}

/// `weftctl ARGS` against `server` (or with only `environment` when there is none).
func weftctl(_ arguments: [String], server: WeftControlProcess? = nil, environment: [String: String] = [:],
             stdin: String? = nil) throws -> WeftctlResult {
    var env = server?.environment ?? ["HOME": NSTemporaryDirectory(), "PATH": "/usr/bin:/bin"]
    env.merge(environment) { _, new in new }
    return try WeftctlSubprocess.run(try WeftctlBinaries.path("weftctl"), arguments, environment: env, stdin: stdin)
}

/// The ControlError `body` throws, or nil when it succeeds (another error fails the test).
func controlError(_ body: () async throws -> Void) async -> ControlError? {
    do {
        try await body()
        return nil
    } catch let error as ControlError {
        return error
    } catch {
        Issue.record("expected a ControlError, got \(error)")
        return nil
    }
}
