import Glibc

/// A program the tests start: `posix_spawn` with every descriptor but the three standard ones closed in the
/// child, and `waitpid` on its own pid to reap it.
///
/// Foundation's `Process` on Linux reaps through a shared SIGCHLD source; when suites start many children at
/// once it can miss an exit, leaving a zombie and a `waitUntilExit()` that never returns (seen with
/// `realm.sh replica`). Its pipes are also inherited by children other threads start meanwhile, so a daemon
/// started by one test could hold another test's output pipe open. Neither can happen here.
public final class ChildProcess: @unchecked Sendable {
    /// Where a standard stream of the child goes.
    public enum Stream: Sendable {
        /// `/dev/null`.
        case null
        /// A file, created if needed and appended to.
        case file(String)
        /// One pipe shared by standard output and standard error, read by ``ChildProcess/run(_:environment:input:)``.
        case pipe
    }

    /// The child's process id.
    public let pid: Int32
    /// Read end of the output pipe, or -1.
    private let outputReader: Int32
    /// Written exactly once, by ``wait()``, which callers serialize (`@unchecked Sendable`).
    private var exitStatus: Int32?

    /// Starts `arguments` (looked up in `PATH` by `/usr/bin/env`) with the test process's environment plus
    /// `environment`, standard input from `input` bytes (closed after writing) or `/dev/null`.
    public init(_ arguments: [String], environment: [String: String] = [:], input: [UInt8]? = nil, output: Stream = .null) throws(TestRealmError) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }

        var inputPipe: [Int32] = [-1, -1]
        var outputPipe: [Int32] = [-1, -1]
        if input != nil, Self.pipe2(&inputPipe, O_CLOEXEC) != 0 { throw TestRealmError("pipe: \(String(cString: strerror(errno)))") }
        if case .pipe = output, Self.pipe2(&outputPipe, O_CLOEXEC) != 0 {
            Self.close(inputPipe)
            throw TestRealmError("pipe: \(String(cString: strerror(errno)))")
        }
        if input != nil {
            posix_spawn_file_actions_adddup2(&actions, inputPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        switch output {
        case .null:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        case .file(let path):
            posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        case .pipe:
            posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
            posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 2)
        }
        _ = Self.addCloseFrom(&actions, 3)

        var merged: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let line = String(cString: pointer)
            if let equals = line.firstIndex(of: "=") { merged[String(line[..<equals])] = String(line[line.index(after: equals)...]) }
            entry += 1
        }
        merged.merge(environment) { $1 }

        let argv = (["/usr/bin/env"] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        // The child starts with no signal blocked and every signal at its default action, whatever the calling
        // thread blocks and the test process ignores (SwiftNIO ignores SIGPIPE): sshd, pam_exec and the realm's
        // daemons wait for their own children and rely on the defaults.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigemptyset(&allSignals)
        for signal in 1..<SIGSYS + 1 where signal != SIGKILL && signal != SIGSTOP { sigaddset(&allSignals, signal) }
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child: pid_t = 0
        let spawned = posix_spawn(&child, "/usr/bin/env", &actions, &attributes, argv, envp)
        Self.close([inputPipe[0], outputPipe[1]])
        guard spawned == 0 else {
            Self.close([inputPipe[1], outputPipe[0]])
            throw TestRealmError("cannot run \(arguments.first ?? ""): \(String(cString: strerror(spawned)))")
        }
        pid = child
        outputReader = outputPipe[0]
        if let input {
            // Small inputs only (a password line): the pipe's buffer takes them without a reader.
            input.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = Glibc.write(inputPipe[1], bytes.baseAddress! + offset, bytes.count - offset)
                    if written < 0 { if errno == EINTR { continue }; break }
                    offset += written
                }
            }
            Self.close([inputPipe[1]])
        }
    }

    deinit { Self.close([outputReader]) }

    /// Everything the child wrote to the `.pipe` output, read until every writer has closed it.
    public func readOutput() -> [UInt8] {
        guard outputReader >= 0 else { return [] }
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(outputReader, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            data += buffer[0..<count]
        }
        return data
    }

    /// What the child has written to the `.pipe` output so far, waiting for at least one byte (empty at the end).
    public func readSome() -> [UInt8] {
        guard outputReader >= 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(outputReader, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            return count > 0 ? Array(buffer[0..<count]) : []
        }
    }

    /// Sends `signal` to the child (nothing if it has been reaped).
    public func signal(_ signal: Int32) {
        if exitStatus == nil { Glibc.kill(pid, signal) }
    }

    /// Waits for the child to exit and reaps it: its exit code, or 128 + the signal that ended it.
    @discardableResult
    public func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { exitStatus = -1; return -1 }
        }
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }

    /// SIGTERM, then the exit.
    @discardableResult
    public func terminate() -> Int32 {
        signal(SIGTERM)
        return wait()
    }

    /// Runs a command to its end: its exit status and its standard output and error together.
    public static func run(_ arguments: [String], environment: [String: String] = [:], input: [UInt8]?) throws(TestRealmError) -> (status: Int32, output: String) {
        let child = try ChildProcess(arguments, environment: environment, input: input ?? [], output: .pipe)
        let output = child.readOutput()
        return (child.wait(), String(decoding: output, as: UTF8.self))
    }

    // glibc declares these only under _GNU_SOURCE, which the Glibc module leaves out.
    private static let pipe2 = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pipe2"),
                                             to: (@convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32).self)
    private static let addCloseFrom = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np"),
                                                    to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)

    private static func close(_ descriptors: [Int32]) {
        for descriptor in descriptors where descriptor >= 0 { Glibc.close(descriptor) }
    }
}
