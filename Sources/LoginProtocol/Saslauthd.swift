public import KerberosSecrets

/// One request of Cyrus saslauthd's protocol (`saslauthd/ipc_unix.c`): counted strings, each a 2-byte
/// big-endian length and the bytes, for login, password, service, realm and (since 2016) client address.
public struct SaslauthdRequest: Sendable {
    /// The login name as the client sent it (field 1).
    public var login: String
    /// The password (field 2), in wiped memory.
    public var password: Secret
    /// The service name, such as `imap` (field 3).
    public var service: String
    /// The realm (field 4); often empty.
    public var realm: String
    /// The fifth field; nil for clients that send four.
    public var clientAddress: String?

    /// A request with the given fields (for clients and tests).
    public init(login: String, password: Secret, service: String, realm: String, clientAddress: String?) {
        self.login = login
        self.password = password
        self.service = service
        self.realm = realm
        self.clientAddress = clientAddress
    }

    /// The request on the wire with `fieldCount` fields (4 or 5); wipe the bytes after sending.
    public func encoded(fieldCount: Int = 5) -> [UInt8] {
        var bytes: [UInt8] = []
        func append(_ field: some Collection<UInt8>) {
            bytes.append(UInt8(field.count >> 8))
            bytes.append(UInt8(field.count & 0xff))
            bytes.append(contentsOf: field)
        }
        append(Array(login.utf8))
        password.withUnsafeBytes { append($0) }
        append(Array(service.utf8))
        append(Array(realm.utf8))
        if fieldCount >= 5 { append(Array((clientAddress ?? "").utf8)) }
        return bytes
    }
}

/// saslauthd's reply: one counted string, `OK` or `NO reason`.
public enum SaslauthdReply: Sendable, Equatable {
    /// The login succeeded (`OK`).
    case ok
    /// The login failed (`NO reason`); the reason may be empty.
    case no(String)

    /// The reply on the wire.
    public var encoded: [UInt8] {
        let text: String
        switch self {
        case .ok: text = "OK"
        case .no(let reason): text = reason.isEmpty ? "NO" : "NO \(reason)"
        }
        let body = Array(text.utf8.prefix(0xffff))
        return [UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
    }

    /// Decodes a complete reply (client side).
    public init(decoding bytes: [UInt8]) throws(ProtocolError) {
        guard bytes.count >= 2 else { throw ProtocolError("reply shorter than its 2-byte length") }
        let length = Int(bytes[0]) << 8 | Int(bytes[1])
        guard bytes.count == 2 + length else { throw ProtocolError("reply length \(length) does not match its \(bytes.count - 2) bytes") }
        guard let text = String(validating: bytes[2...], as: UTF8.self) else { throw ProtocolError("reply is not UTF-8") }
        if text == "OK" { self = .ok }
        else if text == "NO" { self = .no("") }
        else if text.hasPrefix("NO ") { self = .no(String(text.dropFirst(3))) }
        else { throw ProtocolError("reply is neither OK nor NO: \(text.prefix(40))") }
    }
}

/// An incremental decoder of saslauthd requests, fed with bytes as they arrive.
///
/// Bytes that may hold a password are kept in wiped memory and wiped as soon as they are consumed.
public struct SaslauthdDecoder: ~Copyable {
    /// What the bytes so far amount to.
    public enum Progress {
        /// More bytes are needed.
        case needMore
        /// Four fields are complete and nothing more has arrived: an old client may be waiting for the reply.
        case fourFields
        /// A complete five-field request.
        case request(SaslauthdRequest)
    }

    /// The longest field accepted (saslauthd's own limit is 256 bytes).
    public let maximumFieldLength: Int
    private var buffer: SecureBuffer

    /// A decoder that rejects fields longer than `maximumFieldLength` bytes.
    public init(maximumFieldLength: Int = 256) {
        self.maximumFieldLength = maximumFieldLength
        self.buffer = SecureBuffer(capacity: 5 * (2 + maximumFieldLength))
    }

    /// Appends received bytes; more than five maximal fields is an error.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard buffer.count + bytes.count <= buffer.capacity else {
            throw ProtocolError("request longer than \(buffer.capacity) bytes")
        }
        buffer.append(bytes)
    }

    /// Appends received bytes from any collection; more than five maximal fields is an error.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(ProtocolError) {
        guard buffer.count + bytes.count <= buffer.capacity else {
            throw ProtocolError("request longer than \(buffer.capacity) bytes")
        }
        for byte in bytes { buffer.append(byte: byte) }
    }

    /// Decodes as far as the bytes allow.
    public func progress() throws(ProtocolError) -> Progress {
        var offsets: [Range<Int>] = []
        var position = 0
        while offsets.count < 5 {
            guard position + 2 <= buffer.count else { break }
            let length = Int(buffer[position]) << 8 | Int(buffer[position + 1])
            guard length <= maximumFieldLength else {
                throw ProtocolError("field \(offsets.count + 1) is \(length) bytes, more than the limit of \(maximumFieldLength)")
            }
            guard position + 2 + length <= buffer.count else { break }
            offsets.append(position + 2 ..< position + 2 + length)
            position += 2 + length
        }
        if offsets.count == 5 && position < buffer.count {
            throw ProtocolError("\(buffer.count - position) bytes after the fifth field")
        }
        switch offsets.count {
        case 5: return .request(try request(offsets))
        case 4 where position == buffer.count: return .fourFields
        default: return .needMore
        }
    }

    /// The request made of the four fields received so far (an old client's request).
    public func fourFieldRequest() throws(ProtocolError) -> SaslauthdRequest {
        var offsets: [Range<Int>] = []
        var position = 0
        while offsets.count < 4, position + 2 <= buffer.count {
            let length = Int(buffer[position]) << 8 | Int(buffer[position + 1])
            offsets.append(position + 2 ..< min(position + 2 + length, buffer.count))
            position += 2 + length
        }
        guard offsets.count == 4, position == buffer.count else { throw ProtocolError("truncated request") }
        return try request(offsets)
    }

    private func request(_ fields: [Range<Int>]) throws(ProtocolError) -> SaslauthdRequest {
        func text(_ index: Int, _ name: String) throws(ProtocolError) -> String {
            guard let value = buffer.string(fields[index]) else { throw ProtocolError("the \(name) is not UTF-8") }
            guard !value.utf8.contains(0) else { throw ProtocolError("the \(name) contains a NUL byte") }
            return value
        }
        let login = try text(0, "login")
        guard !login.isEmpty else { throw ProtocolError("the login is empty") }
        return SaslauthdRequest(
            login: login,
            password: buffer.secret(fields[1]),
            service: try text(2, "service"),
            realm: try text(3, "realm"),
            clientAddress: fields.count > 4 ? try text(4, "client address") : nil)
    }
}

/// A malformed message, with a reason that names what was wrong.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What was wrong, such as `reply is not UTF-8`.
    public let reason: String
    /// An error with the given reason.
    public init(_ reason: String) { self.reason = reason }
    /// The reason.
    public var description: String { reason }
}

/// A byte buffer for bytes that may be secret: it grows as bytes arrive, up to `capacity`, and every
/// allocation it gives up (when it grows, and when it is released) is wiped first. Bytes only leave through
/// ``wipeContents()``, so the bytes to wipe are always the first `count`; a connection that sends a short
/// line keeps a small buffer, not the 64 KiB limit.
struct SecureBuffer: ~Copyable {
    private var storage: UnsafeMutableRawBufferPointer
    /// The bytes held.
    private(set) var count = 0
    /// The most bytes the buffer may hold.
    let capacity: Int

    init(capacity: Int) {
        self.capacity = max(capacity, 1)
        storage = .allocate(byteCount: min(self.capacity, 512), alignment: 1)
    }

    deinit {
        Secret.wipe(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
        storage.deallocate()
    }

    /// Makes room for `needed` bytes in all, doubling; the caller has checked `needed <= capacity`.
    private mutating func reserve(_ needed: Int) {
        guard needed > storage.count else { return }
        let larger = UnsafeMutableRawBufferPointer.allocate(byteCount: min(max(needed, storage.count * 2), capacity), alignment: 1)
        if count > 0 { larger.baseAddress!.copyMemory(from: storage.baseAddress!, byteCount: count) }
        Secret.wipe(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
        storage.deallocate()
        storage = larger
    }

    subscript(index: Int) -> UInt8 { storage[index] }

    /// Copies `bytes` in; the caller makes sure they fit.
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        precondition(count + bytes.count <= capacity, "SecureBuffer overflow")
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(count + bytes.count)
        (storage.baseAddress! + count).copyMemory(from: base, byteCount: bytes.count)
        count += bytes.count
    }

    /// Appends one byte; the caller makes sure it fits.
    mutating func append(byte: UInt8) {
        precondition(count < capacity, "SecureBuffer overflow")
        if count == storage.count { reserve(count + 1) }
        storage[count] = byte
        count += 1
    }

    func string(_ range: Range<Int>) -> String? {
        String(validating: UnsafeRawBufferPointer(rebasing: storage[range]), as: UTF8.self)
    }

    func secret(_ range: Range<Int>) -> Secret {
        Secret(copying: UnsafeRawBufferPointer(rebasing: storage[range]))
    }

    mutating func wipeContents() {
        Secret.wipe(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
        count = 0
    }
}
