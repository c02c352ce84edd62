import Kerberos
import KerberosEngine
import LoginProtocol
import Testing
@testable import LoginService

/// How the service reads the wire formats' values, without a KDC.
@Suite("Protocol mapping (unit)")
struct ProtocolMappingTests {
    private func request(_ login: String, realm: String) -> SaslauthdRequest {
        SaslauthdRequest(login: login, password: Secret(""), service: "imap", realm: realm, clientAddress: nil)
    }

    @Test("a saslauthd request names login@realm unless the login names a realm or the realm field is empty")
    func saslauthdPrincipal() {
        #expect(LoginService.principal(for: request("bob", realm: "EXAMPLE.ORG")) == "bob@EXAMPLE.ORG")
        #expect(LoginService.principal(for: request("alice@R", realm: "")) == "alice@R")
        #expect(LoginService.principal(for: request("alice@R", realm: "OTHER")) == "alice@R")
        #expect(LoginService.principal(for: request("a\\@b", realm: "R")) == "a\\@b@R", "an escaped @ names no realm")
        #expect(LoginService.principal(for: request("carol", realm: "")) == "carol")
    }

    @Test("an unescaped @ names a realm; an escaped one does not")
    func hasRealm() {
        #expect(LoginNames.hasRealm("alice@R"))
        #expect(!LoginNames.hasRealm("alice"))
        #expect(!LoginNames.hasRealm("a\\@b"))
        #expect(LoginNames.hasRealm("a\\@b@R"))
        #expect(!LoginNames.hasRealm("a\\\\"))
    }

    @Test("library failure reasons map onto the protocol's failure names")
    func failures() {
        let cases: [(KerberosError.Reason, LoginResult.Failure)] = [
            (.badPassword, .badCredentials), (.cancelled, .badCredentials), (.preauthUnavailable, .badCredentials),
            (.unknownPrincipal, .unknownPrincipal), (.passwordExpired, .passwordExpired), (.accountDisabled, .accountDisabled),
            (.kdcUnreachable, .kdcUnreachable), (.verificationFailed, .verificationFailed), (.clockSkew, .clockSkew),
            (.invalidRequest, .invalidRequest), (.other, .internal), (KerberosError.Reason(rawValue: "novel"), .internal),
        ]
        for (reason, failure) in cases {
            #expect(LoginResult.Failure(reason) == failure, "\(reason)")
        }
    }
}
