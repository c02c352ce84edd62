public import KerberosSecrets

/// The login request that opens a conversation:
/// `{"type":"login","principal":"bob","password":"…","service":"imap","client_address":"192.0.2.7"}`.
///
/// Version 2 of the protocol (docs/protocol.md) adds what a PAM module needs: the remote host and terminal, a
/// deadline for the whole conversation, a password change as the purpose, how an expired password is handled,
/// and the credential cache in the result.
public struct LoginRequest: Sendable {
    /// What the conversation is for (`"purpose"`).
    public enum Purpose: String, Sendable {
        /// A login (the default).
        case login
        /// A password change through kpasswd: the old password is proven with a `kadmin/changepw` ticket, the
        /// new one asked for twice, then the login with the new password.
        case changePassword = "change-password"
    }

    /// What happens when the password has expired (`"expired"`).
    public enum ExpiredPassword: String, Sendable {
        /// The new password is asked for and changed during the login (the default).
        case change
        /// Once the old password is proven, the login ends with `password-expired`: the client changes it
        /// another way (a PAM stack's password phase).
        case report
    }

    /// The principal to log in as, as the person typed it (`"principal"`).
    public var principal: String
    /// The password, when the client sends it up front (`"password"`); otherwise it is asked for.
    public var password: Secret?
    /// The service the login is for, such as `imap` or PAM's service `sshd` (`"service"`); logged, not used by krb5.
    public var service: String?
    /// The protocol version the client speaks (`"version"`, 1 when absent).
    public var version: Int
    /// The address of the person logging in, as the front end saw it (`"client_address"`, PAM's `PAM_RHOST`,
    /// saslauthd's fifth field): the daemon's per-address throttle key. At most 256 bytes.
    public var clientAddress: String?
    /// The terminal (`"tty"`, PAM's `PAM_TTY`); logged.
    public var terminal: String?
    /// How long the client waits for the whole conversation (`"timeout"`, whole seconds); the daemon ends it
    /// with a `timeout` result then, so that it never answers a client that has given up.
    public var timeout: Duration?
    /// What the conversation is for.
    public var purpose: Purpose
    /// What happens to an expired password.
    public var expired: ExpiredPassword
    /// Whether a successful result carries the credentials as a credential cache file (`"credentials"`).
    public var wantsCredentials: Bool

    /// A request with the given members.
    public init(principal: String, password: Secret? = nil, service: String? = nil, version: Int = 1, clientAddress: String? = nil,
                terminal: String? = nil, timeout: Duration? = nil, purpose: Purpose = .login, expired: ExpiredPassword = .change,
                wantsCredentials: Bool = false) {
        self.principal = principal
        self.password = password
        self.service = service
        self.version = version
        self.clientAddress = clientAddress
        self.terminal = terminal
        self.timeout = timeout
        self.purpose = purpose
        self.expired = expired
        self.wantsCredentials = wantsCredentials
    }

    /// The longest `client_address` accepted, as saslauthd limits its fields.
    public static let maxClientAddressLength = 256

    /// The longest `timeout` a client may ask for.
    public static let longestTimeout = Duration.seconds(3600)

    init(fields: Fields) throws(ProtocolError) {
        let principal = try fields.string("principal")
        guard !principal.isEmpty else { throw ProtocolError("\"principal\" is empty") }
        let version = try fields.optionalInt("version") ?? 1
        guard version >= 1 else { throw ProtocolError("\"version\" must be 1 or more") }
        var timeout: Duration?
        if let seconds = try fields.optionalInt("timeout") {
            guard seconds >= 1, seconds <= Self.longestTimeout.components.seconds else { throw ProtocolError("\"timeout\" must be 1 to 3600 seconds") }
            timeout = .seconds(seconds)
        }
        let purposeName = try fields.optionalString("purpose") ?? Purpose.login.rawValue
        guard let purpose = Purpose(rawValue: purposeName) else { throw ProtocolError("\"purpose\" must be \"login\" or \"change-password\"") }
        let expiredName = try fields.optionalString("expired") ?? ExpiredPassword.change.rawValue
        guard let expired = ExpiredPassword(rawValue: expiredName) else { throw ProtocolError("\"expired\" must be \"change\" or \"report\"") }
        let clientAddress = try fields.optionalString("client_address")
        let terminal = try fields.optionalString("tty")
        for (name, value) in [("client_address", clientAddress), ("tty", terminal)] where (value?.utf8.count ?? 0) > Self.maxClientAddressLength {
            throw ProtocolError("\"\(name)\" is longer than \(Self.maxClientAddressLength) bytes")
        }
        self.init(principal: principal, password: try fields.optionalSecret("password"), service: try fields.optionalString("service"),
                  version: version, clientAddress: clientAddress, terminal: terminal, timeout: timeout, purpose: purpose, expired: expired,
                  wantsCredentials: try fields.optionalBool("credentials") ?? false)
    }
}

/// A message from the client: the login request, or the answers to a round.
public enum ClientMessage: Sendable {
    /// Opens the conversation (`"type":"login"`).
    case login(LoginRequest)
    /// Answers the round numbered `id` (`"type":"answers"`).
    case answers(id: Int, LoginAnswers)

    /// Decodes one line (without its newline).
    public static func decode(_ line: UnsafeRawBufferPointer) throws(ProtocolError) -> ClientMessage {
        let json = try JSONParser.parse(line)
        guard case .object = json else { throw ProtocolError("a message must be a JSON object") }
        let fields = Fields(json)
        switch try fields.string("type") {
        case "login":
            return .login(try LoginRequest(fields: fields))
        case "answers":
            let id = try fields.int("id")
            guard let answers = json["answers"] else { throw ProtocolError("missing \"answers\"") }
            return .answers(id: id, try LoginAnswers(json: answers))
        case let other:
            throw ProtocolError("unknown message type \"\(other.prefix(40))\"")
        }
    }

    /// Decodes one line given as bytes.
    public static func decode(_ line: [UInt8]) throws(ProtocolError) -> ClientMessage {
        let result = line.withUnsafeBytes { bytes in Result { () throws(ProtocolError) in try decode(bytes) } }
        return try result.get()
    }

    /// The message as one JSON line; it carries secrets, so wipe it once sent.
    public var encodedLine: [UInt8] {
        var writer = JSONWriter()
        switch self {
        case .login(let request):
            writer.string("type", "login")
            writer.string("principal", request.principal)
            if let password = request.password { writer.secret("password", password) }
            if let service = request.service { writer.string("service", service) }
            if request.version != 1 { writer.int("version", request.version) }
            if let address = request.clientAddress { writer.string("client_address", address) }
            if let terminal = request.terminal { writer.string("tty", terminal) }
            if let timeout = request.timeout { writer.int("timeout", Int(timeout.components.seconds)) }
            if request.purpose != .login { writer.string("purpose", request.purpose.rawValue) }
            if request.expired != .change { writer.string("expired", request.expired.rawValue) }
            if request.wantsCredentials { writer.bool("credentials", true) }
        case .answers(let id, let answers):
            writer.string("type", "answers")
            writer.int("id", id)
            writer.raw("answers", answers.encoded)
        }
        return writer.line()
    }
}

/// A message from the server: a round of questions, information, or the result.
public enum ServerMessage: Sendable {
    /// A round of questions numbered `id` (`"type":"questions"`); the client answers with the same `id`.
    case questions(id: Int, [LoginQuestion])
    /// Text to show the person, such as a banner or a password-expiry warning (`"type":"info"`).
    case info(String)
    /// The end of the login (`"type":"result"`).
    case result(LoginResult)

    /// The message as one JSON line.
    public var encodedLine: [UInt8] {
        var writer = JSONWriter()
        switch self {
        case .questions(let id, let questions):
            writer.string("type", "questions")
            writer.int("id", id)
            writer.raw("questions", JSONWriter.array(questions.map(\.encoded)))
        case .info(let message):
            writer.string("type", "info")
            writer.string("message", message)
        case .result(let result):
            writer.string("type", "result")
            writer.bool("ok", result.ok)
            if let principal = result.principal { writer.string("principal", principal) }
            if result.ok {
                writer.bool("verified", result.verified)
                if let expires = result.expires { writer.string("expires", expires.description) }
                if let credentials = result.credentials { writer.secret("ccache", credentials.withUnsafeBytes { Base64.encode($0) }) }
            }
            if let failure = result.failure { writer.string("error", failure.rawValue) }
            if let message = result.message { writer.string("message", message) }
        }
        return writer.line()
    }

    /// Decodes one line (client side).
    public static func decode(_ line: [UInt8]) throws(ProtocolError) -> ServerMessage {
        let json = try line.withUnsafeBytes { bytes in Result { () throws(ProtocolError) in try JSONParser.parse(bytes) } }.get()
        let fields = Fields(json)
        switch try fields.string("type") {
        case "questions":
            guard case .array(let items)? = json["questions"] else { throw ProtocolError("\"questions\" must be an array") }
            return .questions(id: try fields.int("id"), try items.map { item throws(ProtocolError) in try LoginQuestion(json: item) })
        case "info":
            return .info(try fields.string("message"))
        case "result":
            let ok = try fields.bool("ok")
            let expires = try fields.optionalString("expires").map { text throws(ProtocolError) in
                guard let time = KerberosTime(rfc3339: text) else { throw ProtocolError("\"expires\" is not an RFC 3339 time") }
                return time
            }
            let failure = try fields.optionalString("error").map(LoginResult.Failure.init(rawValue:))
            guard ok == (failure == nil) else { throw ProtocolError("\"ok\" and \"error\" disagree") }
            var result = LoginResult(principal: try fields.optionalString("principal"), verified: try fields.optionalBool("verified") ?? false,
                                     expires: expires, failure: failure, message: try fields.optionalString("message"))
            if let encoded = try fields.optionalSecret("ccache") {
                guard let credentials = encoded.withUnsafeBytes({ Base64.decode($0) }) else { throw ProtocolError("\"ccache\" is not base64") }
                result.credentials = credentials
            }
            return .result(result)
        case let other:
            throw ProtocolError("unknown message type \"\(other.prefix(40))\"")
        }
    }
}

extension LoginQuestion {
    var encoded: [UInt8] {
        var writer = JSONWriter()
        switch self {
        case .password(let prompt):
            writer.string("kind", "password")
            writer.string("prompt", prompt)
        case .otp(let challenge):
            writer.string("kind", "otp")
            if let service = challenge.service { writer.string("service", service) }
            writer.raw("tokens", JSONWriter.array(challenge.tokens.map { token in
                var tokenWriter = JSONWriter()
                tokenWriter.raw("flags", JSONWriter.array(WireNames.otpFlags.filter { token.flags.contains($0.flag) }.map { JSONWriter.string($0.name) }))
                if let vendor = token.vendor { tokenWriter.string("vendor", vendor) }
                if let challenge = token.challenge { tokenWriter.string("challenge", challenge) }
                if let length = token.length { tokenWriter.int("length", length) }
                if let format = token.format { tokenWriter.string("format", WireNames.formats.first { $0.format == format }!.name) }
                if let tokenID = token.tokenID { tokenWriter.string("tokenID", tokenID) }
                if let algorithmID = token.algorithmID { tokenWriter.string("algID", algorithmID) }
                return tokenWriter.object()
            }))
        case .pkinit(let identities):
            writer.string("kind", "pkinit")
            writer.raw("identities", JSONWriter.array(identities.map { identity in
                var identityWriter = JSONWriter()
                identityWriter.string("identity", identity.identity)
                identityWriter.raw("flags", JSONWriter.array(WireNames.pkinitFlags.filter { identity.flags.contains($0.flag) }.map { JSONWriter.string($0.name) }))
                return identityWriter.object()
            }))
        case .newPassword(let prompt):
            writer.string("kind", "new-password")
            writer.string("prompt", prompt)
        case .newPasswordAgain(let prompt):
            writer.string("kind", "new-password-again")
            writer.string("prompt", prompt)
        case .text(let prompt, let hidden):
            writer.string("kind", "text")
            writer.string("prompt", prompt)
            writer.bool("hidden", hidden)
        case .raw(let name, let challenge):
            writer.string("kind", "raw")
            writer.string("question", name)
            writer.string("challenge", challenge)
        }
        return writer.object()
    }

    init(json: JSONValue) throws(ProtocolError) {
        let fields = Fields(json)
        switch try fields.string("kind") {
        case "password": self = .password(prompt: try fields.optionalString("prompt") ?? "")
        case "new-password": self = .newPassword(prompt: try fields.optionalString("prompt") ?? "")
        case "new-password-again": self = .newPasswordAgain(prompt: try fields.optionalString("prompt") ?? "")
        case "text": self = .text(prompt: try fields.optionalString("prompt") ?? "", hidden: try fields.optionalBool("hidden") ?? true)
        case "raw": self = .raw(name: try fields.string("question"), challenge: try fields.optionalString("challenge") ?? "")
        case "otp":
            guard case .array(let items)? = json["tokens"] else { throw ProtocolError("\"tokens\" must be an array") }
            let tokens = try items.map { item throws(ProtocolError) -> OTPToken in
                let token = Fields(item)
                var flags = OTPToken.Flags()
                for name in try token.stringArray("flags") {
                    if let known = WireNames.otpFlags.first(where: { $0.name == name }) { flags.insert(known.flag) }
                }
                let format = try token.optionalString("format").flatMap { name in WireNames.formats.first { $0.name == name }?.format }
                return OTPToken(flags: flags, vendor: try token.optionalString("vendor"), challenge: try token.optionalString("challenge"),
                                length: try token.optionalInt("length"), format: format, tokenID: try token.optionalString("tokenID"),
                                algorithmID: try token.optionalString("algID"))
            }
            self = .otp(OTPChallenge(service: try fields.optionalString("service"), tokens: tokens))
        case "pkinit":
            guard case .array(let items)? = json["identities"] else { throw ProtocolError("\"identities\" must be an array") }
            self = .pkinit(try items.map { item throws(ProtocolError) -> PKINITIdentity in
                let identity = Fields(item)
                var flags = PKINITIdentity.Flags()
                for name in try identity.stringArray("flags") {
                    if let known = WireNames.pkinitFlags.first(where: { $0.name == name }) { flags.insert(known.flag) }
                }
                return PKINITIdentity(identity: try identity.string("identity"), flags: flags)
            })
        case let other:
            throw ProtocolError("unknown question kind \"\(other.prefix(40))\"")
        }
    }
}

extension LoginAnswers {
    /// Decodes an `answers` object; secrets go straight into ``Secret``s.
    public init(json: JSONValue) throws(ProtocolError) {
        guard case .object = json else { throw ProtocolError("\"answers\" must be an object") }
        let fields = Fields(json)
        self.init()
        password = try fields.optionalSecret("password")
        newPassword = try fields.optionalSecret("new-password")
        newPasswordAgain = try fields.optionalSecret("new-password-again")
        if let otp = json["otp"] {
            guard case .object = otp else { throw ProtocolError("\"otp\" must be an object") }
            let otpFields = Fields(otp)
            self.otp = OTPAnswer(token: try otpFields.optionalInt("token") ?? 0, value: try otpFields.optionalSecret("value"), pin: try otpFields.optionalSecret("pin"))
        }
        if let pkinit = json["pkinit"] {
            guard case .object(let members) = pkinit else { throw ProtocolError("\"pkinit\" must be an object of identity → PIN") }
            for (identity, value) in members {
                guard case .string(let pin) = value else { throw ProtocolError("the PIN for an identity must be a string") }
                self.pkinit[identity] = pin.asSecret
            }
        }
        if let text = json["text"] {
            guard case .array(let items) = text else { throw ProtocolError("\"text\" must be an array of strings") }
            self.text = try items.map { item throws(ProtocolError) in
                guard case .string(let value) = item else { throw ProtocolError("\"text\" must be an array of strings") }
                return value.asSecret
            }
        }
        if let raw = json["raw"] {
            guard case .object(let members) = raw else { throw ProtocolError("\"raw\" must be an object of question → answer") }
            for (name, value) in members {
                guard case .string(let answer) = value else { throw ProtocolError("a raw answer must be a string") }
                self.raw[name] = answer.asSecret
            }
        }
    }

    /// The answers as a JSON object (client side); carries secrets.
    public var encoded: [UInt8] {
        var writer = JSONWriter()
        if let password { writer.secret("password", password) }
        if let otp {
            var otpWriter = JSONWriter()
            otpWriter.int("token", otp.token)
            if let value = otp.value { otpWriter.secret("value", value) }
            if let pin = otp.pin { otpWriter.secret("pin", pin) }
            writer.raw("otp", otpWriter.object())
        }
        if !pkinit.isEmpty {
            var pinWriter = JSONWriter()
            for (identity, pin) in pkinit.sorted(by: { $0.key < $1.key }) { pinWriter.secret(identity, pin) }
            writer.raw("pkinit", pinWriter.object())
        }
        if let newPassword { writer.secret("new-password", newPassword) }
        if let newPasswordAgain { writer.secret("new-password-again", newPasswordAgain) }
        if !text.isEmpty {
            writer.raw("text", JSONWriter.array(text.map { secret in
                var bytes: [UInt8] = []
                secret.withUnsafeBytes { JSONWriter.appendString($0, to: &bytes) }
                return bytes
            }))
        }
        if !raw.isEmpty {
            var rawWriter = JSONWriter()
            for (name, answer) in raw.sorted(by: { $0.key < $1.key }) { rawWriter.secret(name, answer) }
            writer.raw("raw", rawWriter.object())
        }
        return writer.object()
    }
}

/// The protocol's names for flags and formats.
enum WireNames {
    static let otpFlags: [(name: String, flag: OTPToken.Flags)] = [
        ("collect-token", .collectToken), ("collect-pin", .collectPIN), ("next-otp", .nextOTP), ("separate-pin", .separatePIN),
    ]
    static let pkinitFlags: [(name: String, flag: PKINITIdentity.Flags)] = [
        ("pin-count-low", .pinCountLow), ("pin-final-try", .pinFinalTry), ("pin-locked", .pinLocked),
    ]
    static let formats: [(name: String, format: OTPToken.Format)] = [
        ("decimal", .decimal), ("hexadecimal", .hexadecimal), ("alphanumeric", .alphanumeric),
    ]
}

/// Typed access to an object's members with errors that name the field.
struct Fields {
    let json: JSONValue
    init(_ json: JSONValue) { self.json = json }

    func string(_ key: String) throws(ProtocolError) -> String {
        guard let value = try optionalString(key) else { throw ProtocolError("missing \"\(key)\"") }
        return value
    }

    func optionalString(_ key: String) throws(ProtocolError) -> String? {
        switch json[key] {
        case nil, .null?: return nil
        case .string(let value)?: return value.text
        case let other?: throw ProtocolError("\"\(key)\" must be a string, not \(other.typeName)")
        }
    }

    func optionalSecret(_ key: String) throws(ProtocolError) -> Secret? {
        switch json[key] {
        case nil, .null?: return nil
        case .string(let value)?: return value.asSecret
        case let other?: throw ProtocolError("\"\(key)\" must be a string, not \(other.typeName)")
        }
    }

    func int(_ key: String) throws(ProtocolError) -> Int {
        guard let value = try optionalInt(key) else { throw ProtocolError("missing \"\(key)\"") }
        return value
    }

    func optionalInt(_ key: String) throws(ProtocolError) -> Int? {
        switch json[key] {
        case nil, .null?: return nil
        case .number(let value)?:
            guard value == value.rounded(), abs(value) < 1e15 else { throw ProtocolError("\"\(key)\" must be an integer") }
            return Int(value)
        case let other?: throw ProtocolError("\"\(key)\" must be a number, not \(other.typeName)")
        }
    }

    func bool(_ key: String) throws(ProtocolError) -> Bool {
        guard let value = try optionalBool(key) else { throw ProtocolError("missing \"\(key)\"") }
        return value
    }

    func optionalBool(_ key: String) throws(ProtocolError) -> Bool? {
        switch json[key] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        case let other?: throw ProtocolError("\"\(key)\" must be true or false, not \(other.typeName)")
        }
    }

    func stringArray(_ key: String) throws(ProtocolError) -> [String] {
        switch json[key] {
        case nil, .null?: return []
        case .array(let items)?:
            return try items.map { item throws(ProtocolError) in
                guard case .string(let value) = item else { throw ProtocolError("\"\(key)\" must hold strings") }
                return value.text
            }
        case let other?: throw ProtocolError("\"\(key)\" must be an array, not \(other.typeName)")
        }
    }
}

/// Standard base64 (RFC 4648) between secrets: the credential cache of a result.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: UnsafeRawBufferPointer) -> Secret {
        var out = [UInt8](repeating: 0, count: (bytes.count + 2) / 3 * 4)
        defer { out.withUnsafeMutableBytes { Secret.wipe($0) } }
        var index = 0
        for start in stride(from: 0, to: bytes.count, by: 3) {
            let count = min(3, bytes.count - start)
            var value = UInt32(bytes[start]) << 16
            if count > 1 { value |= UInt32(bytes[start + 1]) << 8 }
            if count > 2 { value |= UInt32(bytes[start + 2]) }
            for digit in 0..<4 {
                out[index + digit] = digit <= count ? alphabet[Int(value >> UInt32(18 - 6 * digit) & 0x3f)] : UInt8(ascii: "=")
            }
            index += 4
        }
        return Secret(copying: out)
    }

    static func decode(_ text: UnsafeRawBufferPointer) -> Secret? {
        guard text.count % 4 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 4 * 3)
        defer { out.withUnsafeMutableBytes { Secret.wipe($0) } }
        for start in stride(from: 0, to: text.count, by: 4) {
            var value: UInt32 = 0
            var padding = 0
            for offset in 0..<4 {
                let character = text[start + offset]
                let isLast = start + 4 == text.count
                if character == UInt8(ascii: "="), isLast, offset >= 2, offset == 3 || text[start + 3] == UInt8(ascii: "=") {
                    padding += 1
                    value <<= 6
                    continue
                }
                guard padding == 0, let digit = alphabet.firstIndex(of: character) else { return nil }
                value = value << 6 | UInt32(digit)
            }
            out.append(UInt8(value >> 16 & 0xff))
            if padding < 2 { out.append(UInt8(value >> 8 & 0xff)) }
            if padding < 1 { out.append(UInt8(value & 0xff)) }
        }
        return Secret(copying: out)
    }
}
