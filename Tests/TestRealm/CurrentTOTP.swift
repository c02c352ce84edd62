import Foundation
import TOTP

/// Waits until at least `margin` seconds remain in the current 30-second TOTP step, so a code computed
/// now is still the current one when FreeRADIUS checks it.
public func currentTOTP(secret: String, margin: Double = 4) -> String {
    let now = Date().timeIntervalSince1970
    let left = 30 - now.truncatingRemainder(dividingBy: 30)
    if left < margin { Thread.sleep(forTimeInterval: left + 0.2) }
    return TOTP.code(secret: TOTP.base32Decode(secret), time: UInt64(Date().timeIntervalSince1970))
}
