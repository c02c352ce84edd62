public import Logging

/// Wraps the daemon's log handler so that no logged field can hold a control character: a principal
/// containing a newline (`"a\ninfo forged line"`, easy to send as JSON's `\n` or in a saslauthd field)
/// otherwise writes a forged line into the log. Control characters (C0, DEL and C1) become `\n`, `\t`,
/// `\r` or `\u{XX}`, and a backslash becomes `\\`, in the message and in every metadata value.
public struct EscapingLogHandler: LogHandler {
    /// The handler that writes the escaped events.
    public var base: any LogHandler

    /// Escapes every event before `base` sees it.
    public init(wrapping base: any LogHandler) {
        self.base = base
    }

    /// The level below which events are dropped (`base`'s).
    public var logLevel: Logger.Level {
        get { base.logLevel }
        set { base.logLevel = newValue }
    }

    /// The handler's own metadata (`base`'s), escaped as it is set.
    public var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue.mapValues(Self.escape) }
    }

    /// One metadata value of the handler's own, escaped as it is set.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue.map(Self.escape) }
    }

    /// Escapes the message and the metadata, then hands the event to `base`.
    public func log(event: LogEvent) {
        var event = event
        event.message = Logger.Message(stringLiteral: Self.escape(event.message.description))
        event.metadata = event.metadata?.mapValues(Self.escape)
        base.log(event: event)
    }

    /// `value` with every string in it escaped.
    static func escape(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(escape(text))
        case .stringConvertible(let item): .string(escape(item.description))
        case .array(let items): .array(items.map(escape))
        case .dictionary(let items): .dictionary(items.mapValues(escape))
        }
    }

    /// `text` with control characters and backslashes escaped; unchanged (and not copied) when it has none.
    static func escape(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            case "\r": escaped += "\\r"
            case "\t": escaped += "\\t"
            case _ where needsEscape(scalar):
                let hex = String(scalar.value, radix: 16)
                escaped += "\\u{" + String(repeating: "0", count: max(0, 2 - hex.count)) + hex + "}"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar == "\\"
            || scalar.properties.generalCategory == .lineSeparator || scalar.properties.generalCategory == .paragraphSeparator
    }
}
