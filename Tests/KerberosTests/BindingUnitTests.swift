import CKrb5
import Foundation
import SystemPackage
import Testing
@testable import Kerberos

/// The binding's conversions and ownership without a KDC.
@Suite("Binding (unit)")
struct BindingUnitTests {
    @Test("krb5 timestamps are unsigned seconds; zero is unset only where krb5 says so")
    func timestamps() {
        #expect(KerberosTime(krb5Timestamp: 1_700_000_000).secondsSince1970 == 1_700_000_000)
        // After 2038 the Int32 is negative; krb5 reads it as unsigned (valid until 2106).
        #expect(KerberosTime(krb5Timestamp: Int32(bitPattern: 3_000_000_000)).secondsSince1970 == 3_000_000_000)
        #expect(KerberosTime(krb5Timestamp: 0).secondsSince1970 == 0)
        #expect(KerberosTime(krb5TimestampIfSet: 0) == nil)
        #expect(KerberosTime(krb5TimestampIfSet: 42)?.secondsSince1970 == 42)
    }

    @Test("krb5_data becomes a String through one conversion, empty data included")
    func data() {
        var bytes: [CChar] = Array("REALM".utf8CString.dropLast())
        let text = bytes.withUnsafeMutableBufferPointer { buffer in
            String(krb5Data: krb5_data(magic: 0, length: UInt32(buffer.count), data: buffer.baseAddress))
        }
        #expect(text == "REALM")
        #expect(String(krb5Data: krb5_data()) == "")
    }

    @Test("principals are Hashable: equal names are equal and hash alike, whatever their spelling")
    func hashable() throws {
        let context = try offlineContext()
        let short = try Principal(parsing: "alice", in: context)
        let full = try Principal(parsing: "alice@OFFLINE.TEST", in: context)
        let other = try Principal(parsing: "alice@OTHER.TEST", in: context)
        #expect(short == full)
        #expect(short.hashValue == full.hashValue)
        #expect(short != other)
        #expect(Set([short, full, other]).count == 2)
        // Equality ignores the name type, as krb5_principal_compare does.
        let enterprise = try Principal(parsing: "alice@example.com", in: context, options: .enterprise)
        let escaped = try Principal(parsing: "alice\\@example.com", in: context)
        #expect(enterprise.nameType != escaped.nameType)
        #expect(enterprise.components == escaped.components)
        #expect(enterprise == escaped)
        #expect(enterprise.hashValue == escaped.hashValue)
    }

    @Test("name types are typed, with their krb5 numbers")
    func nameTypes() throws {
        let context = try offlineContext()
        #expect(try Principal(parsing: "alice", in: context).nameType == .principal)
        #expect(try Principal(parsing: "alice@example.com", in: context, options: .enterprise).nameType == .enterprise)
        #expect(try Principal.anonymous(realm: nil, in: context).nameType == .wellKnown)
        #expect(try Principal.service("host", hostname: "h.example.org", in: context, canonicalize: false).nameType == .unknown)
        #expect(Principal.NameType(rawValue: Int32(KRB5_NT_SRV_HST)) == .serviceHost)
        #expect(Principal.NameType(rawValue: -128) == .other(-128))
        #expect(Principal.NameType.other(-128).rawValue == -128)
        let all: [Principal.NameType] = [.unknown, .principal, .serviceInstance, .serviceHost, .serviceExtendedHost, .uid, .x500, .smtpName, .enterprise, .wellKnown]
        for type in all {
            #expect(Principal.NameType(rawValue: type.rawValue) == type, "\(type)")
        }
        #expect(Set(all.map(\.rawValue)).count == all.count)
    }

    @Test("the C-free responder values carry krb5.h's numbers")
    func responderConstants() {
        #expect(OTPToken.Flags.collectToken.rawValue == Int32(KRB5_RESPONDER_OTP_FLAGS_COLLECT_TOKEN))
        #expect(OTPToken.Flags.collectPIN.rawValue == Int32(KRB5_RESPONDER_OTP_FLAGS_COLLECT_PIN))
        #expect(OTPToken.Flags.nextOTP.rawValue == Int32(KRB5_RESPONDER_OTP_FLAGS_NEXTOTP))
        #expect(OTPToken.Flags.separatePIN.rawValue == Int32(KRB5_RESPONDER_OTP_FLAGS_SEPARATE_PIN))
        #expect(OTPToken.Format.decimal.rawValue == Int32(KRB5_RESPONDER_OTP_FORMAT_DECIMAL))
        #expect(OTPToken.Format.hexadecimal.rawValue == Int32(KRB5_RESPONDER_OTP_FORMAT_HEXADECIMAL))
        #expect(OTPToken.Format.alphanumeric.rawValue == Int32(KRB5_RESPONDER_OTP_FORMAT_ALPHANUMERIC))
        #expect(PKINITIdentity.Flags.pinCountLow.rawValue == Int32(KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_USER_PIN_COUNT_LOW))
        #expect(PKINITIdentity.Flags.pinFinalTry.rawValue == Int32(KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_USER_PIN_FINAL_TRY))
        #expect(PKINITIdentity.Flags.pinLocked.rawValue == Int32(KRB5_RESPONDER_PKINIT_FLAGS_TOKEN_USER_PIN_LOCKED))
    }

    @Test("errors carry real krb5 or errno codes, never -1")
    func realCodes() {
        let shutDown = KerberosError.shutDown("executor")
        #expect(shutDown.code == ECANCELED)
        #expect(shutDown.message == "The Kerberos executor has shut down")
        #expect(shutDown.reason == .other)
        let empty = KerberosError.emptyKeytab("MEMORY:x")
        #expect(empty.code == Int32(KRB5_KT_NOTFOUND))
        #expect(empty.reason == .invalidRequest)
        #expect(empty.file.hasSuffix("BindingUnitTests.swift"))
    }

    @Test("the lists krb5 keeps pointers into stay valid for the request's lifetime")
    func optionLists() throws {
        let context = try offlineContext()
        let client = try Principal(parsing: "alice", in: context)
        var options = InitialCredentialsOptions()
        options.encryptionTypes = [.aes256CTSHMACSHA196, .aes128CTSHMACSHA196]
        options.preauthTypes = [.encryptedTimestamp]
        options.salt = Array("OFFLINE.TESTalice".utf8)
        let request = try InitialCredentialsRequest(context: context, client: client, options: options)
        // Churn the heap: memory borrowed from a Swift array would be reused by now.
        for index in 0..<1000 { _ = Array(repeating: index, count: 16) }
        let opt = request.opt.pointee
        #expect(opt.etype_list_length == 2)
        #expect(opt.etype_list[0] == EncryptionType.aes256CTSHMACSHA196.rawValue)
        #expect(opt.etype_list[1] == EncryptionType.aes128CTSHMACSHA196.rawValue)
        #expect(opt.preauth_list_length == 1)
        #expect(opt.preauth_list[0] == PreauthType.encryptedTimestamp.rawValue)
        #expect(Array(opt.salt.pointee.buffer) == Array("OFFLINE.TESTalice".utf8))
    }

    @Test("an empty encryption-type list is handed to krb5 as a valid pointer with no entries")
    func emptyList() throws {
        let context = try offlineContext()
        var options = InitialCredentialsOptions()
        options.encryptionTypes = []
        let request = try InitialCredentialsRequest(context: context, client: try Principal(parsing: "alice", in: context), options: options)
        #expect(request.opt.pointee.etype_list_length == 0)
    }
}


/// ``Terminal``'s reads through swift-system, from a pipe instead of `/dev/tty`.
@Suite("Terminal (unit)")
struct TerminalTests {
    @Test("a line is read into a secret, without its newline")
    func readsLine() throws {
        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close() }
        _ = try pipe.writeEnd.closeAfter { try pipe.writeEnd.writeAll("s3cret\nrest".utf8) }
        let secret = try Terminal.readLine(pipe.readEnd, hidden: true)
        #expect(secret.withUnsafeBytes { Array($0) } == Array("s3cret".utf8))
    }

    @Test("end of input cancels the prompt")
    func endOfInput() throws {
        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close() }
        try pipe.writeEnd.close()
        let error = #expect(throws: KerberosError.self) { try Terminal.readLine(pipe.readEnd, hidden: false) }
        #expect(error?.reason == .cancelled)
        #expect(error?.message == "Input ended at the prompt")
    }

    @Test("a signal during the read does not end the input (EINTR is retried)")
    func interruptedRead() throws {
        // A handler without SA_RESTART makes a blocked read fail with EINTR when the signal arrives.
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        var previous = sigaction()
        sigaction(SIGUSR2, &action, &previous)
        defer { sigaction(SIGUSR2, &previous, nil) }

        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close(); try? pipe.writeEnd.close() }
        let reader = Locked<pthread_t?>(nil)
        let result = Locked<Result<[UInt8], KerberosError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let readEnd = pipe.readEnd
        Thread.detachNewThread {
            reader.withLock { $0 = pthread_self() }
            do {
                let secret = try Terminal.readLine(readEnd, hidden: false)
                result.withLock { $0 = .success(secret.withUnsafeBytes { Array($0) }) }
            } catch {
                result.withLock { $0 = .failure(error as! KerberosError) }
            }
            done.signal()
        }
        while reader.withLock({ $0 }) == nil { usleep(1000) }
        usleep(100_000)
        pthread_kill(reader.withLock { $0 }!, SIGUSR2)
        usleep(100_000)
        try pipe.writeEnd.writeAll("after-signal\n".utf8)
        done.wait()
        #expect(try result.withLock { $0 }?.get() == Array("after-signal".utf8))
    }
}
