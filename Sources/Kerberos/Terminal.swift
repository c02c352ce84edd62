import CKrb5
package import SystemPackage
#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#endif

/// Prompts on the controlling terminal, `/dev/tty`, for ``Prompter/terminal`` and the package's helper.
///
/// Reads and writes go through swift-system's `FileDescriptor`, which retries a call that a signal
/// interrupts (`EINTR`): only end of input or a real I/O error ends a prompt.
package enum Terminal {
    /// Asks every prompt of `round`, after its name and banner.
    static func ask(_ round: PromptRound) throws -> [Secret] {
        try withTerminal { terminal in
            for header in [round.name, round.banner].compactMap({ $0 }) where !header.isEmpty {
                write(terminal, header + "\n")
            }
            return try round.prompts.map { prompt in
                write(terminal, prompt.text + ": ")
                return try readLine(terminal, hidden: prompt.hidden)
            }
        }
    }

    /// Shows `prompt` and reads one line, with echo off when `hidden`.
    package static func ask(_ prompt: String, hidden: Bool) throws -> Secret {
        try withTerminal { terminal in
            write(terminal, prompt)
            return try readLine(terminal, hidden: hidden)
        }
    }

    /// Writes a line to the terminal, if there is one.
    package static func say(_ text: String) {
        _ = try? withTerminal { terminal in write(terminal, text + "\n") }
    }

    /// Opens `/dev/tty` for `body` and closes it afterwards.
    private static func withTerminal<R>(_ body: (FileDescriptor) throws -> R) throws -> R {
        let terminal: FileDescriptor
        do {
            terminal = try FileDescriptor.open("/dev/tty", .readWrite, options: [.closeOnExec, FileDescriptor.OpenOptions(rawValue: O_NOCTTY)])
        } catch {
            throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "No terminal to prompt on", reason: .cancelled)
        }
        return try terminal.closeAfter { try body(terminal) }
    }

    /// The longest reply accepted, in bytes.
    static let capacity = 1024

    /// Reads one line with echo off when `hidden` (and `source` is a terminal); the bytes go straight into a
    /// ``Secret``. A signal during the read does not end it; end of input or an I/O error does.
    package static func readLine(_ source: FileDescriptor, hidden: Bool) throws -> Secret {
        var saved = termios()
        let isTerminal = tcgetattr(source.rawValue, &saved) == 0
        if hidden && isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            quiet.c_lflag |= tcflag_t(ECHONL)
            tcsetattr(source.rawValue, TCSAFLUSH, &quiet)
        }
        defer { if hidden && isTerminal { tcsetattr(source.rawValue, TCSAFLUSH, &saved) } }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
        defer {
            Secret.wipe(buffer)
            buffer.deallocate()
        }
        var length = 0
        var byte: UInt8 = 0
        while true {
            let count: Int
            do {
                count = try withUnsafeMutableBytes(of: &byte) { try source.read(into: $0, retryOnInterrupt: true) }
            } catch let error as Errno {
                throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "Cannot read the reply: \(error)", reason: .cancelled)
            }
            if count == 0 {
                throw KerberosError(code: Int32(KRB5_LIBOS_PWDINTR), message: "Input ended at the prompt", reason: .cancelled)
            }
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") { break }
            guard length < capacity else {
                throw KerberosError(code: Int32(KRB5_LIBOS_CANTREADPWD), message: "Reply longer than \(capacity) bytes", reason: .invalidRequest)
            }
            buffer[length] = byte
            length += 1
        }
        byte = 0
        return Secret(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
    }

    private static func write(_ terminal: FileDescriptor, _ text: String) {
        _ = try? terminal.writeAll(text.utf8)
    }
}
