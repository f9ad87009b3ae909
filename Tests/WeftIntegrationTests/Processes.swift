import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A child process whose output goes to files rather than pipes: a pipe that
/// nobody drains would block a chatty child (weftd, a probe loop), and files
/// can be read while the child still runs and printed after a failure.
final class Spawned: @unchecked Sendable {
    let label: String
    let outputURL: URL
    let errorURL: URL?
    private let process = Process()

    /// `arguments[0]` is looked up in PATH unless it is absolute. stderr goes
    /// to `errorURL` when given, else into the same file as stdout.
    init(label: String, arguments: [String], environment: [String: String] = [:],
         outputURL: URL, errorURL: URL? = nil, append: Bool = false) throws {
        self.label = label
        self.outputURL = outputURL
        self.errorURL = errorURL
        let out = try Self.openForWriting(outputURL, append: append)
        let err = try errorURL.map { try Self.openForWriting($0, append: append) }
        defer {
            try? out.close()
            try? err?.close()
        }
        if arguments[0].hasPrefix("/") {
            process.executableURL = URL(fileURLWithPath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err ?? out
        try process.run()
    }

    private static func openForWriting(_ url: URL, append: Bool) throws -> FileHandle {
        if !append || !FileManager.default.fileExists(atPath: url.path) {
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw HarnessError("cannot create \(url.path)")
            }
        }
        let handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
        return handle
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var terminationStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    func signal(_ sig: Int32) {
        if process.isRunning { kill(pid, sig) }
    }

    /// Polls rather than blocking, so that a test task can give up on time.
    func waitExit(timeout: Double) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// For teardown, which must finish even in a cancelled task.
    func waitExitSync(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    /// SIGKILL and reap; true once the process is gone.
    @discardableResult
    func stop() -> Bool {
        signal(SIGKILL)
        return waitExitSync(timeout: 5)
    }

    var output: String { (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "" }
    var errorOutput: String { errorURL.flatMap { try? String(contentsOf: $0, encoding: .utf8) } ?? "" }

    /// The complete JSON lines written so far (a line still being written is
    /// skipped; tracebacks and other noise are ignored).
    var jsonLines: [String] {
        let text = output
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        if !text.hasSuffix("\n"), !lines.isEmpty { lines.removeLast() }
        return lines.filter { $0.hasPrefix("{") }
    }

    func tail(_ n: Int = 80) -> String {
        output.split(separator: "\n", omittingEmptySubsequences: false).suffix(n).joined(separator: "\n")
    }
}

/// A child whose output goes to temporary files, read once it has exited.
private struct CapturedRun {
    let arguments: [String]
    let out: URL
    let err: URL
    let child: Spawned?
    let startError: (any Error)?

    init(_ arguments: [String], environment: [String: String]) {
        self.arguments = arguments
        let token = "weft-it-\(UUID().uuidString)"
        out = FileManager.default.temporaryDirectory.appendingPathComponent("\(token).out")
        err = FileManager.default.temporaryDirectory.appendingPathComponent("\(token).err")
        do {
            child = try Spawned(label: arguments[0], arguments: arguments, environment: environment,
                                outputURL: out, errorURL: err)
            startError = nil
        } catch {
            child = nil
            startError = error
        }
    }

    var startFailure: CommandResult {
        CommandResult(command: arguments, status: -1, stdout: "", stderr: "cannot start: \(startError.map { "\($0)" } ?? "?")")
    }

    func result(exited: Bool, timeout: Double) -> CommandResult {
        guard let child else { return startFailure }
        guard exited else {
            child.stop()
            return CommandResult(command: arguments, status: -1, stdout: child.output,
                                 stderr: child.errorOutput + "\n(killed after \(timeout) s)")
        }
        return CommandResult(command: arguments, status: child.terminationStatus ?? -1,
                             stdout: child.output, stderr: child.errorOutput)
    }

    func removeFiles() {
        try? FileManager.default.removeItem(at: out)
        try? FileManager.default.removeItem(at: err)
    }
}

struct CommandResult: CustomStringConvertible {
    var command: [String]
    var status: Int32
    var stdout: String
    var stderr: String
    var succeeded: Bool { status == 0 }
    var description: String {
        "`\(command.joined(separator: " "))` exited \(status)\n\(stdout)\(stderr)"
    }
}

enum Command {
    /// Runs a short command to completion. Blocking: meant for `ip`, `bpftool`,
    /// cgroup and cleanup steps that take milliseconds, and for teardown.
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 15) -> CommandResult {
        let run = CapturedRun(arguments, environment: environment)
        defer { run.removeFiles() }
        guard let child = run.child else { return run.startFailure }
        return run.result(exited: child.waitExitSync(timeout: timeout), timeout: timeout)
    }

    /// Like `run`, but polls without blocking a thread of the cooperative
    /// pool: weftctl and curl take a tenth of a second or more.
    static func runAsync(_ arguments: [String], environment: [String: String] = [:],
                         timeout: Double = 20) async -> CommandResult {
        let run = CapturedRun(arguments, environment: environment)
        defer { run.removeFiles() }
        guard let child = run.child else { return run.startFailure }
        return run.result(exited: await child.waitExit(timeout: timeout), timeout: timeout)
    }

    /// Like `run`, but a non-zero exit is an error.
    @discardableResult
    static func check(_ arguments: [String], timeout: Double = 15) throws -> CommandResult {
        let result = run(arguments, timeout: timeout)
        guard result.succeeded else { throw HarnessError(result.description) }
        return result
    }
}
