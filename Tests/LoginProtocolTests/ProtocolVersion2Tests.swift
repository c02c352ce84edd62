import Foundation
import KerberosSecrets
import LoginProtocol
import Testing

/// Version 2 of the conversation protocol: what pam_krb5verify.so sends and receives (docs/protocol.md).
@Suite("conversation protocol, version 2")
struct ProtocolVersion2Tests {
    @Test("a version 2 login request: client_address, tty, timeout, purpose, expired and credentials decode and survive a round trip")
    func loginRequest() throws {
        let line = #"{"type":"login","principal":"bob","version":2,"timeout":300,"service":"sshd","client_address":"192.0.2.7","tty":"ssh","purpose":"change-password","expired":"report","credentials":true,"password":"x"}"#
        guard case .login(let request) = try ClientMessage.decode(Array(line.utf8)) else { Issue.record("not a login"); return }
        #expect(request.version == 2)
        #expect(request.clientAddress == "192.0.2.7")
        #expect(request.terminal == "ssh")
        #expect(request.timeout == .seconds(300))
        #expect(request.purpose == .changePassword)
        #expect(request.expired == .report)
        #expect(request.wantsCredentials)
        guard case .login(let again) = try ClientMessage.decode(ClientMessage.login(request).encodedLine.dropLast()) else { Issue.record("not a login"); return }
        #expect(again.clientAddress == request.clientAddress && again.terminal == request.terminal && again.timeout == request.timeout)
        #expect(again.purpose == request.purpose && again.expired == request.expired && again.wantsCredentials)

        guard case .login(let version1) = try ClientMessage.decode(Array(#"{"type":"login","principal":"bob"}"#.utf8)) else { Issue.record("not a login"); return }
        #expect(version1.version == 1 && version1.purpose == .login && version1.expired == .change && !version1.wantsCredentials && version1.timeout == nil)
    }

    @Test("bad version 2 members are refused with an error naming the member", arguments: [
        (#"{"type":"login","principal":"bob","purpose":"reboot"}"#, "\"purpose\""),
        (#"{"type":"login","principal":"bob","expired":"ignore"}"#, "\"expired\""),
        (#"{"type":"login","principal":"bob","timeout":0}"#, "\"timeout\""),
        (#"{"type":"login","principal":"bob","timeout":3601}"#, "\"timeout\""),
        (#"{"type":"login","principal":"bob","version":0}"#, "\"version\""),
        (#"{"type":"login","principal":"bob","credentials":"yes"}"#, "\"credentials\""),
        (#"{"type":"login","principal":"bob","client_address":7}"#, "\"client_address\""),
    ])
    func refused(line: String, member: String) {
        #expect {
            _ = try ClientMessage.decode(Array(line.utf8))
        } throws: { error in
            (error as? ProtocolError)?.reason.contains(member) == true
        }
    }

    @Test("a result's credential cache travels as base64 and comes back byte for byte; bad base64 is refused")
    func credentials() throws {
        for length in [0, 1, 2, 3, 4, 5, 300] {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            var result = LoginResult.success(principal: "alice@KRB5.TEST", verified: true, expires: nil)
            result.credentials = Secret(copying: bytes)
            let line = ServerMessage.result(result).encodedLine
            guard case .result(let decoded) = try ServerMessage.decode(Array(line.dropLast())) else { Issue.record("not a result"); return }
            #expect(decoded.credentials?.withUnsafeBytes { Array($0) } == bytes, "\(length) bytes")
            #expect(decoded == result)
        }
        #expect(throws: ProtocolError.self) {
            _ = try ServerMessage.decode(Array(#"{"type":"result","ok":true,"ccache":"QUJD!"}"#.utf8))
        }
        let encoded = ServerMessage.result({ var r = LoginResult.success(principal: "a", verified: true, expires: nil); r.credentials = Secret("ABC"); return r }()).encodedLine
        #expect(String(decoding: encoded, as: UTF8.self).contains(#""ccache":"QUJD""#))
    }
}
