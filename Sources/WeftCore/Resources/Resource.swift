/// The control plane's resources: Kubernetes-shaped documents (`apiVersion`,
/// `kind`, `metadata`, `spec`, `status`) that the API server stores and
/// `weftctl apply` sends. Users already write Gateway API routes and Istio
/// security policies, so those kinds keep their upstream `apiVersion` and
/// field names; Weft's own kinds live in `weft.dev/v1alpha1`.
///
/// Decoding is strict everywhere: an unknown field, a value of the wrong type,
/// or a value the upstream project's validation would refuse is an error that
/// names the field by its full path (`spec.rules[0].matches[1].path.value`).
///
/// Decisions where the upstream specs are silent or do not apply to Weft:
/// - null is the same as absent, for every optional field (YAML's empty
///   `labels:` is null; Kubernetes treats null as unset).
/// - Defaults are applied when decoding and written out when encoding, as the
///   Kubernetes API server does, so a decoded resource says what it means.
/// - Integer fields must hold JSON integers (`8080.0` is refused).
/// - Fault injection is a `weft.dev/v1alpha1` `FaultInjection` resource,
///   referenced from an HTTPRoute filter of type `ExtensionRef`: the only
///   extension point Gateway API has, so the route stays a valid Gateway API
///   object. Its spec is Istio's VirtualService `fault` block.
/// - Each of the three groups is served at one version; `v1beta1` of Istio or
///   Gateway API is refused with a pointer to the served version (same fields).
public enum ResourceKind: String, CaseIterable, Hashable, Sendable {
    case namespace = "Namespace"
    case workload = "Workload"
    case service = "Service"
    case faultInjection = "FaultInjection"
    case httpRoute = "HTTPRoute"
    case authorizationPolicy = "AuthorizationPolicy"
    case peerAuthentication = "PeerAuthentication"
    case destinationRule = "DestinationRule"

    public static let weftAPIVersion = "weft.dev/v1alpha1"
    public static let gatewayAPIVersion = "gateway.networking.k8s.io/v1"
    public static let istioSecurityAPIVersion = "security.istio.io/v1"
    public static let istioNetworkingAPIVersion = "networking.istio.io/v1"

    /// The served API versions, each with its kinds, in the order to list them.
    public static let apiVersions: [(apiVersion: String, kinds: [ResourceKind])] = [
        (weftAPIVersion, [.namespace, .workload, .service, .faultInjection]),
        (gatewayAPIVersion, [.httpRoute]),
        (istioSecurityAPIVersion, [.authorizationPolicy, .peerAuthentication]),
        (istioNetworkingAPIVersion, [.destinationRule]),
    ]

    public var apiVersion: String {
        switch self {
        case .namespace, .workload, .service, .faultInjection: return ResourceKind.weftAPIVersion
        case .httpRoute: return ResourceKind.gatewayAPIVersion
        case .authorizationPolicy, .peerAuthentication: return ResourceKind.istioSecurityAPIVersion
        case .destinationRule: return ResourceKind.istioNetworkingAPIVersion
        }
    }

    /// Everything but Namespace lives in a namespace.
    public var isNamespaced: Bool { self != .namespace }

    /// The name rule Kubernetes applies to the kind: namespaces are DNS
    /// labels, Services RFC 1035 labels (their names become DNS names), the
    /// rest (custom resources in Kubernetes) DNS subdomains.
    var nameRule: NameRule {
        switch self {
        case .namespace: return .dnsLabel
        case .service: return .dns1035Label
        default: return .dnsSubdomain
        }
    }
}

/// Object metadata, the subset of Kubernetes' ObjectMeta that Weft keeps.
/// `resourceVersion`, `generation`, `uid` and `creationTimestamp` are set by
/// the server; they are accepted on input so that `get -o json | apply` works.
public struct ObjectMeta: Hashable, Sendable {
    public var name: String
    /// Required for every kind but Namespace, which must not have one.
    public var namespace: NamespaceName?
    public var labels: [String: String]
    public var annotations: [String: String]
    /// Opaque; empty is the same as absent, as in Kubernetes.
    public var resourceVersion: String?
    public var generation: Int64?
    public var uid: String?
    /// RFC 3339, as written.
    public var creationTimestamp: String?

    public init(name: String, namespace: NamespaceName? = nil, labels: [String: String] = [:],
                annotations: [String: String] = [:], resourceVersion: String? = nil, generation: Int64? = nil,
                uid: String? = nil, creationTimestamp: String? = nil) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
        self.annotations = annotations
        self.resourceVersion = resourceVersion
        self.generation = generation
        self.uid = uid
        self.creationTimestamp = creationTimestamp
    }

    /// Kubernetes' limit on all annotations of an object together (keys and values, in bytes).
    public static let maximumAnnotationBytes = 256 * 1024

    static func decode(_ value: JSONValue?, kind: ResourceKind, defaultNamespace: NamespaceName?) throws(ValidationError) -> ObjectMeta {
        guard let value else { throw ValidationError(field: "metadata", "is required (at least metadata.name)") }
        let r = try FieldReader(value, at: "metadata", allowed: [
            "name", "namespace", "labels", "annotations", "resourceVersion", "generation", "uid", "creationTimestamp",
        ], unsupported: [
            "generateName": "generateName is not supported: Weft needs the name to apply the same manifest twice",
        ])
        let name = try r.requiredName("name", kind.nameRule)
        var namespace = try r.namespace("namespace")
        if kind.isNamespaced {
            namespace = namespace ?? defaultNamespace
            if namespace == nil {
                throw ValidationError(field: "metadata.namespace", "is required: a \(kind.rawValue) lives in a namespace")
            }
        } else if namespace != nil {
            throw ValidationError(field: "metadata.namespace", "must not be set: a \(kind.rawValue) is not in a namespace")
        }
        let labels = try r.labels("labels") ?? [:]

        var annotations: [String: String] = [:]
        var annotationBytes = 0
        for entry in try r.stringMap("annotations") ?? [] {
            guard ResourceSyntax.isLabelKey(entry.value.key) else {
                throw ValidationError(field: entry.path, "\"\(entry.value.key)\" is not a valid annotation key (an optional DNS-subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)")
            }
            annotationBytes += entry.value.key.utf8.count + entry.value.value.utf8.count
            annotations[entry.value.key] = entry.value.value
        }
        if annotationBytes > maximumAnnotationBytes {
            throw ValidationError(field: "metadata.annotations", "annotations take \(annotationBytes) bytes; at most \(maximumAnnotationBytes) are allowed")
        }

        let resourceVersion = try r.string("resourceVersion")
        let generation = try r.integer("generation", in: 0...Int.max).map { Int64($0) }
        let uid = try r.string("uid")
        let created = try r.string("creationTimestamp")
        if let created, !ResourceSyntax.isTimestamp(created) {
            throw ValidationError(field: "metadata.creationTimestamp", "\"\(created)\" is not an RFC 3339 time such as 2025-01-31T12:00:00Z")
        }
        r.finish()
        return ObjectMeta(name: name, namespace: namespace, labels: labels, annotations: annotations,
                          resourceVersion: resourceVersion?.isEmpty == true ? nil : resourceVersion,
                          generation: generation, uid: uid?.isEmpty == true ? nil : uid, creationTimestamp: created)
    }

    public func encode() -> JSONValue {
        var o = JSONObject()
        o.set("name", .string(name))
        o.set("namespace", namespace.map { .string($0.rawValue) })
        if !labels.isEmpty { o.set("labels", .sortedMap(labels)) }
        if !annotations.isEmpty { o.set("annotations", .sortedMap(annotations)) }
        o.set("resourceVersion", resourceVersion.map { .string($0) })
        o.set("generation", generation.map { .int($0) })
        o.set("uid", uid.map { .string($0) })
        o.set("creationTimestamp", creationTimestamp.map { .string($0) })
        return .object(o)
    }
}

/// A resource's spec, typed by kind.
public enum ResourceSpec: Hashable, Sendable {
    case namespace(NamespaceSpec)
    case workload(WorkloadSpec)
    case service(ServiceSpec)
    case faultInjection(FaultInjectionSpec)
    case httpRoute(HTTPRouteSpec)
    case authorizationPolicy(AuthorizationPolicySpec)
    case peerAuthentication(PeerAuthenticationSpec)
    case destinationRule(DestinationRuleSpec)

    public var kind: ResourceKind {
        switch self {
        case .namespace: return .namespace
        case .workload: return .workload
        case .service: return .service
        case .faultInjection: return .faultInjection
        case .httpRoute: return .httpRoute
        case .authorizationPolicy: return .authorizationPolicy
        case .peerAuthentication: return .peerAuthentication
        case .destinationRule: return .destinationRule
        }
    }

    static func decode(_ value: JSONValue?, kind: ResourceKind) throws(ValidationError) -> ResourceSpec {
        switch kind {
        case .namespace: return .namespace(try NamespaceSpec.decode(value, at: "spec"))
        case .workload: return .workload(try WorkloadSpec.decode(value, at: "spec"))
        case .service: return .service(try ServiceSpec.decode(value, at: "spec"))
        case .faultInjection: return .faultInjection(try FaultInjectionSpec.decode(value, at: "spec"))
        case .httpRoute: return .httpRoute(try HTTPRouteSpec.decode(value, at: "spec"))
        case .authorizationPolicy: return .authorizationPolicy(try AuthorizationPolicySpec.decode(value, at: "spec"))
        case .peerAuthentication: return .peerAuthentication(try PeerAuthenticationSpec.decode(value, at: "spec"))
        case .destinationRule: return .destinationRule(try DestinationRuleSpec.decode(value, at: "spec"))
        }
    }

    public func encode() -> JSONValue {
        switch self {
        case .namespace(let s): return s.encode()
        case .workload(let s): return s.encode()
        case .service(let s): return s.encode()
        case .faultInjection(let s): return s.encode()
        case .httpRoute(let s): return s.encode()
        case .authorizationPolicy(let s): return s.encode()
        case .peerAuthentication(let s): return s.encode()
        case .destinationRule(let s): return s.encode()
        }
    }
}

/// One resource: metadata, typed spec, and the status the server reports
/// (kept as JSON: it is written by controllers, not validated here).
public struct Resource: Hashable, Sendable {
    public var metadata: ObjectMeta
    public var spec: ResourceSpec
    /// An object when present.
    public var status: JSONValue?

    public init(metadata: ObjectMeta, spec: ResourceSpec, status: JSONValue? = nil) {
        self.metadata = metadata
        self.spec = spec
        self.status = status
    }

    public var kind: ResourceKind { spec.kind }
    public var apiVersion: String { kind.apiVersion }

    /// The document form; `ResourceDocument.decode` reads it back to an equal resource.
    public func encode() -> JSONValue {
        var o = JSONObject()
        o.set("apiVersion", .string(apiVersion))
        o.set("kind", .string(kind.rawValue))
        o.set("metadata", metadata.encode())
        o.set("spec", spec.encode())
        o.set("status", status)
        return .object(o)
    }
}

/// Reads resource documents.
public enum ResourceDocument {
    /// Decodes one resource document.
    /// - Parameter defaultNamespace: used when a namespaced resource has no
    ///   `metadata.namespace`, as `kubectl apply -n` does; without it the
    ///   namespace is required.
    public static func decode(_ value: JSONValue, defaultNamespace: NamespaceName? = nil) throws(ValidationError) -> Resource {
        let r = try FieldReader(value, at: "", allowed: ["apiVersion", "kind", "metadata", "spec", "status"])
        let kind = try decodeKind(apiVersion: r.string("apiVersion"), kind: r.string("kind"))
        let metadata = try ObjectMeta.decode(r.value("metadata"), kind: kind, defaultNamespace: defaultNamespace)
        let spec = try ResourceSpec.decode(r.value("spec"), kind: kind)
        let status = r.value("status")
        if let status, status.objectValue == nil {
            throw ValidationError(field: "status", "expected an object, found \(status.foundDescription)")
        }
        r.finish()
        return Resource(metadata: metadata, spec: spec, status: status)
    }

    /// Parses JSON text, then decodes it.
    public static func decode(json text: String, defaultNamespace: NamespaceName? = nil) throws(ValidationError) -> Resource {
        try decode(JSONValue.parse(text), defaultNamespace: defaultNamespace)
    }

    private static func decodeKind(apiVersion: String?, kind: String?) throws(ValidationError) -> ResourceKind {
        let served = ResourceKind.apiVersions.map(\.apiVersion).joined(separator: ", ")
        guard let apiVersion else { throw ValidationError(field: "apiVersion", "is required (served: \(served))") }
        guard let entry = ResourceKind.apiVersions.first(where: { $0.apiVersion == apiVersion }) else {
            let group = apiVersion.split(separator: "/").first.map(String.init) ?? apiVersion
            let sibling = ResourceKind.apiVersions.first { $0.apiVersion.hasPrefix(group + "/") }
            let hint = sibling.map { "; use \($0.apiVersion), which Weft serves (\($0.kinds.map(\.rawValue).joined(separator: ", ")))" } ?? ""
            throw ValidationError(field: "apiVersion", "\"\(apiVersion)\" is not served by Weft (served: \(served))\(hint)")
        }
        let kinds = entry.kinds.map(\.rawValue).joined(separator: ", ")
        guard let kind else { throw ValidationError(field: "kind", "is required (kinds of \(apiVersion): \(kinds))") }
        guard let found = entry.kinds.first(where: { $0.rawValue == kind }) else {
            var message = "\"\(kind)\" is not a kind of \(apiVersion) (kinds: \(kinds))"
            if kind == "VirtualService" {
                message += "; Weft routes with Gateway API's HTTPRoute (timeouts, retries, mirrors) and injects faults with weft.dev FaultInjection"
            }
            if let elsewhere = ResourceKind(rawValue: kind) {
                message += "; \(kind) is served as \(elsewhere.apiVersion)"
            }
            throw ValidationError(field: "kind", message)
        }
        return found
    }
}

extension ResourceKind {
    /// The lower-case plural naming the kind in the control API's paths
    /// (`/v1/workloads`) and on the command line.
    public var plural: String {
        switch self {
        case .namespace: return "namespaces"
        case .workload: return "workloads"
        case .service: return "services"
        case .faultInjection: return "faultinjections"
        case .httpRoute: return "httproutes"
        case .authorizationPolicy: return "authorizationpolicies"
        case .peerAuthentication: return "peerauthentications"
        case .destinationRule: return "destinationrules"
        }
    }

    public static func forPlural(_ plural: String) -> ResourceKind? {
        allCases.first { $0.plural == plural }
    }
}
