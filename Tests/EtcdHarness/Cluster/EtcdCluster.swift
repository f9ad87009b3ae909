import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway etcd cluster on loopback: `members` etcd processes (Debian's
/// `etcd-server`, found on PATH) with free ports and their own temporary data
/// dirs. ``stop()`` kills every member and removes the dirs; call it however
/// the work using the cluster ended. Each member runs under a small shell
/// that kills it when this process is gone, so a crashed test run leaves no
/// etcd behind.
public final class EtcdCluster: Sendable {
    public struct Member: Sendable {
        public let name: String
        public let clientURL: String
        public let peerURL: String
        public let dataDirectory: String
    }

    public let members: [Member]
    public let root: String
    private let processes: Mutex<[Int: Process]>

    public var clientURLs: [String] { members.map(\.clientURL) }

    /// The etcd binary: `etcd` on PATH, or an error that says how to get it.
    public static func locate() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/etcd"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw HarnessError("etcd is not on PATH (\(path)): these tests need a real etcd cluster. Install Debian's etcd-server (`make deps` does) and run them again")
    }

    /// Starts the members and waits until the cluster has a leader and answers.
    /// - Parameter directory: where the data dirs go; /dev/shm when there is one
    ///   (tests: fsync to memory), or the system's temporary dir.
    /// - Parameter goMaxProcs: GOMAXPROCS for each member (tests: 1, so three
    ///   members starting at once leave the machine's cores to the tests).
    public static func start(members count: Int = 3, directory: String? = nil, log: Bool = false,
                             goMaxProcs: Int? = nil) async throws -> EtcdCluster {
        let binary = try locate()
        let base = directory ?? (FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory())
        let root = base + "/weft-etcd-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let ports = try freePorts(count * 2)
        let members = (0..<count).map { i in
            Member(name: "m\(i)", clientURL: "http://127.0.0.1:\(ports[2 * i])", peerURL: "http://127.0.0.1:\(ports[2 * i + 1])",
                   dataDirectory: root + "/m\(i)")
        }
        let cluster = EtcdCluster(members: members, root: root)
        let initial = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        do {
            for (i, m) in members.enumerated() {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/bin/sh")
                let pidFile = root + "/\(m.name).pid"
                // Start etcd, note its pid, and kill it once this process (or etcd) is gone.
                let watchdog = "\"$@\" & child=$!; echo $child > \(pidFile); "
                    + "while kill -0 \(getpid()) 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done; kill -9 $child 2>/dev/null; wait"
                var environment = ProcessInfo.processInfo.environment
                if let goMaxProcs { environment["GOMAXPROCS"] = String(goMaxProcs) }
                p.environment = environment
                p.arguments = ["-c", watchdog, "weft-etcd-\(m.name)", binary,
                    "--name", m.name, "--data-dir", m.dataDirectory,
                    "--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
                    "--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "weft-test-\(root.suffix(8))",
                    "--heartbeat-interval", "100", "--election-timeout", "1000",
                    "--logger", "zap", "--log-outputs", log ? "stderr" : root + "/\(m.name).log",
                ]
                p.standardOutput = FileHandle.nullDevice
                if !log { p.standardError = FileHandle.nullDevice }
                try p.run()
                cluster.processes.withLock { $0[i] = p }
            }
            for m in members {
                while (try? String(contentsOfFile: root + "/\(m.name).pid", encoding: .utf8))?.hasSuffix("\n") != true {
                    try await Task.sleep(for: .milliseconds(10))
                }
            }
            try await cluster.waitUntilServing(timeout: .seconds(30))
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    private init(members: [Member], root: String) {
        self.members = members
        self.root = root
        self.processes = Mutex([:])
    }

    /// Kills one member at once (SIGKILL), as a crash would.
    public func kill(member index: Int) {
        let p = processes.withLock { $0.removeValue(forKey: index) }
        guard let p else { return }
        terminate(index, p)
    }

    /// The etcd process id of a member, for reading its CPU and memory from /proc.
    public func pid(member index: Int) -> Int32? {
        guard processes.withLock({ $0[index] }) != nil,
              let text = try? String(contentsOfFile: root + "/\(members[index].name).pid", encoding: .utf8) else { return nil }
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Kills every member and removes the data dirs.
    public func stop() {
        let all = processes.withLock { p in
            defer { p = [:] }
            return p
        }
        for (i, p) in all { terminate(i, p) }
        try? FileManager.default.removeItem(atPath: root)
    }

    private func terminate(_ index: Int, _ shell: Process) {
        if let text = try? String(contentsOfFile: root + "/\(members[index].name).pid", encoding: .utf8),
           let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            Glibc.kill(pid, SIGKILL)
        }
        if shell.isRunning { Glibc.kill(shell.processIdentifier, SIGKILL) }
        shell.waitUntilExit()
    }

    /// Until a write (a txn reading nothing needs a leader too) succeeds through every live member.
    public func waitUntilServing(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        let live = processes.withLock { Set($0.keys) }
        for (i, m) in members.enumerated() where live.contains(i) {
            while true {
                if try await Self.answers(m.clientURL) { break }
                if ContinuousClock.now > deadline {
                    throw HarnessError("etcd member \(m.name) at \(m.clientURL) did not serve within \(timeout); see \(root)/\(m.name).log")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    private static func answers(_ url: String) async throws -> Bool {
        var request = HTTPClientRequest(url: url + "/v3/kv/put")
        request.method = .POST
        // A linearizable write needs a leader: a member that answers it is in a working cluster.
        request.body = .bytes(ByteBuffer(string: #"{"key": "\#(Data("/weft-harness/ready".utf8).base64EncodedString())", "value": ""}"#))
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(2))
            _ = try await response.body.collect(upTo: 1 << 20)
            return response.status == .ok
        } catch {
            return false
        }
    }

    /// The next port to try: below the kernel's ephemeral range (32768 and
    /// up), so that no server of a test running beside this one, binding
    /// port 0, can be handed a port between our check and etcd's bind; one
    /// counter per process, so that two clusters never pick the same one.
    private static let nextPort = Mutex(Int.random(in: 20_000..<26_000))

    /// Ports free now on 127.0.0.1 (bound, checked, released).
    public static func freePorts(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        var tries = 0
        while ports.count < count {
            tries += 1
            guard tries < 2_000 else { throw HarnessError("no free port on 127.0.0.1 below 32768") }
            let port = nextPort.withLock { p -> Int in
                let chosen = p
                p = p >= 32_000 ? 20_000 : p + 1
                return chosen
            }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw HarnessError("socket: \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 }
            }
            if bound { ports.append(port) }
        }
        return ports
    }
}

public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
