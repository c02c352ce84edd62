public import Hummingbird
import HummingbirdAuth
import KerberosEngine
import Logging

/// What the app is told on its command line.
public struct AppConfiguration: Sendable {
    /// FAST armor for the logins.
    public enum Armor: String, Sendable {
        /// Anonymous PKINIT: needed for one-time passwords.
        case anonymous
        /// No armor: passwords only.
        case none
    }

    public var host: String
    public var port: Int
    /// The krb5.conf to use; nil: krb5's own.
    public var krb5Config: String?
    /// The keytab that verifies logins; nil: krb5's default keytab.
    public var keytab: String?
    /// The service principal to verify against; nil: any host principal in the keytab.
    public var serverPrincipal: String?
    public var armor: Armor
    /// The realm named in the Basic challenge.
    public var basicRealm: String

    public init(host: String = "127.0.0.1", port: Int = 8080, krb5Config: String? = nil, keytab: String? = nil, serverPrincipal: String? = nil,
                armor: Armor = .anonymous, basicRealm: String = "WebLogin") {
        self.host = host
        self.port = port
        self.krb5Config = krb5Config
        self.keytab = keytab
        self.serverPrincipal = serverPrincipal
        self.armor = armor
        self.basicRealm = basicRealm
    }
}

/// Someone the app has verified.
public struct User: Sendable {
    /// The principal the KDC named in the ticket.
    public let principal: String
}

/// Each request's context: the user, once authenticated, and the session (the principal of a form login).
public struct AppRequestContext: AuthRequestContext, SessionRequestContext, RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var identity: User?
    public let sessions: SessionContext<String>

    public init(source: Source) {
        coreContext = .init(source: source)
        identity = nil
        sessions = .init()
    }
}

/// Runs the app until SIGTERM or SIGINT, then stops the library's threads.
public func runApplication(_ configuration: AppConfiguration) async throws {
    let logins = try KerberosLogin(configuration: configuration)
    do {
        try await buildApplication(configuration, logins: logins).runService()
    } catch {
        await logins.shutdown()
        throw error
    }
    await logins.shutdown()
}

/// The app: its routes over `logins`.
///
/// - `GET /api/whoami` with `Authorization: Basic`: the principal, or 401 with the Basic challenge.
/// - `GET /login`, `POST /login`: the login form; when the KDC asks for a one-time password, the form's second step.
/// - `POST /login/otp`: the one-time password, for the login the first step began.
/// - `GET /`: the signed-in page (a session), else a redirect to the form.
/// - `POST /logout`: ends the session.
public func buildApplication(_ configuration: AppConfiguration, logins: KerberosLogin) -> some ApplicationProtocol {
    let logger = Logger(label: "web-login")
    let pending = PendingLogins()
    let router = Router(context: AppRequestContext.self)
    router.add(middleware: SessionMiddleware(storage: MemoryPersistDriver()))

    router.group("api")
        .add(middleware: KerberosBasicAuthenticator(logins: logins))
        .get("whoami") { _, context -> Response in
            guard let user = context.identity else {
                return Pages.text(.unauthorized, "authentication required", headers: [.wwwAuthenticate: "Basic realm=\"\(configuration.basicRealm)\", charset=\"UTF-8\""])
            }
            return Pages.text(.ok, user.principal)
        }

    router.group()
        .add(middleware: SessionAuthenticator(context: AppRequestContext.self) { (principal: String, _) in User(principal: principal) })
        .get("/") { _, context -> Response in
            guard let user = context.identity else { return .redirect(to: "/login", type: .found) }
            return Pages.html(.ok, Pages.signedIn(user.principal))
        }

    router.get("/login") { _, _ in Pages.html(.ok, Pages.loginForm(error: nil)) }

    router.post("/login") { request, context -> Response in
        let fields = try await FormFields(request, context: context)
        guard let user = fields.text("username"), !user.isEmpty, let password = fields.secret("password") else {
            return Pages.html(.badRequest, Pages.loginForm(error: "Enter your user name and password."))
        }
        switch await logins.login(user: user, password: password) {
        case .verified(let principal):
            context.sessions.createSession(principal, expiresIn: .seconds(3600))
            return .redirect(to: "/", type: .found)
        case .needsOTP(let challenge):
            let id = pending.add(user: user, password: password, challenge: challenge)
            return Pages.html(.ok, Pages.otpForm(id: id, user: user, challenge: challenge, error: nil))
        case .failed(let error):
            context.logger.notice("login failed", metadata: ["user": .string(user), "reason": .string(error.reason.rawValue)])
            return Pages.html(Pages.status(for: error), Pages.loginForm(error: Pages.explanation(for: error)))
        }
    }

    router.post("/login/otp") { request, context -> Response in
        let fields = try await FormFields(request, context: context)
        guard let id = fields.text("pending"), let login = pending.take(id) else {
            return Pages.html(.badRequest, Pages.loginForm(error: "That sign-in has expired; start again."))
        }
        guard let value = fields.secret("otp"), !value.isEmpty else {
            let id = pending.add(user: login.user, password: login.password, challenge: login.challenge)
            return Pages.html(.badRequest, Pages.otpForm(id: id, user: login.user, challenge: login.challenge, error: "Enter the one-time password."))
        }
        let token = login.challenge.tokens.firstIndex { $0.flags.contains(.collectToken) } ?? 0
        switch await logins.login(user: login.user, password: login.password, otp: OTPAnswer(token: token, value: value, pin: fields.secret("pin"))) {
        case .verified(let principal):
            context.sessions.createSession(principal, expiresIn: .seconds(3600))
            return .redirect(to: "/", type: .found)
        case .needsOTP:
            context.logger.notice("one-time password refused: asked again", metadata: ["user": .string(login.user)])
            return Pages.html(.unauthorized, Pages.loginForm(error: "The one-time password was not accepted; sign in again."))
        case .failed(let error):
            context.logger.notice("one-time password refused", metadata: ["user": .string(login.user), "reason": .string(error.description)])
            return Pages.html(.unauthorized, Pages.loginForm(error: "The one-time password was not accepted; sign in again."))
        }
    }

    router.post("/logout") { _, context -> Response in
        context.sessions.clearSession()
        return .redirect(to: "/login", type: .found)
    }

    return Application(router: router, configuration: .init(address: .hostname(configuration.host, port: configuration.port)), logger: logger)
}

/// HTTP Basic against Kerberos: the header's name and password go to ``KerberosLogin``; no OTP round is possible
/// here, so a principal that needs one is not authenticated.
struct KerberosBasicAuthenticator: AuthenticatorMiddleware {
    typealias Context = AppRequestContext
    let logins: KerberosLogin

    func authenticate(request: Request, context: Context) async throws -> User? {
        // hummingbird-auth decodes the header into Strings; the password is a Secret from here on.
        guard let basic = request.headers.basic, !basic.password.isEmpty else { return nil }
        let password = Secret(basic.password)
        guard case .verified(let principal) = await logins.login(user: basic.username, password: password) else { return nil }
        return User(principal: principal)
    }
}
