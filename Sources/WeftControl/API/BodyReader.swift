import WeftCore

/// Reads the small fixed-shape request bodies (tokens, join, certificates) strictly:
/// unknown fields are refused, like in resources, so a misspelt `ttlSecond` is an
/// error rather than a silently ignored option.
struct BodyReader {
    let object: JSONObject

    /// Parses `bytes` as one JSON object with only `allowed` keys. An empty body
    /// reads as `{}` when `emptyIsObject`, for endpoints whose fields are all optional.
    init(_ bytes: [UInt8], allowed: [String], emptyIsObject: Bool = false) throws(APIError) {
        if emptyIsObject, bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) {
            object = JSONObject()
            return
        }
        let value = try parseJSON(bytes)
        guard case .object(let o) = value else {
            throw APIError(.badRequest, "the body must be a JSON object with \(allowed.joined(separator: ", "))")
        }
        for key in o.keys where !allowed.contains(key) {
            throw APIError(.invalid, "unknown field (allowed: \(allowed.joined(separator: ", ")))", field: key)
        }
        object = o
    }

    func string(_ key: String) throws(APIError) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case let other?: throw APIError(.invalid, "expected a string, found \(jsonKind(other))", field: key)
        }
    }

    func requiredString(_ key: String, _ what: String) throws(APIError) -> String {
        guard let s = try string(key), !s.isEmpty else {
            throw APIError(.invalid, "is required: \(what)", field: key)
        }
        return s
    }

    func integer(_ key: String, in range: ClosedRange<Int64>) throws(APIError) -> Int64? {
        switch object[key] {
        case nil, .null?: return nil
        case .int(let n)?:
            guard range.contains(n) else {
                throw APIError(.invalid, "\(n) is out of range (\(range.lowerBound) to \(range.upperBound))", field: key)
            }
            return n
        case let other?: throw APIError(.invalid, "expected an integer, found \(jsonKind(other))", field: key)
        }
    }
}

/// Parses a request body; a syntax error is a 400 that says where.
func parseJSON(_ bytes: [UInt8]) throws(APIError) -> JSONValue {
    do {
        return try JSONValue.parse(utf8: bytes)
    } catch {
        throw APIError(.badRequest, "the body is not valid JSON: \(error.message)")
    }
}

func jsonKind(_ value: JSONValue) -> String {
    switch value {
    case .null: return "null"
    case .bool: return "a boolean"
    case .int, .double: return "a number"
    case .string: return "a string"
    case .array: return "a list"
    case .object: return "an object"
    }
}
