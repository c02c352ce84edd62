public import KerberosSecrets
public import SystemPackage

/// Reads standard input in chunks into memory that is wiped as soon as it has been consumed.
public final class InputReader {
    private let descriptor: FileDescriptor
    private let chunk: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0
    private var atEnd = false

    /// Why input could not be read.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// More than `limit` bytes came before a terminator.
        case tooLong(limit: Int)
        /// A line of text is not valid UTF-8.
        case notUTF8
        /// `read(2)` failed (interrupted reads are retried).
        case ioError(Errno)

        /// A short explanation for the diagnostic line, such as `input is not UTF-8`.
        public var description: String {
            switch self {
            case .tooLong(let limit): "input longer than \(limit) bytes"
            case .notUTF8: "input is not UTF-8"
            case .ioError(let errno): "cannot read input: \(errno)"
            }
        }
    }

    /// Reads from `descriptor`, which stays open; the 4 KiB read buffer is wiped on `deinit`.
    public init(_ descriptor: FileDescriptor) {
        self.descriptor = descriptor
        self.chunk = .allocate(byteCount: 4096, alignment: 1)
    }

    deinit {
        Secret.wipe(chunk)
        chunk.deallocate()
    }

    /// Reads up to (not including) the first byte in `terminators`, or to end of input.
    ///
    /// Returns nil at end of input with nothing read. More than `limit` bytes before a terminator throws.
    public func readSecret(until terminators: [UInt8], limit: Int) throws(Failure) -> Secret? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: limit, alignment: 1)
        defer {
            Secret.wipe(buffer)
            buffer.deallocate()
        }
        var length = 0
        var sawAny = false
        while let byte = try nextByte() {
            sawAny = true
            if terminators.contains(byte) { return Secret(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<length])) }
            guard length < limit else { throw .tooLong(limit: limit) }
            buffer[length] = byte
            length += 1
        }
        return sawAny ? Secret(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<length])) : nil
    }

    /// Reads one line of non-secret text (without its newline or a trailing CR).
    public func readLine(limit: Int) throws(Failure) -> String? {
        guard let secret = try readSecret(until: [UInt8(ascii: "\n")], limit: limit) else { return nil }
        var bytes = secret.withUnsafeBytes { Array($0) }
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8 }
        return text
    }

    /// Reads one line as raw bytes in a ``Secret`` (for JSON lines carrying secrets).
    public func readLineBytes(limit: Int) throws(Failure) -> Secret? {
        try readSecret(until: [UInt8(ascii: "\n")], limit: limit)
    }

    private func nextByte() throws(Failure) -> UInt8? {
        if start == end {
            if atEnd { return nil }
            Secret.wipe(UnsafeMutableRawBufferPointer(rebasing: chunk[0..<end]))
            let count: Int
            do { count = try descriptor.read(into: chunk, retryOnInterrupt: true) } catch { throw .ioError(error as? Errno ?? .ioError) }
            if count == 0 {
                atEnd = true
                return nil
            }
            start = 0
            end = count
        }
        let byte = chunk[start]
        chunk[start] = 0
        start += 1
        return byte
    }
}
