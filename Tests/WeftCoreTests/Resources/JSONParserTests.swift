import Testing
@testable import WeftCore

@Suite struct JSONParsing {
    @Test func parsesEveryKindOfValue() throws {
        let v = try JSONValue.parse(#" {"n": null, "t": true, "f": false, "i": -12, "d": 1.5e3, "s": "x", "a": [1, "2"], "o": {}} "#)
        #expect(v == ["n": nil, "t": true, "f": false, "i": -12, "d": 1500.0, "s": "x", "a": [1, "2"], "o": [:]])
    }

    @Test func keepsIntegersExactBeyondWhatADoubleHolds() throws {
        // 2^53 + 1 is the first integer a Double cannot hold.
        #expect(try JSONValue.parse("9007199254740993") == .int(9_007_199_254_740_993))
        #expect(try JSONValue.parse("9223372036854775807") == .int(.max))
        #expect(try JSONValue.parse("-9223372036854775808") == .int(.min))
    }

    @Test func numbersWithFractionOrExponentOrBeyond64BitsAreDoubles() throws {
        #expect(try JSONValue.parse("1.0") == .double(1))
        #expect(try JSONValue.parse("1E+2") == .double(100))
        #expect(try JSONValue.parse("-0.5e-1") == .double(-0.05))
        #expect(try JSONValue.parse("9223372036854775808") == .double(9_223_372_036_854_775_808))
    }

    @Test func decodesEveryEscape() throws {
        #expect(try JSONValue.parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{08}\u{0C}\n\r\t"))
        #expect(try JSONValue.parse(#""caf\u00e9 \u00E9""#) == .string("café é"))
    }

    @Test func joinsSurrogatePairsIntoOneCharacter() throws {
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test func keepsRawUTF8AsWritten() throws {
        #expect(try JSONValue.parse(#""héllo 😀 世界""#) == .string("héllo 😀 世界"))
    }

    @Test func keepsObjectKeysInDocumentOrder() throws {
        let v = try JSONValue.parse(#"{"b": 1, "a": 2, "c": 3}"#)
        #expect(v.objectValue?.keys == ["b", "a", "c"])
        #expect(v.serialized() == #"{"b":1,"a":2,"c":3}"#)
    }

    @Test func ignoresALeadingByteOrderMark() throws {
        #expect(try JSONValue.parse(utf8: [0xEF, 0xBB, 0xBF] + Array("[1]".utf8)) == [1])
    }

    @Test func serializedTextParsesBackToTheSameValue() throws {
        let value: JSONValue = [
            "s": "quote \" backslash \\ newline \n tab \t bell \u{07} é 😀",
            "numbers": [0, -1, .int(.max), 0.1, -0.0, 1e300, 2.5e-8],
            "nested": ["empty": [:], "list": [], "null": nil, "yes": true],
        ]
        #expect(try JSONValue.parse(value.serialized()) == value)
        #expect(try JSONValue.parse(value.serialized(pretty: true)) == value)
    }

    @Test func serializerEscapesControlCharacters() {
        #expect(JSONValue.string("a\u{01}b\u{1F}").serialized() == #""a\u0001b\u001f""#)
    }

    @Test func prettyPrintingIndentsByTwoSpaces() {
        let value: JSONValue = ["a": [1, 2], "b": [:]]
        #expect(value.serialized(pretty: true) == "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}")
    }

    @Test func nonFiniteDoublesAreWrittenAsNull() {
        #expect(JSONValue.double(.infinity).serialized() == "null")
    }

    struct BadJSON: Sendable, CustomTestStringConvertible {
        let text: String
        let offset: Int
        let message: String
        var testDescription: String { text.debugDescription }
    }

    @Test(arguments: [
        BadJSON(text: "", offset: 0, message: "unexpected end of input"),
        BadJSON(text: "   ", offset: 3, message: "unexpected end of input"),
        BadJSON(text: "[1,]", offset: 3, message: "unexpected ']', expected a value"),
        BadJSON(text: #"{"a":1,}"#, offset: 7, message: "expected a key in double quotes"),
        BadJSON(text: "{a:1}", offset: 1, message: "expected a key in double quotes"),
        BadJSON(text: #"{"a" 1}"#, offset: 5, message: "expected ':'"),
        BadJSON(text: "[1 2]", offset: 3, message: "expected ',' or ']'"),
        BadJSON(text: #"{"a":1 "b":2}"#, offset: 7, message: "expected ',' or '}'"),
        BadJSON(text: "01", offset: 0, message: "leading zeros"),
        BadJSON(text: "-", offset: 1, message: "expected a digit"),
        BadJSON(text: "1.", offset: 2, message: "after the decimal point"),
        BadJSON(text: "1e", offset: 2, message: "in the exponent"),
        BadJSON(text: "+1", offset: 0, message: "unexpected '+'"),
        BadJSON(text: "1e999", offset: 0, message: "out of range"),
        BadJSON(text: "tru", offset: 0, message: "invalid literal, expected true"),
        BadJSON(text: "nul", offset: 0, message: "expected null"),
        BadJSON(text: #""abc"#, offset: 0, message: "unterminated string"),
        BadJSON(text: "\"a\u{01}\"", offset: 2, message: "control character 0x01"),
        BadJSON(text: "\"a\nb\"", offset: 2, message: "must be escaped"),
        BadJSON(text: #""\x""#, offset: 1, message: "invalid escape \\x"),
        BadJSON(text: #""\u12""#, offset: 1, message: "four hexadecimal digits"),
        BadJSON(text: #""\ud800""#, offset: 1, message: "not followed by a low surrogate"),
        BadJSON(text: #""\ud800\u0041""#, offset: 1, message: "not followed by a low surrogate"),
        BadJSON(text: #""\udc00""#, offset: 1, message: "lone low surrogate"),
        BadJSON(text: #"{"a":1,"a":2}"#, offset: 7, message: "duplicate key \"a\""),
        BadJSON(text: "1 2", offset: 2, message: "after the end of the JSON value"),
        BadJSON(text: "// comment\n{}", offset: 0, message: "unexpected '/'"),
        BadJSON(text: "[NaN]", offset: 1, message: "expected a value"),
        BadJSON(text: "{\n  \"a\": tru\n}", offset: 9, message: "(line 2, column 8)"),
    ])
    func reportsSyntaxErrorsWithTheByteOffset(_ bad: BadJSON) {
        let error = #expect(throws: ValidationError.self) { try JSONValue.parse(bad.text) }
        #expect(error?.field == "(json)")
        #expect(error?.message.hasPrefix("at byte \(bad.offset) ") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(bad.message) == true, "\(error?.message ?? "")")
    }

    @Test(arguments: [
        ([0x22, 0xC3, 0x28, 0x22], "invalid UTF-8 sequence"),  // truncated two-byte sequence
        ([0x22, 0xC0, 0xAF, 0x22], "invalid UTF-8 byte 0xC0"),  // overlong '/'
        ([0x22, 0xED, 0xA0, 0x80, 0x22], "invalid UTF-8 sequence"),  // encoded surrogate
        ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], "invalid UTF-8 sequence"),  // above U+10FFFF
        ([0x22, 0xFF, 0x22], "invalid UTF-8 byte 0xFF"),
    ] as [([UInt8], String)])
    func refusesInvalidUTF8InsideStrings(bytes: [UInt8], message: String) {
        let error = #expect(throws: ValidationError.self) { try JSONValue.parse(utf8: bytes) }
        #expect(error?.message.hasPrefix("at byte 1 ") == true)
        #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
    }

    @Test func acceptsNestingUpToTheLimit() throws {
        let depth = JSONValue.maximumNestingDepth
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        var value = try JSONValue.parse(text)
        var levels = 0
        while case .array(let items) = value {
            levels += 1
            guard let first = items.first else { break }
            value = first
        }
        #expect(levels == depth)
    }

    @Test func refusesNestingOneLevelDeeperThanTheLimitAndSaysWhere() {
        let depth = JSONValue.maximumNestingDepth + 1
        let text = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        let error = #expect(throws: ValidationError.self) { try JSONValue.parse(text) }
        #expect(error?.message.hasPrefix("at byte 256 ") == true)
        #expect(error?.message.contains("deeper than 256 levels") == true)
    }

    @Test func deeplyNestedObjectsAreRefusedWithoutExhaustingTheStack() {
        let text = String(repeating: #"{"a":"#, count: 100_000) + "1" + String(repeating: "}", count: 100_000)
        let error = #expect(throws: ValidationError.self) { try JSONValue.parse(text) }
        #expect(error?.message.contains("deeper than 256 levels") == true)
    }
}
