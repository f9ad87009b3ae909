/// The parts of DNS (RFC 1035, EDNS from RFC 6891) weftd's DNS server needs:
/// reading a query defensively and writing answers. Pure and bounds-checked,
/// so any byte string can be thrown at `DNSQuery.parse` (the tests do).

public enum DNSType: UInt16, Sendable {
    case a = 1
    case ns = 2
    case cname = 5
    case soa = 6
    case ptr = 12
    case mx = 15
    case txt = 16
    case aaaa = 28
    case srv = 33
    case opt = 41
    case any = 255
}

public enum DNSRCode: UInt8, Sendable {
    case noError = 0
    case formErr = 1
    case servFail = 2
    case nxDomain = 3
    case notImp = 4
    case refused = 5
}

public struct DNSParseError: Error, Equatable, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// One question of a query, and what else of the query an answer needs.
public struct DNSQuery: Sendable, Equatable {
    public var id: UInt16
    public var flags: UInt16
    /// Lower-cased, without the trailing dot.
    public var name: String
    public var type: UInt16
    public var qclass: UInt16
    /// The question exactly as it was on the wire (echoed in the answer).
    public var questionBytes: [UInt8]
    /// The client's EDNS UDP payload size, when it sent an OPT record.
    public var ednsPayloadSize: UInt16?

    public var recursionDesired: Bool { flags & 0x0100 != 0 }
    public var opcode: UInt8 { UInt8((flags >> 11) & 0xF) }

    static let maxNameLength = 255

    /// A standard query with exactly one question; anything else (a
    /// response, truncated or looping names, trailing garbage in the header
    /// counts) is refused with an error.
    public static func parse(_ b: [UInt8]) throws(DNSParseError) -> DNSQuery {
        guard b.count >= 12 else { throw DNSParseError("shorter than a DNS header") }
        let id = u16(b, 0), flags = u16(b, 2)
        guard flags & 0x8000 == 0 else { throw DNSParseError("a response, not a query") }
        let qd = u16(b, 4), an = u16(b, 6), ns = u16(b, 8), ar = u16(b, 10)
        guard qd == 1 else { throw DNSParseError("\(qd) questions; exactly one is answered") }
        var offset = 12
        let name = try readName(b, &offset)
        guard offset + 4 <= b.count else { throw DNSParseError("question cut short") }
        let type = u16(b, offset), qclass = u16(b, offset + 2)
        offset += 4
        let question = Array(b[12..<offset])
        var edns: UInt16?
        // Skip answer and authority records, then look for OPT among the additional ones.
        for i in 0..<(Int(an) + Int(ns) + Int(ar)) {
            _ = try readName(b, &offset)
            guard offset + 10 <= b.count else { throw DNSParseError("record cut short") }
            let rtype = u16(b, offset), rclass = u16(b, offset + 2), rdlen = Int(u16(b, offset + 8))
            offset += 10
            guard offset + rdlen <= b.count else { throw DNSParseError("record data cut short") }
            offset += rdlen
            if i >= Int(an) + Int(ns), rtype == DNSType.opt.rawValue { edns = max(512, rclass) }
        }
        return DNSQuery(id: id, flags: flags, name: name, type: type, qclass: qclass,
                        questionBytes: question, ednsPayloadSize: edns)
    }

    /// Reads a possibly compressed name; pointers may only go backwards, so a
    /// loop cannot be built.
    static func readName(_ b: [UInt8], _ offset: inout Int) throws(DNSParseError) -> String {
        var labels: [String] = []
        var length = 0
        var pos = offset
        var jumped = false
        var jumps = 0
        while true {
            guard pos < b.count else { throw DNSParseError("name runs past the end") }
            let len = Int(b[pos])
            if len == 0 {
                pos += 1
                break
            }
            if len & 0xC0 == 0xC0 {
                guard pos + 1 < b.count else { throw DNSParseError("compression pointer cut short") }
                let target = ((len & 0x3F) << 8) | Int(b[pos + 1])
                guard target < pos, jumps < 32 else { throw DNSParseError("compression pointer loops") }
                if !jumped { offset = pos + 2 }
                jumped = true
                jumps += 1
                pos = target
                continue
            }
            guard len & 0xC0 == 0 else { throw DNSParseError("unknown label type") }
            guard pos + 1 + len <= b.count else { throw DNSParseError("label runs past the end") }
            length += len + 1
            guard length <= maxNameLength else { throw DNSParseError("name longer than 255 bytes") }
            labels.append(String(decoding: b[(pos + 1)..<(pos + 1 + len)], as: UTF8.self).lowercased())
            pos += 1 + len
        }
        if !jumped { offset = pos }
        return labels.joined(separator: ".")
    }

    static func u16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
}

/// A resource record of an answer.
public struct DNSRecord: Sendable, Equatable {
    public enum Data: Sendable, Equatable {
        case a(IPAddress)
        case aaaa(IPAddress)
        case srv(priority: UInt16, weight: UInt16, port: UInt16, target: String)
    }

    /// nil: the question's name (written as a pointer to it).
    public var name: String?
    public var ttl: UInt32
    public var data: Data

    public init(name: String? = nil, ttl: UInt32, data: Data) {
        self.name = name
        self.ttl = ttl
        self.data = data
    }
}

public enum DNSResponse {
    /// The UDP size an answer may use: 512 without EDNS, else what the client
    /// offered, capped at 1232 (the DNS flag day's safe size).
    public static func udpLimit(_ q: DNSQuery) -> Int {
        guard let edns = q.ednsPayloadSize else { return 512 }
        return min(max(Int(edns), 512), 1232)
    }

    /// An answer to `q`. Over the limit, the records are dropped and TC set
    /// (RFC 1035 4.1.1, RFC 7766: the client asks again over TCP).
    public static func build(_ q: DNSQuery, rcode: DNSRCode, authoritative: Bool, answers: [DNSRecord] = [],
                             additional: [DNSRecord] = [], limit: Int = 65535) -> (bytes: [UInt8], truncated: Bool) {
        let full = encode(q, rcode: rcode, authoritative: authoritative, truncated: false, answers: answers, additional: additional)
        if full.count <= limit { return (full, false) }
        return (encode(q, rcode: rcode, authoritative: authoritative, truncated: true, answers: [], additional: []), true)
    }

    static func encode(_ q: DNSQuery, rcode: DNSRCode, authoritative: Bool, truncated: Bool,
                       answers: [DNSRecord], additional: [DNSRecord]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        func put16(_ v: UInt16) { out.append(UInt8(v >> 8)); out.append(UInt8(v & 0xFF)) }
        func put32(_ v: UInt32) { put16(UInt16(v >> 16)); put16(UInt16(v & 0xFFFF)) }
        var flags: UInt16 = 0x8000 | (UInt16(q.opcode) << 11) | (q.flags & 0x0100) | 0x0080 | UInt16(rcode.rawValue)
        if authoritative { flags |= 0x0400 }
        if truncated { flags |= 0x0200 }
        put16(q.id)
        put16(flags)
        put16(1)
        put16(UInt16(answers.count))
        put16(0)
        put16(UInt16(additional.count + (q.ednsPayloadSize != nil ? 1 : 0)))
        out += q.questionBytes
        for r in answers + additional {
            if let name = r.name { out += encodeName(name) } else { put16(0xC00C) }
            switch r.data {
            case .a(let ip):
                put16(DNSType.a.rawValue); put16(1); put32(r.ttl); put16(4); out += ip.ipv4Bytes ?? [0, 0, 0, 0]
            case .aaaa(let ip):
                put16(DNSType.aaaa.rawValue); put16(1); put32(r.ttl); put16(16); out += ip.bytes
            case .srv(let priority, let weight, let port, let target):
                let t = encodeName(target)
                put16(DNSType.srv.rawValue); put16(1); put32(r.ttl); put16(UInt16(6 + t.count))
                put16(priority); put16(weight); put16(port); out += t
            }
        }
        if q.ednsPayloadSize != nil {
            // OPT: root name, our payload size, no extended flags.
            out.append(0); put16(DNSType.opt.rawValue); put16(1232); put32(0); put16(0)
        }
        return out
    }

    public static func encodeName(_ name: String) -> [UInt8] {
        var out: [UInt8] = []
        for label in name.split(separator: ".") where !label.isEmpty {
            let bytes = Array(label.utf8.prefix(63))
            out.append(UInt8(bytes.count))
            out += bytes
        }
        out.append(0)
        return out
    }
}
