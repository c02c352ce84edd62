#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in time as Kerberos keeps it: whole seconds since 1970-01-01 UTC (RFC 4120's KerberosTime, which
/// krb5 stores as `krb5_timestamp`).
///
/// The API's times (ticket lifetimes, password expiry, keytab timestamps, the `expires` of a login result) are
/// this type rather than Foundation's `Date`, so that neither the library nor krb5-login links Foundation: a
/// process that starts for one login pays for every shared library it loads. For a `Date`, write
/// `Date(timeIntervalSince1970: Double(time.secondsSince1970))`.
public struct KerberosTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Seconds since 1970-01-01 00:00:00 UTC, leap seconds not counted (POSIX time).
    public var secondsSince1970: Int64

    public init(secondsSince1970: Int64) {
        self.secondsSince1970 = secondsSince1970
    }

    /// The system's wall clock (`clock_gettime(CLOCK_REALTIME)`), to the second.
    public static var now: KerberosTime {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return KerberosTime(secondsSince1970: Int64(spec.tv_sec))
    }

    public static func < (lhs: KerberosTime, rhs: KerberosTime) -> Bool {
        lhs.secondsSince1970 < rhs.secondsSince1970
    }

    /// The time `duration` later (whole seconds; a fraction is dropped).
    public static func + (time: KerberosTime, duration: Duration) -> KerberosTime {
        KerberosTime(secondsSince1970: time.secondsSince1970 + duration.components.seconds)
    }

    /// The time `duration` earlier (whole seconds; a fraction is dropped).
    public static func - (time: KerberosTime, duration: Duration) -> KerberosTime {
        KerberosTime(secondsSince1970: time.secondsSince1970 - duration.components.seconds)
    }

    /// How long from `earlier` to `later` (negative when `later` is the earlier one).
    public static func - (later: KerberosTime, earlier: KerberosTime) -> Duration {
        .seconds(later.secondsSince1970 - earlier.secondsSince1970)
    }

    /// RFC 3339 in UTC, `2026-12-07T13:19:32Z`: the form of the JSON-lines protocol's `expires`.
    public var description: String {
        var seconds = time_t(secondsSince1970)
        var fields = tm()
        guard gmtime_r(&seconds, &fields) != nil else { return "\(secondsSince1970)s after 1970" }
        func padded(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(padded(fields.tm_year + 1900, 4))-\(padded(fields.tm_mon + 1, 2))-\(padded(fields.tm_mday, 2))"
            + "T\(padded(fields.tm_hour, 2)):\(padded(fields.tm_min, 2)):\(padded(fields.tm_sec, 2))Z"
    }

    /// Reads an RFC 3339 time with seconds: `2026-12-07T13:19:32Z`, with a lower-case `t` or `z`, a fraction of a
    /// second (dropped) or a `+01:00` style offset. Nil for anything else, or for a field out of its range.
    public init?(rfc3339 text: String) {
        var bytes = Array(text.utf8)[...]
        func number(_ count: Int) -> Int64? {
            guard bytes.count >= count else { return nil }
            var value: Int64 = 0
            for byte in bytes.prefix(count) {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
                value = value * 10 + Int64(byte - UInt8(ascii: "0"))
            }
            bytes.removeFirst(count)
            return value
        }
        func expect(_ characters: String) -> Bool {
            guard let byte = bytes.first, characters.utf8.contains(byte) else { return false }
            bytes.removeFirst()
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2), expect("Tt"),
              let hour = number(2), expect(":"), let minute = number(2), expect(":"), let second = number(2),
              (1...12).contains(month), (1...Self.days(inMonth: month, of: year)).contains(day),
              hour < 24, minute < 60, second < 61
        else { return nil }
        if expect(".") {
            let digits = bytes.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }.count
            guard digits > 0 else { return nil }
            bytes.removeFirst(digits)
        }
        var offset: Int64 = 0
        if !expect("Zz") {
            guard let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") else { return nil }
            bytes.removeFirst()
            guard let hours = number(2), expect(":"), let minutes = number(2), hours < 24, minutes < 60 else { return nil }
            offset = (hours * 3600 + minutes * 60) * (sign == UInt8(ascii: "-") ? -1 : 1)
        }
        guard bytes.isEmpty else { return nil }
        let days = Self.daysSince1970(year: year, month: month, day: day)
        self.init(secondsSince1970: days * 86_400 + hour * 3600 + minute * 60 + second - offset)
    }

    private static func days(inMonth month: Int64, of year: Int64) -> Int64 {
        switch month {
        case 2: return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's days_from_civil).
    private static func daysSince1970(year: Int64, month: Int64, day: Int64) -> Int64 {
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = (shiftedYear >= 0 ? shiftedYear : shiftedYear - 399) / 400
        let yearOfEra = shiftedYear - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
