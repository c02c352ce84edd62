import Foundation
import Kerberos
import KerberosEngine
import LoginProtocol
@testable import LoginService
import Testing

/// ``LoginService/resolve(_:)`` keeps what it resolved: a mail server asks for the same few names all day.
@Suite("LoginService: names resolved once, kept in a bounded table")
struct NameResolutionTests {
    @Test("a name is resolved once and answered the same from memory; names over 256 bytes are not kept; a full table starts over")
    func keptAndBounded() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("names-\(getpid()).conf").path
        try "[libdefaults]\n default_realm = EXAMPLE.ORG\n[realms]\n EXAMPLE.ORG = {\n  kdc = 127.0.0.1:9\n }\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let service = try LoginService(configuration: LoginConfiguration(krb5: .files(path), keytab: nil, serverPrincipal: nil, armor: .none), threads: 1)
        defer { service.shutdownBlocking() }

        for _ in 0..<2 {
            guard case .principal(let name) = service.resolve("alice") else { Issue.record("alice resolves"); return }
            #expect(name == "alice@EXAMPLE.ORG")
            guard case .refused(let result) = service.resolve("bob@ELSEWHERE.ORG") else { Issue.record("an unlisted realm is refused"); return }
            #expect(result.failure == .unknownPrincipal)
        }
        #expect(service.resolvedNameCount == 1, "each principal kept once; refusals are not kept")
        let long = String(repeating: "x", count: 300)
        guard case .principal(let longName) = service.resolve(long) else { Issue.record("a long name resolves"); return }
        #expect(longName == long + "@EXAMPLE.ORG")
        #expect(service.resolvedNameCount == 1, "a name over 256 bytes is not kept")

        let kept = LoginService.resolvedNamesKept.count
        for index in 0..<kept { _ = service.resolve("user\(index)") }
        #expect(service.resolvedNameCount < kept, "emptied when it was full, then filled again")
        guard case .principal(let again) = service.resolve("alice") else { Issue.record("alice still resolves"); return }
        #expect(again == "alice@EXAMPLE.ORG")
    }

    @Test("names refused at once never flush the table: 4,096 and more of them leave the kept principals in place")
    func refusalsDoNotFlush() throws {
        let service = try Self.service()
        defer { service.shutdownBlocking() }
        _ = service.resolve("alice")
        for index in 0..<(LoginService.resolvedNamesKept.count + 10) {
            guard case .refused = service.resolve("user\(index)@ELSEWHERE.ORG") else { Issue.record("an unlisted realm is refused"); return }
        }
        #expect(service.resolvedNameCount == 1, "alice is still kept")
    }

    @Test("the table keys on bytes: jose\u{301} (NFD) and jos\u{e9} (NFC) resolve each to itself, whichever comes first")
    func canonicallyEquivalentNames() throws {
        let service = try Self.service()
        defer { service.shutdownBlocking() }
        for name in ["jose\u{301}", "jos\u{e9}", "\u{212A}elvin", "Kelvin"] {
            guard case .principal(let principal) = service.resolve(name) else { Issue.record("\(name) resolves"); continue }
            #expect(Array(principal.utf8) == Array("\(name)@EXAMPLE.ORG".utf8), "\(name) resolved to \(principal)")
        }
    }

    /// A service for the realm EXAMPLE.ORG, whose KDC is never contacted.
    static func service() throws -> LoginService {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("names-\(getpid())-\(UUID().uuidString).conf").path
        try "[libdefaults]\n default_realm = EXAMPLE.ORG\n[realms]\n EXAMPLE.ORG = {\n  kdc = 127.0.0.1:9\n }\n".write(toFile: path, atomically: true, encoding: .utf8)
        return try LoginService(configuration: LoginConfiguration(krb5: .files(path), keytab: nil, serverPrincipal: nil, armor: .none), threads: 1)
    }
}
