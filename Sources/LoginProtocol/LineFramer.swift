public import KerberosSecrets

/// Splits a byte stream into lines of at most `maximumLength` bytes, in wiped memory.
///
/// A line that grows past the limit is reported once as ``Line/tooLong`` and its bytes are dropped up to
/// the next newline, so one bad line never wedges the stream.
public struct LineFramer: ~Copyable {
    /// One framed line.
    public enum Line {
        /// A complete line without its newline (and without a trailing CR); wipe it after use.
        case line(Secret)
        /// A line longer than the limit was discarded.
        case tooLong
    }

    /// The longest line accepted, in bytes, not counting the newline.
    public let maximumLength: Int
    private var buffer: SecureBuffer
    private var discarding = false

    /// A framer for lines of up to `maximumLength` bytes (64 KiB by default).
    public init(maximumLength: Int = 64 * 1024) {
        self.maximumLength = maximumLength
        self.buffer = SecureBuffer(capacity: maximumLength + 1)
    }

    /// Feeds received bytes and returns the lines they complete (the daemon's path: no generic code).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [Line] {
        var lines: [Line] = []
        for byte in bytes { take(byte, into: &lines) }
        return lines
    }

    /// Feeds bytes from any collection and returns the lines they complete.
    public mutating func feed(_ bytes: some Collection<UInt8>) -> [Line] {
        var lines: [Line] = []
        for byte in bytes { take(byte, into: &lines) }
        return lines
    }

    private mutating func take(_ byte: UInt8, into lines: inout [Line]) {
        if byte == UInt8(ascii: "\n") {
            if discarding {
                discarding = false
            } else {
                var end = buffer.count
                if end > 0 && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                lines.append(.line(buffer.secret(0..<end)))
            }
            buffer.reset()
            return
        }
        if discarding { return }
        if buffer.count == maximumLength {
            buffer.reset()
            discarding = true
            lines.append(.tooLong)
            return
        }
        buffer.append(byte: byte)
    }

    /// Bytes of an unfinished line are waiting.
    public var hasPartialLine: Bool { buffer.count > 0 || discarding }
}

extension SecureBuffer {
    /// Wipes the contents and empties the buffer.
    mutating func reset() {
        wipeContents()
    }
}
