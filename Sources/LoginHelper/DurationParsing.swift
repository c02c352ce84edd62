/// Parses a lifetime as krb5 tools write them: seconds (`3600`) or a number with a unit (`90s`, `30m`, `10h`, `7d`).
public func parseLifetime(_ text: String) -> Duration? {
    let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
    guard let last = text.last else { return nil }
    let (digits, multiplier) = units[last].map { (text.dropLast(), $0) } ?? (Substring(text), 1)
    guard let value = Int64(digits), value >= 0, value <= Int64(Int32.max) / multiplier else { return nil }
    return .seconds(value * multiplier)
}
