import Hummingbird
import KerberosEngine

/// The app's pages: plain HTML, every interpolated value escaped.
enum Pages {
    static func html(_ status: HTTPResponse.Status, _ body: String) -> Response {
        Response(status: status, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func text(_ status: HTTPResponse.Status, _ text: String, headers extra: HTTPFields = [:]) -> Response {
        var headers = extra
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text + "\n")))
    }

    static func page(_ title: String, _ content: String) -> String {
        """
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><title>\(escape(title))</title></head>
        <body><h1>\(escape(title))</h1>
        \(content)
        </body></html>
        """
    }

    static func loginForm(error: String?) -> String {
        page("Sign in", """
            \(error.map { "<p id=\"error\">\(escape($0))</p>" } ?? "")
            <form method="post" action="/login">
            <label>User name <input id="username" name="username" autocomplete="username"></label>
            <label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
            <button id="submit" type="submit">Sign in</button>
            </form>
            """)
    }

    /// The second step: the KDC's OTP question, as the library decoded it.
    static func otpForm(id: String, user: String, challenge: OTPChallenge, error: String?) -> String {
        let token = challenge.tokens.first { $0.flags.contains(.collectToken) } ?? challenge.tokens.first
        var hints: [String] = []
        if let vendor = token?.vendor { hints.append("token: \(vendor)") }
        if let length = token?.length { hints.append("\(length) characters") }
        switch token?.format {
        case .decimal?: hints.append("digits")
        case .hexadecimal?: hints.append("hexadecimal")
        case .alphanumeric?: hints.append("letters and digits")
        case nil: break
        }
        let pin = token?.flags.contains(.collectPIN) == true
            ? "<label>PIN <input id=\"pin\" name=\"pin\" type=\"password\" autocomplete=\"off\"></label>" : ""
        return page("One-time password", """
            \(error.map { "<p id=\"error\">\(escape($0))</p>" } ?? "")
            <p id="question">\(escape(user)): enter the one-time password\(challenge.service.map { " for \(escape($0))" } ?? "")\(hints.isEmpty ? "" : " (\(escape(hints.joined(separator: ", "))))").</p>
            \(token?.challenge.map { "<p id=\"challenge\">Challenge: \(escape($0))</p>" } ?? "")
            <form method="post" action="/login/otp">
            <input type="hidden" name="pending" value="\(escape(id))">
            <label>One-time password <input id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code"></label>
            \(pin)
            <button id="submit" type="submit">Continue</button>
            </form>
            """)
    }

    static func signedIn(_ principal: String) -> String {
        page("Signed in", """
            <p>Signed in as <span id="principal">\(escape(principal))</span>.</p>
            <form method="post" action="/logout"><button id="logout" type="submit">Sign out</button></form>
            """)
    }

    /// What the form tells the person: no more about the account than "wrong" or "try later".
    static func explanation(for error: KerberosError) -> String {
        switch error.reason {
        case .kdcUnreachable, .clockSkew: "The sign-in service is unavailable; try again later."
        case .passwordExpired: "Your password has expired; change it, then sign in."
        default: "The user name or password is wrong."
        }
    }

    static func status(for error: KerberosError) -> HTTPResponse.Status {
        switch error.reason {
        case .kdcUnreachable, .clockSkew: .serviceUnavailable
        default: .unauthorized
        }
    }

    static func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
