extension JSONValue {
    /// How deeply arrays and objects may nest. The parser recurses, and so does
    /// everything that walks a value afterwards (equality, hashing, printing);
    /// a hostile document of a million `[` would exhaust the stack. Real
    /// manifests nest about a dozen levels.
    public static let maximumNestingDepth = 256

    /// Parses one JSON text (RFC 8259), strictly: no comments, no trailing
    /// commas, no duplicate keys, no unescaped control characters, valid UTF-8.
    /// Errors have field `(json)` and say where: `at byte 17 (line 2, column 5)`
    /// (offsets and columns count bytes, from 0 and 1).
    public static func parse(_ text: String) throws(ValidationError) -> JSONValue {
        try parse(utf8: Array(text.utf8))
    }

    public static func parse(utf8 bytes: [UInt8]) throws(ValidationError) -> JSONValue {
        var parser = JSONParser(bytes)
        return try parser.parseDocument()
    }
}

struct JSONParser {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func parseDocument() throws(ValidationError) -> JSONValue {
        // RFC 8259 §8.1 lets a parser ignore a leading byte order mark; some
        // Windows editors write one, and rejecting it helps nobody.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { offset = 3 }
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        if offset < bytes.count {
            throw error("unexpected \(describe(bytes[offset])) after the end of the JSON value")
        }
        return value
    }

    private var current: UInt8? { offset < bytes.count ? bytes[offset] : nil }

    private mutating func skipWhitespace() {
        while let b = current, b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { offset += 1 }
    }

    private mutating func parseValue(depth: Int) throws(ValidationError) -> JSONValue {
        guard let b = current else { throw error("unexpected end of input, expected a value") }
        switch b {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw error("unexpected \(describe(b)), expected a value")
        }
    }

    private mutating func expectLiteral(_ word: String) throws(ValidationError) {
        let start = offset
        for expected in word.utf8 {
            guard current == expected else {
                throw error("invalid literal, expected \(word)", at: start)
            }
            offset += 1
        }
    }

    private func checkDepth(_ depth: Int) throws(ValidationError) {
        if depth > JSONValue.maximumNestingDepth {
            throw error("arrays and objects nest deeper than \(JSONValue.maximumNestingDepth) levels")
        }
    }

    private mutating func parseObject(depth: Int) throws(ValidationError) -> JSONValue {
        try checkDepth(depth)
        offset += 1
        var object = JSONObject()
        var seen = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            offset += 1
            return .object(object)
        }
        while true {
            skipWhitespace()
            guard let b = current else { throw error("unexpected end of input inside an object") }
            guard b == UInt8(ascii: "\"") else {
                throw error("unexpected \(describe(b)), expected a key in double quotes")
            }
            let keyOffset = offset
            let key = try parseString()
            // Kubernetes refuses duplicate fields too: which one wins is a
            // guess, and a guess is how a policy silently loses a rule.
            guard seen.insert(key).inserted else { throw error("duplicate key \"\(key)\"", at: keyOffset) }
            skipWhitespace()
            guard current == UInt8(ascii: ":") else {
                throw error(current.map { "unexpected \(describe($0)), expected ':' after the key" } ?? "unexpected end of input, expected ':'")
            }
            offset += 1
            skipWhitespace()
            object.appendNew(key, try parseValue(depth: depth))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "}"): offset += 1; return .object(object)
            case let b?: throw error("unexpected \(describe(b)), expected ',' or '}'")
            case nil: throw error("unexpected end of input, expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(ValidationError) -> JSONValue {
        try checkDepth(depth)
        offset += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            offset += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            switch current {
            case UInt8(ascii: ","): offset += 1
            case UInt8(ascii: "]"): offset += 1; return .array(items)
            case let b?: throw error("unexpected \(describe(b)), expected ',' or ']'")
            case nil: throw error("unexpected end of input, expected ',' or ']'")
            }
        }
    }

    private mutating func parseString() throws(ValidationError) -> String {
        let start = offset
        offset += 1
        var buffer: [UInt8] = []
        while true {
            guard let b = current else { throw error("unterminated string", at: start) }
            switch b {
            case UInt8(ascii: "\""):
                offset += 1
                // Every byte appended was checked (ASCII, validated UTF-8, or
                // an escape encoded here), so decoding cannot repair anything.
                return String(decoding: buffer, as: UTF8.self)
            case UInt8(ascii: "\\"):
                try parseEscape(into: &buffer)
            case 0x00..<0x20:
                throw error("control character 0x\(hex(b, width: 2)) in a string must be escaped")
            case 0x80...:
                let n = try utf8SequenceLength()
                buffer.append(contentsOf: bytes[offset..<offset + n])
                offset += n
            default:
                buffer.append(b)
                offset += 1
            }
        }
    }

    private mutating func parseEscape(into buffer: inout [UInt8]) throws(ValidationError) {
        let start = offset
        offset += 1
        guard let b = current else { throw error("unterminated string") }
        offset += 1
        switch b {
        case UInt8(ascii: "\""): buffer.append(0x22)
        case UInt8(ascii: "\\"): buffer.append(0x5C)
        case UInt8(ascii: "/"): buffer.append(0x2F)
        case UInt8(ascii: "b"): buffer.append(0x08)
        case UInt8(ascii: "f"): buffer.append(0x0C)
        case UInt8(ascii: "n"): buffer.append(0x0A)
        case UInt8(ascii: "r"): buffer.append(0x0D)
        case UInt8(ascii: "t"): buffer.append(0x09)
        case UInt8(ascii: "u"):
            var value = try hex4(escapeStart: start)
            if (0xDC00...0xDFFF).contains(value) {
                throw error("lone low surrogate \\u\(hex(value, width: 4)) (not a character)", at: start)
            }
            if (0xD800...0xDBFF).contains(value) {
                // Characters beyond U+FFFF are written as a UTF-16 pair.
                guard current == UInt8(ascii: "\\"), offset + 1 < bytes.count, bytes[offset + 1] == UInt8(ascii: "u") else {
                    throw error("high surrogate \\u\(hex(value, width: 4)) is not followed by a low surrogate", at: start)
                }
                let lowStart = offset
                offset += 2
                let low = try hex4(escapeStart: lowStart)
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw error("high surrogate \\u\(hex(value, width: 4)) is not followed by a low surrogate", at: start)
                }
                value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
            }
            // Surrogates are excluded above, so this scalar exists.
            Unicode.UTF8.encode(Unicode.Scalar(value)!) { buffer.append($0) }
        default:
            throw error("invalid escape \\\(describeRaw(b)) (allowed: \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)", at: start)
        }
    }

    private mutating func hex4(escapeStart: Int) throws(ValidationError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let b = current, let digit = hexDigit(b) else {
                throw error("\\u must be followed by four hexadecimal digits", at: escapeStart)
            }
            value = value << 4 | digit
            offset += 1
        }
        return value
    }

    private func hexDigit(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(b - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    /// Length of the well-formed UTF-8 sequence at `offset` (RFC 3629: no
    /// overlong forms, no surrogates, nothing above U+10FFFF).
    private func utf8SequenceLength() throws(ValidationError) -> Int {
        let lead = bytes[offset]
        let length: Int
        var secondRange: ClosedRange<UInt8> = 0x80...0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0: length = 3; secondRange = 0xA0...0xBF
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED: length = 3; secondRange = 0x80...0x9F
        case 0xF0: length = 4; secondRange = 0x90...0xBF
        case 0xF1...0xF3: length = 4
        case 0xF4: length = 4; secondRange = 0x80...0x8F
        default: throw error("invalid UTF-8 byte 0x\(hex(lead, width: 2))")
        }
        for i in 1..<length {
            let at = offset + i
            guard at < bytes.count, (i == 1 ? secondRange : 0x80...0xBF).contains(bytes[at]) else {
                throw error("invalid UTF-8 sequence", at: offset)
            }
        }
        return length
    }

    private mutating func parseNumber() throws(ValidationError) -> JSONValue {
        let start = offset
        func isDigit(_ b: UInt8?) -> Bool { b.map { $0 >= 0x30 && $0 <= 0x39 } ?? false }
        if current == UInt8(ascii: "-") { offset += 1 }
        guard isDigit(current) else { throw error("expected a digit") }
        if current == UInt8(ascii: "0") {
            offset += 1
            if isDigit(current) { throw error("numbers must not have leading zeros", at: start) }
        } else {
            while isDigit(current) { offset += 1 }
        }
        var isInteger = true
        if current == UInt8(ascii: ".") {
            isInteger = false
            offset += 1
            guard isDigit(current) else { throw error("expected a digit after the decimal point") }
            while isDigit(current) { offset += 1 }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            isInteger = false
            offset += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { offset += 1 }
            guard isDigit(current) else { throw error("expected a digit in the exponent") }
            while isDigit(current) { offset += 1 }
        }
        let text = String(decoding: bytes[start..<offset], as: UTF8.self)
        if isInteger, let value = Int64(text) { return .int(value) }
        guard let value = Double(text), value.isFinite else {
            throw error("number \(text) is out of range", at: start)
        }
        return .double(value)
    }

    // MARK: Errors

    private func error(_ message: String, at position: Int? = nil) -> ValidationError {
        let at = position ?? offset
        var line = 1
        var column = 1
        for b in bytes[..<min(at, bytes.count)] {
            if b == 0x0A { line += 1; column = 1 } else { column += 1 }
        }
        return ValidationError(field: "(json)", "at byte \(at) (line \(line), column \(column)): \(message)")
    }

    private func describe(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x\(hex(b, width: 2))"
    }

    private func describeRaw(_ b: UInt8) -> String {
        (0x21...0x7E).contains(b) ? String(Character(Unicode.Scalar(b))) : "(byte 0x\(hex(b, width: 2)))"
    }

    private func hex(_ value: some BinaryInteger, width: Int) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
