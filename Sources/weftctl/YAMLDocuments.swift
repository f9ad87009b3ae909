// YAML manifests ↔ JSONValue.
import Foundation
import WeftControlClient
import WeftCore
import Yams

/// Reads multi-document YAML (and JSON, which is YAML) into JSON values, and
/// prints JSON values as YAML.
///
/// Scalars are typed by the YAML 1.2 core schema, not YAML 1.1: `yes`, `no`,
/// `on`, `off` stay strings, `1:30` is not a number and `2025-01-31` is not a
/// date (JSON has none; it stays the string written). Only `true`/`false`
/// are booleans, only `null`/`~`/empty are null. That is how JSON reads the
/// same text, and it keeps `on:` or `y` in a header value from turning into a
/// boolean behind the user's back. Quoting decides the rest: `"8080"` is a
/// string, `8080` a number — and resource validation then says which one a
/// field wanted.
enum YAMLDocuments {
    static let resolver: Resolver = {
        // swiftlint:disable force_try
        var r = Resolver.basic
        r = r.appending(try! .init(.bool, "^(?:true|True|TRUE|false|False|FALSE)$"))
        r = r.appending(try! .init(.int, "^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"))
        r = r.appending(try! .init(.float, "^(?:[-+]?(?:\\.[0-9]+|[0-9]+(?:\\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$"))
        r = r.appending(try! .init(.null, "^(?:~|null|Null|NULL|)$"))
        r = r.appending(try! .init(.merge, "^<<$"))
        return r
    }()

    /// Values converted per document before giving up: aliases share nodes,
    /// so a few lines of anchors can expand to billions of values.
    static let maximumValues = 1_000_000

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Every document of `text`, numbered from 1; empty documents are
    /// counted (so numbers match the file) but not returned.
    static func documents(in text: String, source: String) throws(Failure) -> [ManifestDocument] {
        let place = source == "-" ? "stdin" : source
        var out: [ManifestDocument] = []
        var number = 0
        do {
            // Parser rather than compose_all: compose_all's sequence stops at a
            // syntax error without throwing it.
            let parser = try Yams.Parser(yaml: text, resolver: resolver)
            while let node = try parser.nextRoot() {
                number += 1
                var budget = maximumValues
                let value: JSONValue
                do {
                    value = try convert(node, path: "", budget: &budget)
                } catch let failure as Failure {
                    throw Failure(description: "\(place): document \(number): \(failure.description)")
                }
                if value == .null { continue }
                out.append(ManifestDocument(source: source, number: number, value: value))
            }
        } catch let failure as Failure {
            throw failure
        } catch let error as YamlError {
            throw Failure(description: "\(place): document \(number + 1): \(describe(error))")
        } catch {
            throw Failure(description: "\(place): document \(number + 1): \(error)")
        }
        return out
    }

    /// `3:7: mapping values are not allowed in this context` and the line, instead of Yams' layout.
    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, let yaml), .parser(let context, let problem, let mark, let yaml),
             .composer(let context, let problem, let mark, let yaml):
            var text = "YAML syntax error at line \(mark.line), column \(mark.column): \(problem)"
            if let context { text += " (\(context.text))" }
            let line = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            if mark.line >= 1, mark.line <= line.count {
                text += "\n    \(line[mark.line - 1])\n    " + String(repeating: " ", count: max(0, mark.column - 1)) + "^"
            }
            return text
        case .duplicatedKeysInMapping(let duplicates, let context):
            return "duplicate key \(duplicates.map { "\"\($0)\"" }.joined(separator: ", ")) at line \(context.mark.line): a key may appear once per mapping"
        default:
            return "YAML error: \(error)"
        }
    }

    private static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    private static func convert(_ node: Node, path: String, budget: inout Int) throws -> JSONValue {
        budget -= 1
        if budget < 0 {
            throw Failure(description: "more than \(maximumValues) values: is an alias expanding too far?")
        }
        let at = path.isEmpty ? "" : "\(path): "
        switch node {
        case .scalar(let scalar):
            return try scalarValue(scalar.string, tag: Tag.Name(rawValue: node.tag.rawValue), at: at, line: scalar.mark?.line)
        case .sequence(let sequence):
            var items: [JSONValue] = []
            for (i, item) in sequence.enumerated() { items.append(try convert(item, path: "\(path)[\(i)]", budget: &budget)) }
            return .array(items)
        case .mapping(let mapping):
            var object = JSONObject()
            var merged: [JSONObject] = []
            for (keyNode, valueNode) in mapping {
                if Tag.Name(rawValue: keyNode.tag.rawValue) == .merge {
                    // `<<: *defaults` (or a list of them): keys of the merged
                    // mappings apply where this mapping has none.
                    let sources: [Node]
                    switch valueNode {
                    case .sequence(let s): sources = Array(s)
                    default: sources = [valueNode]
                    }
                    for source in sources {
                        guard case .object(let o) = try convert(source, path: join(path, "<<"), budget: &budget) else {
                            throw Failure(description: "\(join(path, "<<")): a merge key takes a mapping or a list of mappings")
                        }
                        merged.append(o)
                    }
                    continue
                }
                guard case .scalar(let keyScalar) = keyNode else {
                    throw Failure(description: "\(at)a mapping key must be a plain value, not a \(keyNode.isMapping ? "mapping" : "list") (JSON keys are strings)")
                }
                let key = keyScalar.string
                if object[key] != nil {
                    throw Failure(description: "\(join(path, key)): duplicate key at line \(keyScalar.mark?.line ?? 0)")
                }
                object[key] = try convert(valueNode, path: join(path, key), budget: &budget)
            }
            for source in merged {
                for member in source where object[member.key] == nil { object[member.key] = member.value }
            }
            return .object(object)
        case .alias:
            // Yams hands aliases over already resolved; nothing else produces them.
            throw Failure(description: "\(at)unresolved YAML alias")
        }
    }

    private static func scalarValue(_ text: String, tag: Tag.Name, at: String, line: Int?) throws -> JSONValue {
        switch tag {
        case .str, .nonSpecific, .implicit:
            return .string(text)
        case .null:
            return .null
        case .bool:
            switch text.lowercased() {
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: throw Failure(description: "\(at)\"\(text)\" is not a boolean (true or false)")
            }
        case .int:
            if let n = parseInteger(text) { return n }
            throw Failure(description: "\(at)\"\(text)\" is not an integer")
        case .float:
            guard let d = Double(text), d.isFinite else {
                throw Failure(description: "\(at)\(text) has no JSON form; quote it to mean the string")
            }
            return .double(d)
        default:
            throw Failure(description: "\(at)the YAML tag \(tag.rawValue) is not supported (only JSON's types: strings, numbers, booleans, null, lists, mappings)")
        }
    }

    /// Decimal, `0x…` or `0o…`; beyond 64 bits a double, as JSON parsing does.
    static func parseInteger(_ text: String) -> JSONValue? {
        var body = Substring(text)
        var negative = false
        if body.first == "-" || body.first == "+" {
            negative = body.first == "-"
            body = body.dropFirst()
        }
        var radix = 10
        if body.hasPrefix("0x") { radix = 16; body = body.dropFirst(2) }
        else if body.hasPrefix("0o") { radix = 8; body = body.dropFirst(2) }
        guard !body.isEmpty else { return nil }
        if let magnitude = UInt64(body, radix: radix) {
            if negative {
                if magnitude <= UInt64(Int64.max) { return .int(-Int64(magnitude)) }
                if magnitude == UInt64(Int64.max) + 1 { return .int(Int64.min) }
            } else if magnitude <= UInt64(Int64.max) {
                return .int(Int64(magnitude))
            }
        }
        guard radix == 10, let d = Double(text) else { return nil }
        return .double(d)
    }

    // MARK: - Printing

    /// YAML text of `value`, as kubectl prints it: block style, keys in
    /// stored order, and strings quoted wherever a YAML reader (1.1 or 1.2)
    /// would otherwise read them as something else (`"8080"`, `"yes"`, `"null"`).
    static func yaml(_ value: JSONValue) -> String {
        do {
            return try Yams.serialize(node: node(value), width: -1, allowUnicode: true)
        } catch {
            // The emitter only fails on invalid events, which node() never builds.
            return value.serialized(pretty: true) + "\n"
        }
    }

    private static func node(_ value: JSONValue) -> Node {
        switch value {
        case .null: return Node("null", Tag(.null), .plain)
        case .bool(let b): return Node(b ? "true" : "false", Tag(.bool), .plain)
        case .int(let i): return Node(String(i), Tag(.int), .plain)
        case .double(let d): return Node(d.isFinite ? "\(d)" : "null", Tag(d.isFinite ? .float : .null), .plain)
        case .string(let s): return Node(s, Tag(.str), style(for: s))
        case .array(let items): return Node(items.map(node), Tag(.seq), .block)
        case .object(let object):
            return Node(object.map { (Node($0.key, Tag(.str), style(for: $0.key)), node($0.value)) }, Tag(.map), .block)
        }
    }

    private static func style(for s: String) -> Node.Scalar.Style {
        if s.contains("\n") { return .literal }
        // Resolver.default is YAML 1.1 (yes/no/on/off, sexagesimals, timestamps),
        // a superset of what 1.2 readers resolve: quoting for it is safe for both.
        if s.isEmpty || Resolver.default.resolveTag(of: Node(s)) != .str || resolver.resolveTag(of: Node(s)) != .str {
            return .doubleQuoted
        }
        return .any
    }
}

extension Node {
    fileprivate var isMapping: Bool {
        if case .mapping = self { return true }
        return false
    }
}
