import Dispatch
import Testing
@testable import KerberosSecrets

/// The C-free module on its own: no krb5, no KDC.
@Suite("KerberosSecrets (unit)")
struct KerberosSecretsTests {
    @Test("a secret keeps its bytes, NUL-terminates them for C and never prints them")
    func secretBytes() {
        let secret = Secret("pässword")
        #expect(secret.count == "pässword".utf8.count)
        #expect(secret.withUnsafeBytes { Array($0) } == Array("pässword".utf8))
        #expect(secret.withCString { String(cString: $0) } == "pässword")
        #expect(!secret.description.contains("pässword"))
        #expect(!secret.containsNUL)
        #expect(Secret(copying: [0x61, 0x00, 0x62]).containsNUL)
        #expect(Secret("").isEmpty)
    }

    @Test("constant-time comparison compares contents, not identity")
    func comparison() {
        #expect(Secret("same").constantTimeEquals(Secret("same")))
        #expect(!Secret("same").constantTimeEquals(Secret("sane")))
        #expect(!Secret("same").constantTimeEquals(Secret("same!")))
    }

    @Test("wipe zeroes a buffer and tolerates an empty one")
    func wipe() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 1)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: Array(repeating: UInt8(0xA5), count: 16))
        Secret.wipe(buffer)
        #expect(buffer.allSatisfy { $0 == 0 })
        Secret.wipe(UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }

    @Test("a lock serialises concurrent updates of its value")
    func lockedCounts() {
        let counter = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<1000 { counter.withLock { $0 += 1 } }
        }
        #expect(counter.withLock { $0 } == 8000)
    }

    @Test("a lock passes a typed error through")
    func lockedThrows() {
        struct Refused: Error {}
        let locked = Locked([1, 2])
        #expect(throws: Refused.self) { try locked.withLock { (_: inout [Int]) throws(Refused) in throw Refused() } }
        #expect(locked.withLock { $0 } == [1, 2])
    }

    @Test("OTP and PKINIT flags are independent bits")
    func flags() {
        let otp: [OTPToken.Flags] = [.collectToken, .collectPIN, .nextOTP, .separatePIN]
        #expect(otp.reduce(0) { $0 | $1.rawValue } == 0xF)
        let pkinit: [PKINITIdentity.Flags] = [.pinCountLow, .pinFinalTry, .pinLocked]
        #expect(pkinit.reduce(0) { $0 | $1.rawValue } == 0x7)
    }
}
