// Weft's own kinds, `weft.dev/v1alpha1`: Namespace, Workload, Service, FaultInjection.

/// What a port speaks, which decides what the proxy can do with it: HTTP
/// routing, retries and L7 policy need `http`, `http2` or `grpc`; `tcp` is
/// relayed as opaque bytes. `auto`, the default (a port that declares
/// nothing), is detected from the client's first bytes, as Istio does: an
/// HTTP/1.x request line or the HTTP/2 preface is HTTP, anything else (TLS
/// included) is TCP, and a client that sends nothing within the detection
/// timeout (a server-first protocol: SMTP, MySQL) is TCP too, so nothing the
/// proxy would misread is ever parsed as HTTP.
public enum AppProtocol: String, CaseIterable, Hashable, Sendable {
    case http, http2, grpc, tcp, auto

    /// A port's protocol as a node snapshot carries it (nil: not one of these).
    public init?(snapshotValue: String) {
        self.init(rawValue: snapshotValue.lowercased())
    }

    /// Handled at L7 by the proxy without a route.
    public var isHTTP: Bool { self == .http || self == .http2 || self == .grpc }

    /// Spoken to in HTTP/2 (prior knowledge).
    public var isHTTP2: Bool { self == .http2 || self == .grpc }
}

/// `spec` of a Namespace: whether its workloads are captured into the mesh.
public struct NamespaceSpec: Hashable, Sendable {
    public var meshEnabled: Bool

    public init(meshEnabled: Bool = false) {
        self.meshEnabled = meshEnabled
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> NamespaceSpec {
        guard let value else { return NamespaceSpec() }
        let r = try FieldReader(value, at: path, allowed: ["mesh"])
        var enabled = false
        if let mesh = try r.object("mesh", allowed: ["enabled"]) {
            enabled = try mesh.bool("enabled") ?? false
            mesh.finish()
        }
        r.finish()
        return NamespaceSpec(meshEnabled: enabled)
    }

    func encode() -> JSONValue {
        ["mesh": ["enabled": .bool(meshEnabled)]]
    }
}

/// `spec` of a Workload: processes on one node that the mesh treats as one
/// identity. Its labels (for Service selectors and policy selectors) are its
/// `metadata.labels`.
public struct WorkloadSpec: Hashable, Sendable {
    /// Where the workload's processes are, which is how the node finds them.
    public enum Placement: Hashable, Sendable {
        /// A cgroup path below the node's cgroup2 root, such as `custom/legacy-db`.
        case cgroup(String)
        /// A systemd unit (`catalog.service`, `run-u42.scope`), found in its
        /// namespace's slice.
        case unit(String)
    }

    public struct Port: Hashable, Sendable {
        /// An IANA service name, so that a Service's `targetPort` can name it.
        public var name: String?
        public var port: UInt16
        public var appProtocol: AppProtocol

        public init(name: String? = nil, port: UInt16, appProtocol: AppProtocol = .auto) {
            self.name = name
            self.port = port
            self.appProtocol = appProtocol
        }
    }

    /// The node that runs it (a DNS label, like weftd's `node:`).
    public var node: String
    public var placement: Placement
    /// An absolute path to the workload's network namespace (`/run/netns/x`),
    /// when it has its own.
    public var netns: String?
    /// Its identity: `spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>`.
    public var serviceAccount: String
    public var ports: [Port]
    public var addresses: [IPAddress]

    public init(node: String, placement: Placement, netns: String? = nil, serviceAccount: String = "default",
                ports: [Port] = [], addresses: [IPAddress] = []) {
        self.node = node
        self.placement = placement
        self.netns = netns
        self.serviceAccount = serviceAccount
        self.ports = ports
        self.addresses = addresses
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> WorkloadSpec {
        guard let value else { throw ValidationError(field: path, "is required (at least node, and cgroup or unit)") }
        let r = try FieldReader(value, at: path, allowed: ["node", "cgroup", "unit", "netns", "serviceAccount", "ports", "addresses"])
        let node = try r.requiredName("node", .dnsLabel)
        let placement: Placement
        switch (try r.string("cgroup"), try r.string("unit")) {
        case (nil, nil):
            throw ValidationError(field: path, "exactly one of cgroup or unit is required")
        case (_?, _?):
            throw ValidationError(field: r.field("unit"), "set either cgroup or unit, not both")
        case (let cgroup?, nil):
            placement = .cgroup(try cgroupPath(cgroup, at: r.field("cgroup")))
        case (nil, let unit?):
            guard isUnitName(unit) else {
                throw ValidationError(field: r.field("unit"), "\"\(unit)\" is not a systemd unit name of a .service or .scope (letters, digits and :_.\\-@, at most 255 characters; a template needs its instance, as in getty@tty1.service)")
            }
            placement = .unit(unit)
        }
        let netns = try r.string("netns")
        if let netns {
            let parts = netns.split(separator: "/", omittingEmptySubsequences: false)
            guard netns.hasPrefix("/"), netns.utf8.count <= 4096, !parts.contains(".."), !parts.contains("."),
                  !netns.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
                throw ValidationError(field: r.field("netns"), "\"\(netns)\" must be an absolute path such as /run/netns/NAME, without '.' or '..'")
            }
        }
        let serviceAccount = try r.name("serviceAccount", .dnsLabel) ?? "default"

        var ports: [Port] = []
        for item in try r.list("ports") ?? [] {
            let p = try FieldReader(item.value, at: item.path, allowed: ["name", "port", "protocol"])
            let name = try p.name("name", .ianaServiceName)
            guard let number = try p.port("port") else { throw ValidationError(field: p.field("port"), "is required") }
            let port = Port(name: name, port: number, appProtocol: try p.enumeration("protocol", AppProtocol.self) ?? .auto)
            if let name = port.name, let first = ports.firstIndex(where: { $0.name == name }) {
                throw ValidationError(field: p.field("name"), "\"\(name)\" is already the name of \(r.field("ports"))[\(first)]")
            }
            if let first = ports.firstIndex(where: { $0.port == port.port }) {
                throw ValidationError(field: p.field("port"), "\(port.port) is already listed as \(r.field("ports"))[\(first)]")
            }
            p.finish()
            ports.append(port)
        }

        var addresses: [IPAddress] = []
        for item in try r.stringList("addresses") ?? [] {
            guard let ip = IPAddress(item.value) else {
                throw ValidationError(field: item.path, "\"\(item.value)\" is not an IP address")
            }
            if addresses.contains(ip) { throw ValidationError(field: item.path, "\(ip) is listed twice") }
            addresses.append(ip)
        }
        r.finish()
        return WorkloadSpec(node: node, placement: placement, netns: netns, serviceAccount: serviceAccount,
                            ports: ports, addresses: addresses)
    }

    /// Relative to the cgroup root, like weftd's explicit workloads; a leading
    /// '/' names the same place. Stored without empty segments.
    private static func cgroupPath(_ text: String, at path: String) throws(ValidationError) -> String {
        let parts = text.split(separator: "/")
        guard !parts.isEmpty, !parts.contains(".."), !parts.contains("."), text.utf8.count <= 4096,
              !text.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw ValidationError(field: path, "\"\(text)\" must be a path below the cgroup root (such as custom/legacy-db), without '.' or '..'")
        }
        return parts.joined(separator: "/")
    }

    /// systemd's unit name rules for the two unit types that own processes.
    static func isUnitName(_ s: String) -> Bool {
        guard s.utf8.count <= 255 else { return false }
        let stem: Substring
        if s.hasSuffix(".service") { stem = s.dropLast(".service".count) }
        else if s.hasSuffix(".scope") { stem = s.dropLast(".scope".count) }
        else { return false }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.\\-@")
        guard !stem.isEmpty, stem.allSatisfy({ allowed.contains($0) }) else { return false }
        let at = stem.split(separator: "@", omittingEmptySubsequences: false)
        return at.count == 1 || (at.count == 2 && !at[0].isEmpty && !at[1].isEmpty)
    }

    func encode() -> JSONValue {
        var o = JSONObject()
        o.set("node", .string(node))
        switch placement {
        case .cgroup(let c): o.set("cgroup", .string(c))
        case .unit(let u): o.set("unit", .string(u))
        }
        o.set("netns", netns.map { .string($0) })
        o.set("serviceAccount", .string(serviceAccount))
        o.set("ports", list: ports.map { p in
            var po = JSONObject()
            po.set("name", p.name.map { .string($0) })
            po.set("port", .port(p.port))
            po.set("protocol", .string(p.appProtocol.rawValue))
            return .object(po)
        })
        o.set("addresses", list: addresses.map { .string($0.description) })
        return .object(o)
    }
}

/// `spec` of a Service: a stable name and virtual IP in front of the
/// workloads its selector picks.
public struct ServiceSpec: Hashable, Sendable {
    public enum TargetPort: Hashable, Sendable {
        case number(UInt16)
        /// The name of a workload port.
        case name(String)
    }

    public struct Port: Hashable, Sendable {
        /// A DNS label; required when the Service has more than one port.
        public var name: String?
        public var port: UInt16
        /// nil: the same number as `port`.
        public var targetPort: TargetPort?
        public var appProtocol: AppProtocol

        public init(name: String? = nil, port: UInt16, targetPort: TargetPort? = nil, appProtocol: AppProtocol = .auto) {
            self.name = name
            self.port = port
            self.targetPort = targetPort
            self.appProtocol = appProtocol
        }
    }

    /// Label key → value; never empty (that would select every workload of the namespace).
    public var selector: [String: String]
    public var ports: [Port]
    /// nil: the server allocates one from its service CIDR.
    public var virtualIP: IPAddress?

    public init(selector: [String: String], ports: [Port], virtualIP: IPAddress? = nil) {
        self.selector = selector
        self.ports = ports
        self.virtualIP = virtualIP
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> ServiceSpec {
        guard let value else { throw ValidationError(field: path, "is required (at least selector and ports)") }
        let r = try FieldReader(value, at: path, allowed: ["selector", "ports", "virtualIP"], unsupported: [
            "clusterIP": "Weft calls it virtualIP",
        ])
        guard let selector = try r.labels("selector") else {
            throw ValidationError(field: r.field("selector"), "is required: the labels of the workloads behind the Service")
        }
        if selector.isEmpty {
            throw ValidationError(field: r.field("selector"), "must name at least one label: an empty selector would pick every workload in the namespace")
        }
        guard let items = try r.list("ports"), !items.isEmpty else {
            throw ValidationError(field: r.field("ports"), "at least one port is required")
        }
        var ports: [Port] = []
        for item in items {
            let p = try FieldReader(item.value, at: item.path, allowed: ["name", "port", "targetPort", "protocol"])
            let name = try p.name("name", .dnsLabel)
            if name == nil, items.count > 1 {
                throw ValidationError(field: p.field("name"), "is required when a Service has more than one port")
            }
            guard let number = try p.port("port") else { throw ValidationError(field: p.field("port"), "is required") }
            var target: TargetPort?
            switch p.value("targetPort") {
            case nil: target = nil
            case .int?: target = .number(try p.port("targetPort")!)
            case .string(let s)?:
                try NameRule.ianaServiceName.check(s, at: p.field("targetPort"))
                target = .name(s)
            case let other?:
                throw ValidationError(field: p.field("targetPort"), "expected a port number or a port name, found \(other.foundDescription)")
            }
            let port = Port(name: name, port: number, targetPort: target,
                            appProtocol: try p.enumeration("protocol", AppProtocol.self) ?? .auto)
            if let name, let first = ports.firstIndex(where: { $0.name == name }) {
                throw ValidationError(field: p.field("name"), "\"\(name)\" is already the name of \(r.field("ports"))[\(first)]")
            }
            if let first = ports.firstIndex(where: { $0.port == number }) {
                throw ValidationError(field: p.field("port"), "\(number) is already listed as \(r.field("ports"))[\(first)]")
            }
            p.finish()
            ports.append(port)
        }
        var virtualIP: IPAddress?
        if let text = try r.string("virtualIP") {
            guard let ip = IPAddress(text) else {
                throw ValidationError(field: r.field("virtualIP"), "\"\(text)\" is not an IP address")
            }
            let unspecified = ip.isIPv4 ? ip.bytes[12...].allSatisfy { $0 == 0 } : ip.bytes.allSatisfy { $0 == 0 }
            // Capture leaves loopback alone and nothing answers on 0.0.0.0,
            // so such an address would never reach the proxy.
            if unspecified || ip.isLoopback {
                throw ValidationError(field: r.field("virtualIP"), "\(ip) cannot be a virtual IP: capture never sees loopback or unspecified addresses")
            }
            virtualIP = ip
        }
        r.finish()
        return ServiceSpec(selector: selector, ports: ports, virtualIP: virtualIP)
    }

    func encode() -> JSONValue {
        var o = JSONObject()
        o.set("selector", .sortedMap(selector))
        o.set("ports", list: ports.map { p in
            var po = JSONObject()
            po.set("name", p.name.map { .string($0) })
            po.set("port", .port(p.port))
            switch p.targetPort {
            case .number(let n)?: po.set("targetPort", .port(n))
            case .name(let s)?: po.set("targetPort", .string(s))
            case nil: break
            }
            po.set("protocol", .string(p.appProtocol.rawValue))
            return .object(po)
        })
        o.set("virtualIP", virtualIP.map { .string($0.description) })
        return .object(o)
    }
}

/// `spec` of a FaultInjection: Istio's VirtualService `fault` block
/// (delay, abort), applied by an HTTPRoute filter
/// `{type: ExtensionRef, extensionRef: {group: weft.dev, kind: FaultInjection, name: …}}`.
///
/// Unlike Istio, `percentage` is required: Istio's documentation has said
/// both "all requests" and "no request" for a missing percentage over the
/// years, and a fault that silently never fires is worse than a required field.
/// Durations use Gateway API's format (`5s`, `100ms`) like the rest of Weft.
public struct FaultInjectionSpec: Hashable, Sendable {
    public struct Delay: Hashable, Sendable {
        public var fixedDelay: GatewayDuration
        /// 0 to 100, of requests delayed.
        public var percentage: Double

        public init(fixedDelay: GatewayDuration, percentage: Double) {
            self.fixedDelay = fixedDelay
            self.percentage = percentage
        }
    }

    /// gRPC status names (not OK: aborting with success is not a fault).
    public enum GRPCStatus: String, CaseIterable, Hashable, Sendable {
        case cancelled = "CANCELLED", unknown = "UNKNOWN", invalidArgument = "INVALID_ARGUMENT"
        case deadlineExceeded = "DEADLINE_EXCEEDED", notFound = "NOT_FOUND", alreadyExists = "ALREADY_EXISTS"
        case permissionDenied = "PERMISSION_DENIED", resourceExhausted = "RESOURCE_EXHAUSTED"
        case failedPrecondition = "FAILED_PRECONDITION", aborted = "ABORTED", outOfRange = "OUT_OF_RANGE"
        case unimplemented = "UNIMPLEMENTED", `internal` = "INTERNAL", unavailable = "UNAVAILABLE"
        case dataLoss = "DATA_LOSS", unauthenticated = "UNAUTHENTICATED"
    }

    public enum AbortStatus: Hashable, Sendable {
        /// 200 to 599.
        case http(Int)
        case grpc(GRPCStatus)
    }

    public struct Abort: Hashable, Sendable {
        public var status: AbortStatus
        /// 0 to 100, of requests aborted.
        public var percentage: Double

        public init(status: AbortStatus, percentage: Double) {
            self.status = status
            self.percentage = percentage
        }
    }

    public var delay: Delay?
    public var abort: Abort?

    public init(delay: Delay? = nil, abort: Abort? = nil) {
        self.delay = delay
        self.abort = abort
    }

    static func decode(_ value: JSONValue?, at path: String) throws(ValidationError) -> FaultInjectionSpec {
        guard let value else { throw ValidationError(field: path, "is required (delay, abort or both)") }
        let r = try FieldReader(value, at: path, allowed: ["delay", "abort"])
        let percentNote = "the integer percent is deprecated in Istio; write percentage: {value: N}"
        var spec = FaultInjectionSpec()
        if let d = try r.object("delay", allowed: ["fixedDelay", "percentage"], unsupported: [
            "exponentialDelay": "exponentialDelay is not supported (Istio does not implement it either); use fixedDelay",
            "percent": percentNote,
        ]) {
            guard let fixed = try d.duration("fixedDelay") else { throw ValidationError(field: d.field("fixedDelay"), "is required") }
            if fixed.milliseconds < 1 {
                throw ValidationError(field: d.field("fixedDelay"), "must be at least 1ms")
            }
            spec.delay = Delay(fixedDelay: fixed, percentage: try percentage(d))
            d.finish()
        }
        if let a = try r.object("abort", allowed: ["httpStatus", "grpcStatus", "percentage"], unsupported: [
            "http2Error": "http2Error is not supported (Istio does not implement it either); use httpStatus or grpcStatus",
            "percent": percentNote,
        ]) {
            let status: AbortStatus
            switch (try a.integer("httpStatus", in: 200...599), try a.enumeration("grpcStatus", GRPCStatus.self)) {
            case (let code?, nil): status = .http(code)
            case (nil, let code?): status = .grpc(code)
            case (_?, _?): throw ValidationError(field: a.field("grpcStatus"), "set either httpStatus or grpcStatus, not both")
            case (nil, nil): throw ValidationError(field: a.path, "one of httpStatus or grpcStatus is required")
            }
            spec.abort = Abort(status: status, percentage: try percentage(a))
            a.finish()
        }
        if spec.delay == nil, spec.abort == nil {
            throw ValidationError(field: path, "at least one of delay or abort is required")
        }
        r.finish()
        return spec
    }

    /// Istio's `Percent` message: `{value: 0.0 to 100.0}`, where values below
    /// 0.0001 other than 0 are refused (Envoy's resolution is one in a million).
    private static func percentage(_ r: FieldReader) throws(ValidationError) -> Double {
        guard let p = try r.object("percentage", allowed: ["value"]) else {
            throw ValidationError(field: r.field("percentage"), "is required: write percentage: {value: 100} to fault every request")
        }
        guard let value = try p.number("value", in: 0...100) else {
            throw ValidationError(field: p.field("value"), "is required (0 to 100)")
        }
        if value > 0, value < 0.0001 {
            throw ValidationError(field: p.field("value"), "\(value) is below the smallest non-zero percentage, 0.0001")
        }
        p.finish()
        return value
    }

    func encode() -> JSONValue {
        func percentage(_ p: Double) -> JSONValue {
            let number: JSONValue = p == p.rounded() ? .int(Int64(p)) : .double(p)
            return ["value": number]
        }
        var o = JSONObject()
        if let delay {
            o.set("delay", ["fixedDelay": .string(delay.fixedDelay.text), "percentage": percentage(delay.percentage)])
        }
        if let abort {
            var a = JSONObject()
            switch abort.status {
            case .http(let code): a.set("httpStatus", .integer(code))
            case .grpc(let code): a.set("grpcStatus", .string(code.rawValue))
            }
            a.set("percentage", percentage(abort.percentage))
            o.set("abort", .object(a))
        }
        return .object(o)
    }
}
