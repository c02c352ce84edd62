import KerberosSecrets
import LoginProtocol
import LoginService
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `--conversation` mode: the JSON-lines protocol on stdin/stdout, as `docs/protocol.md` specifies.
final class ConversationAnswers: AnswerSource {
    private let reader: InputReader
    private let writer: LineWriter
    private(set) var lastError: String?

    /// The longest line accepted (the protocol's limit).
    static let maximumLineLength = 64 * 1024

    init(reader: InputReader, output: FileDescriptor) {
        self.reader = reader
        self.writer = LineWriter(descriptor: output)
    }

    /// Reads the login request; a malformed one is answered with an `invalid-request` result.
    func readLogin() throws -> LoginConversation? {
        guard let line = try reader.readLineBytes(limit: Self.maximumLineLength) else { return nil }
        do {
            switch try line.withUnsafeBytes({ bytes in Result { () throws(ProtocolError) in try ClientMessage.decode(bytes) } }).get() {
            case .login(let request):
                return LoginConversation(principal: request.principal, password: request.password, service: request.service)
            case .answers:
                lastError = "the first message must be a login request"
            }
        } catch {
            lastError = "invalid request: \(error)"
        }
        send(.result(.failed(.invalidRequest, lastError!)))
        return nil
    }

    func answers(to questions: [LoginQuestion], round: Int) -> LoginAnswers? {
        send(.questions(id: round, questions))
        while true {
            let line: Secret?
            do { line = try reader.readLineBytes(limit: Self.maximumLineLength) } catch {
                return nil
            }
            guard let line else { return nil }
            let message = line.withUnsafeBytes { bytes in Result { () throws(ProtocolError) in try ClientMessage.decode(bytes) } }
            switch message {
            case .success(.answers(let id, let answers)) where id == round:
                return answers
            case .success(.answers(let id, _)):
                send(.info("ignored answers for round \(id); round \(round) is awaited"))
            case .success(.login):
                send(.info("ignored a second login request"))
            case .failure(let error):
                send(.info("ignored an invalid message: \(error)"))
            }
        }
    }

    func inform(_ message: String) { send(.info(message)) }

    func finish(_ result: LoginResult) { send(.result(result)) }

    private func send(_ message: ServerMessage) {
        writer.write(message.encodedLine)
    }
}

/// Relays a conversation through `krb5-verifyd`'s JSON-lines socket.
final class DaemonBackend: LoginBackend {
    private let fd: Int32
    private let reader: InputReader

    /// Connects to the daemon's conversation socket, and refuses it unless the process listening on it runs as
    /// one of `allowedUIDs` (`SO_PEERCRED`): a socket another local user made could otherwise answer "ok".
    init(socketPath: String, allowedUIDs: Set<UInt32>) throws {
        guard let address = UnixSocketAddress(path: socketPath) else { throw DaemonUnavailable(reason: "socket path too long: \(socketPath)") }
        let fd: Int32
        switch address.connectedStream() {
        case .success(let connected): fd = connected
        case .failure(let error): throw DaemonUnavailable(reason: "cannot connect to krb5-verifyd at \(socketPath): \(String(cString: strerror(error.errno)))")
        }
        // Glibc's `struct ucred` (pid_t pid, uid_t uid, gid_t gid) needs _GNU_SOURCE; the same layout as a tuple.
        var credentials: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var length = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw DaemonUnavailable(reason: "cannot tell who listens on \(socketPath): \(reason)")
        }
        guard allowedUIDs.contains(credentials.uid) else {
            close(fd)
            throw DaemonUnavailable(reason: "refusing \(socketPath): it is served by uid \(credentials.uid), not by root or an allowed --daemon-uid")
        }
        self.fd = fd
        reader = InputReader(FileDescriptor(rawValue: fd))
    }

    deinit { close(fd) }

    func start(_ conversation: LoginConversation) -> LoginStep {
        let answers = conversation.initialAnswers
        send(.login(LoginRequest(principal: conversation.principal, password: answers.password, service: conversation.service)))
        return receive(conversation)
    }

    func answer(_ conversation: LoginConversation, _ answers: LoginAnswers, round: Int) -> LoginStep {
        send(.answers(id: round, answers))
        return receive(conversation)
    }

    private func send(_ message: ClientMessage) {
        var line = message.encodedLine
        LineWriter(descriptor: FileDescriptor(rawValue: fd)).write(line)
        line.withUnsafeMutableBytes { Secret.wipe($0) }
    }

    private func receive(_ conversation: LoginConversation) -> LoginStep {
        var info: [String] = []
        while true {
            let line: Secret?
            do { line = try reader.readLineBytes(limit: ConversationAnswers.maximumLineLength) } catch {
                return .finished(.failed(.internal, "reading from krb5-verifyd: \(error)", principal: conversation.principal), info: info)
            }
            guard let line else {
                return .finished(.failed(.internal, "krb5-verifyd closed the connection", principal: conversation.principal), info: info)
            }
            let bytes = line.withUnsafeBytes { Array($0) }
            switch Result(catching: { () throws(ProtocolError) in try ServerMessage.decode(bytes) }) {
            case .success(.info(let message)): info.append(message)
            case .success(.questions(let id, let questions)): return .questions(id: id, questions, info: info)
            case .success(.result(let result)): return .finished(result, info: info)
            case .failure(let error):
                return .finished(.failed(.internal, "krb5-verifyd sent an invalid message: \(error)", principal: conversation.principal), info: info)
            }
        }
    }
}

/// The daemon could not be reached.
struct DaemonUnavailable: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
