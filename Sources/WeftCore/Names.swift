/// A validation failure that names the field at fault, so that a user can
/// find it in their YAML or JSON without guessing.
public struct ValidationError: Error, CustomStringConvertible, Equatable, Sendable {
    public var field: String
    public var message: String

    public init(field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

/// A mesh namespace name: an RFC 1123 DNS label, as in Kubernetes.
public struct NamespaceName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(_ value: String, field: String = "namespace") throws(ValidationError) {
        guard DNSLabel.isValid(value) else {
            throw ValidationError(field: field, "\"\(value)\" is not a valid namespace name (lower-case letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit)")
        }
        self.rawValue = value
    }

    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A workload name: a systemd unit name such as `catalog-v1.service`, or any
/// name an operator gives an explicit workload.
public struct WorkloadName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(_ value: String, field: String = "name") throws(ValidationError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@:")
        guard !value.isEmpty, value.count <= 253, value.allSatisfy({ allowed.contains($0) }),
              value != ".", value != ".." else {
            throw ValidationError(field: field, "\"\(value)\" is not a valid workload name (letters, digits and -_.@:, at most 253 characters)")
        }
        self.rawValue = value
    }

    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A workload's identity on a node: its namespace and name.
public struct WorkloadRef: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var namespace: NamespaceName
    public var name: WorkloadName

    public init(namespace: NamespaceName, name: WorkloadName) {
        self.namespace = namespace
        self.name = name
    }

    public var description: String { "\(namespace)/\(name)" }
    public static func < (a: Self, b: Self) -> Bool { (a.namespace, a.name) < (b.namespace, b.name) }
}

public enum DNSLabel {
    public static func isValid(_ s: String) -> Bool {
        let bytes = Array(s.utf8)
        guard (1...63).contains(bytes.count) else { return false }
        func alnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
        guard alnum(bytes.first!), alnum(bytes.last!) else { return false }
        return bytes.allSatisfy { alnum($0) || $0 == 0x2d }
    }
}
