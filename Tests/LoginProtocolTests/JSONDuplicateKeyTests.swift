import Foundation
import KerberosSecrets
@testable import LoginProtocol
import Testing

/// Issue #11, item 7: the parser's duplicate-name check is linear in the number of members (it runs on the
/// daemon's event loop), and still rejects every duplicate.
@Suite("JSON duplicate member names")
struct JSONDuplicateKeyTests {
    /// `count` distinct member names of one to three printable ASCII characters (no `"` or `\`), shortest first.
    static func names(_ count: Int) -> [String] {
        let alphabet = (0x20...0x7e).map { UInt8($0) }.filter { $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
        var names: [String] = alphabet.map { String(decoding: [$0], as: UTF8.self) }
        outer: for first in alphabet {
            for second in alphabet {
                if names.count >= count { break outer }
                names.append(String(decoding: [first, second], as: UTF8.self))
            }
        }
        outer: for first in alphabet {
            for second in alphabet {
                for third in alphabet {
                    if names.count >= count { break outer }
                    names.append(String(decoding: [first, second, third], as: UTF8.self))
                }
            }
        }
        return Array(names.prefix(count))
    }

    /// A login message followed by 9,000 more members: the shape of the attack, within one 64 KiB line.
    static func bigLine(extra: String? = nil) -> [UInt8] {
        var text = #"{"type":"login","principal":"bob""#
        for name in names(9_000) { text += #","\#(name)":0"# }
        if let extra { text += "," + extra }
        return Array((text + "}").utf8)
    }

    func parse(_ text: String) throws -> (value: JSONValue, nameChecks: Int) {
        try Self.parse(Array(text.utf8))
    }

    static func parse(_ bytes: [UInt8]) throws -> (value: JSONValue, nameChecks: Int) {
        try bytes.withUnsafeBytes { buffer in try JSONParser.parseCounting(buffer) }
    }

    func rejectedAsDuplicate(_ text: String) -> Bool {
        do {
            _ = try parse(text)
            return false
        } catch let error as ProtocolError {
            return error.reason.contains("duplicate member")
        } catch {
            return false
        }
    }

    @Test("a 9,000-member line within 64 KiB parses, with a linear number of name checks")
    func nineThousandMembers() throws {
        let line = Self.bigLine()
        #expect(line.count <= 65_536, "the line is \(line.count) bytes")
        let (value, checks) = try Self.parse(line)
        guard case .object(let members) = value else { Issue.record("not an object"); return }
        #expect(members.count == 9_002)
        // Quadratic was 9,002 × 9,001 / 2 ≈ 40.5 million comparisons; linear is about one check per member.
        #expect(checks <= 2 * members.count, "\(checks) name checks for \(members.count) members")
        // The daemon's decoder takes it too (unknown members are ignored).
        guard case .login(let request) = try ClientMessage.decode(line) else { Issue.record("not a login"); return }
        #expect(request.principal == "bob")
    }

    @Test("duplicates are rejected in small and large objects, wherever they are")
    func duplicatesRejected() throws {
        // Small objects (the scanning path).
        #expect(rejectedAsDuplicate(#"{"a":1,"a":2}"#))
        #expect(rejectedAsDuplicate(#"{"a":1,"b":2,"c":3,"b":4}"#))
        #expect(rejectedAsDuplicate(#"{"x":{"a":1,"a":2}}"#))
        #expect(rejectedAsDuplicate(#"[{"a":1},{"b":1,"b":2}]"#))
        // Large objects (the set path): a duplicate of the first name, of one seen while scanning, of one
        // added to the set, and of the last; a pair of new names; nested.
        let list = Self.names(200)
        let names = list.map { #""\#($0)":0"# }.joined(separator: ",")
        for name in [list[0], list[5], list[150], list[199]] {
            #expect(rejectedAsDuplicate("{\(names),\"\(name)\":1}"), "\(name)")
        }
        #expect(rejectedAsDuplicate("{\(names),\"last\":1,\"last\":2}"))
        #expect(rejectedAsDuplicate("{\"k\":{\(names),\"k\":1,\"k\":2}}"))
        // The whole 64 KiB line with one name repeated at its end.
        let line = Self.bigLine(extra: #""principal":"mallory""#)
        #expect(throws: ProtocolError.self) { try ClientMessage.decode(line) }
        #expect(rejectedAsDuplicate(String(decoding: line, as: UTF8.self)))
        // Escapes decode before the comparison: "\u0061" is "a".
        #expect(rejectedAsDuplicate(#"{"a":1,"\u0061":2}"#))
        #expect(rejectedAsDuplicate("{\(names),\"\\u0021\":1}")) // "!"
        // Names equal as Swift strings (canonically equivalent) are duplicates on both paths, as before.
        #expect(rejectedAsDuplicate(#"{"\u00e9":1,"e\u0301":2}"#))
        #expect(rejectedAsDuplicate("{\(names),\"\\u00e9\":1,\"e\\u0301\":2}"))
    }

    @Test("the same name in different objects, and distinct names, are not duplicates")
    func notDuplicates() throws {
        let names = Self.names(200).map { #""\#($0)":{"a":1}"# }.joined(separator: ",")
        let (value, _) = try parse("{\(names),\"nested\":{\"a\":{\"a\":1}}}")
        guard case .object(let members) = value else { Issue.record("not an object"); return }
        #expect(members.count == 201)
        #expect(members.first?.key == " ")
        #expect(members.last?.key == "nested")
        _ = try parse(#"{"a":1,"A":2,"a ":3," a":4}"#)
    }

    @Test("the error names the duplicate member")
    func errorNamesMember() {
        let list = Self.names(100)
        let names = list.map { #""\#($0)":0"# }.joined(separator: ",")
        for (text, name) in [(#"{"zz":0,"zz":1}"#, "zz"), ("{\(names),\"z\":1}", "z")] {
            do {
                _ = try parse(text)
                Issue.record("accepted")
            } catch let error as ProtocolError {
                #expect(error.reason.contains(#"duplicate member "\#(name)""#), "\(error.reason)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }
}
