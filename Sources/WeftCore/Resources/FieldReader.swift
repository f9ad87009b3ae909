/// A value found somewhere in a document, with the path that names it in errors.
struct Located<Value> {
    let path: String
    let value: Value
}

/// Reads one JSON object of a manifest, strictly.
///
/// Unknown keys are refused before anything is read: a misspelt field
/// (`matchLabel:`) is then reported as itself, with the allowed names and a
/// suggestion, instead of as "required field missing" or, worse, silently
/// ignored, which for a policy means a rule that quietly matches everything.
///
/// A key whose value is null counts as absent: YAML writes an empty `labels:`
/// as null, and Kubernetes treats null as unset.
final class FieldReader {
    let path: String
    private let object: JSONObject
    private let allowed: [String]
    private var consumed: Set<String> = []

    /// - Parameters:
    ///   - allowed: every field this object may have, in documentation order
    ///     (the order the error message lists them in).
    ///   - unsupported: fields of the original API that Weft does not
    ///     implement, each with the message that says so and what to do instead.
    init(_ value: JSONValue, at path: String, allowed: [String], unsupported: [String: String] = [:]) throws(ValidationError) {
        guard case .object(let object) = value else {
            throw ValidationError(field: path.isEmpty ? "(root)" : path, "expected an object, found \(value.foundDescription)")
        }
        for member in object where !allowed.contains(member.key) {
            let field = FieldReader.join(path, member.key)
            if let reason = unsupported[member.key] {
                throw ValidationError(field: field, reason)
            }
            let hint = ResourceSyntax.closest(to: member.key, in: allowed).map { "; did you mean \"\($0)\"?" } ?? ""
            throw ValidationError(field: field, "unknown field\(hint) (allowed: \(allowed.joined(separator: ", ")))")
        }
        self.path = path
        self.object = object
        self.allowed = allowed
    }

    static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func field(_ key: String) -> String { FieldReader.join(path, key) }

    /// Whether the key is present with a non-null value (without reading it).
    func has(_ key: String) -> Bool {
        if let v = object[key], v != .null { return true }
        return false
    }

    /// Checks, in debug builds, that every field present was read: a field
    /// declared allowed but never read would be accepted and then ignored.
    func finish() {
        assert(object.keys.allSatisfy { consumed.contains($0) || object[$0] == .null },
               "\(path): fields \(object.keys.filter { !consumed.contains($0) }) allowed but never read")
    }

    /// The raw value, nil when absent or null.
    func value(_ key: String) -> JSONValue? {
        assert(allowed.contains(key), "\(path).\(key) is read but not declared allowed")
        consumed.insert(key)
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    func required(_ key: String) throws(ValidationError) -> JSONValue {
        guard let v = value(key) else { throw ValidationError(field: field(key), "is required") }
        return v
    }

    func string(_ key: String) throws(ValidationError) -> String? {
        guard let v = value(key) else { return nil }
        return try FieldReader.string(v, at: field(key))
    }

    func requiredString(_ key: String) throws(ValidationError) -> String {
        try FieldReader.string(required(key), at: field(key))
    }

    func bool(_ key: String) throws(ValidationError) -> Bool? {
        guard let v = value(key) else { return nil }
        guard case .bool(let b) = v else {
            throw ValidationError(field: field(key), "expected true or false, found \(v.foundDescription)")
        }
        return b
    }

    func integer(_ key: String, in range: ClosedRange<Int>) throws(ValidationError) -> Int? {
        guard let v = value(key) else { return nil }
        return try FieldReader.integer(v, at: field(key), in: range)
    }

    func port(_ key: String) throws(ValidationError) -> UInt16? {
        try integer(key, in: 1...65535).map { UInt16($0) }
    }

    func number(_ key: String, in range: ClosedRange<Double>) throws(ValidationError) -> Double? {
        guard let v = value(key) else { return nil }
        let d: Double
        switch v {
        case .int(let i): d = Double(i)
        case .double(let x): d = x
        default: throw ValidationError(field: field(key), "expected a number, found \(v.foundDescription)")
        }
        guard range.contains(d) else {
            throw ValidationError(field: field(key), "must be \(range.lowerBound) to \(range.upperBound), not \(d)")
        }
        return d
    }

    func object(_ key: String, allowed: [String], unsupported: [String: String] = [:]) throws(ValidationError) -> FieldReader? {
        guard let v = value(key) else { return nil }
        return try FieldReader(v, at: field(key), allowed: allowed, unsupported: unsupported)
    }

    /// The items of a list with their paths (`rules[2]`); nil when absent.
    func list(_ key: String, maxItems: Int? = nil) throws(ValidationError) -> [Located<JSONValue>]? {
        guard let v = value(key) else { return nil }
        guard case .array(let items) = v else {
            throw ValidationError(field: field(key), "expected a list, found \(v.foundDescription)")
        }
        if let maxItems, items.count > maxItems {
            throw ValidationError(field: field(key), "at most \(maxItems) items are allowed, found \(items.count)")
        }
        return items.enumerated().map { Located(path: "\(field(key))[\($0.offset)]", value: $0.element) }
    }

    func stringList(_ key: String, maxItems: Int? = nil) throws(ValidationError) -> [Located<String>]? {
        guard let items = try list(key, maxItems: maxItems) else { return nil }
        var out: [Located<String>] = []
        for item in items {
            out.append(Located(path: item.path, value: try FieldReader.string(item.value, at: item.path)))
        }
        return out
    }

    /// A map of strings to strings (labels, selectors), entries named
    /// `key[name]` as Kubernetes names them.
    func stringMap(_ key: String) throws(ValidationError) -> [Located<(key: String, value: String)>]? {
        guard let v = value(key) else { return nil }
        guard case .object(let map) = v else {
            throw ValidationError(field: field(key), "expected an object of strings, found \(v.foundDescription)")
        }
        var out: [Located<(key: String, value: String)>] = []
        for member in map {
            let at = "\(field(key))[\(member.key)]"
            out.append(Located(path: at, value: (member.key, try FieldReader.string(member.value, at: at))))
        }
        return out
    }

    func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) throws(ValidationError) -> E?
    where E.RawValue == String {
        guard let v = value(key) else { return nil }
        return try FieldReader.enumeration(v, at: field(key), type)
    }

    // MARK: Single values

    static func string(_ v: JSONValue, at path: String) throws(ValidationError) -> String {
        guard case .string(let s) = v else {
            // YAML reads an unquoted `version: 1` or `value: true` as a number
            // or a boolean; most manifests reach Weft through YAML.
            let hint: String
            switch v {
            case .int, .double, .bool: hint = " (in YAML, quote it: \"\(v.serialized())\")"
            default: hint = ""
            }
            throw ValidationError(field: path, "expected a string, found \(v.foundDescription)\(hint)")
        }
        return s
    }

    /// Integers must be written as integers: `8080.0` or `8e3` are refused,
    /// as Kubernetes refuses them for integer fields.
    static func integer(_ v: JSONValue, at path: String, in range: ClosedRange<Int>) throws(ValidationError) -> Int {
        guard case .int(let i) = v else {
            throw ValidationError(field: path, "expected an integer, found \(v.foundDescription)")
        }
        guard let n = Int(exactly: i), range.contains(n) else {
            throw ValidationError(field: path, "must be \(range.lowerBound) to \(range.upperBound), not \(i)")
        }
        return n
    }

    static func enumeration<E: RawRepresentable & CaseIterable>(_ v: JSONValue, at path: String, _ type: E.Type) throws(ValidationError) -> E
    where E.RawValue == String {
        let s = try string(v, at: path)
        guard let e = E(rawValue: s) else {
            let allowed = E.allCases.map(\.rawValue).joined(separator: ", ")
            let hint = E.allCases.first { $0.rawValue.lowercased() == s.lowercased() }.map { " (values are case-sensitive: \($0.rawValue))" } ?? ""
            throw ValidationError(field: path, "\"\(s)\" is not one of: \(allowed)\(hint)")
        }
        return e
    }
}

// MARK: - Name rules

/// Which naming rule a name follows; each says what it allows in its error.
enum NameRule {
    case dnsLabel, dns1035Label, dnsSubdomain, ianaServiceName

    func check(_ name: String, at path: String) throws(ValidationError) {
        let ok: Bool
        let rule: String
        switch self {
        case .dnsLabel:
            ok = ResourceSyntax.isDNSLabel(name)
            rule = "lower-case letters, digits and '-', 1 to 63 characters, starting and ending with a letter or digit"
        case .dns1035Label:
            ok = ResourceSyntax.isDNS1035Label(name)
            rule = "lower-case letters, digits and '-', 1 to 63 characters, starting with a letter and ending with a letter or digit"
        case .dnsSubdomain:
            ok = ResourceSyntax.isDNSSubdomain(name)
            rule = "lower-case letters, digits, '-' and '.', 1 to 253 characters, each part between dots starting and ending with a letter or digit"
        case .ianaServiceName:
            ok = ResourceSyntax.isIANAServiceName(name)
            rule = "an IANA service name: lower-case letters, digits and '-', 1 to 15 characters, at least one letter, no '-' at either end or twice in a row"
        }
        if !ok { throw ValidationError(field: path, "\"\(name)\" is not a valid name (\(rule))") }
    }
}

extension FieldReader {
    func name(_ key: String, _ rule: NameRule) throws(ValidationError) -> String? {
        guard let s = try string(key) else { return nil }
        try rule.check(s, at: field(key))
        return s
    }

    func requiredName(_ key: String, _ rule: NameRule) throws(ValidationError) -> String {
        let s = try requiredString(key)
        try rule.check(s, at: field(key))
        return s
    }

    func namespace(_ key: String) throws(ValidationError) -> NamespaceName? {
        guard let s = try string(key) else { return nil }
        return try NamespaceName(s, field: field(key))
    }

    /// A label map (`metadata.labels`, selectors): Kubernetes key and value syntax.
    func labels(_ key: String) throws(ValidationError) -> [String: String]? {
        guard let entries = try stringMap(key) else { return nil }
        var out: [String: String] = [:]
        for entry in entries {
            guard ResourceSyntax.isLabelKey(entry.value.key) else {
                throw ValidationError(field: entry.path, "\"\(entry.value.key)\" is not a valid label key (an optional DNS-subdomain prefix and '/', then 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)")
            }
            guard ResourceSyntax.isLabelValue(entry.value.value) else {
                throw ValidationError(field: entry.path, "\"\(entry.value.value)\" is not a valid label value (empty, or 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)")
            }
            out[entry.value.key] = entry.value.value
        }
        return out
    }

    func duration(_ key: String) throws(ValidationError) -> GatewayDuration? {
        guard let s = try string(key) else { return nil }
        return try GatewayDuration(s, field: field(key))
    }
}

// MARK: - Encoding helpers

extension JSONObject {
    /// Sets the member unless the value is nil: absent fields stay absent.
    mutating func set(_ key: String, _ value: JSONValue?) {
        if let value { self[key] = value }
    }

    /// Sets a list member unless the list is empty.
    mutating func set(_ key: String, list: [JSONValue]) {
        if !list.isEmpty { self[key] = .array(list) }
    }
}

extension JSONValue {
    /// A string map with its keys sorted, as Kubernetes prints maps.
    static func sortedMap(_ map: [String: String]) -> JSONValue {
        .object(JSONObject(map.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string($0.value)) }))
    }

    static func port(_ p: UInt16) -> JSONValue { .int(Int64(p)) }
    static func integer(_ n: Int) -> JSONValue { .int(Int64(n)) }
    static func strings(_ items: [String]) -> [JSONValue] { items.map { .string($0) } }
}
