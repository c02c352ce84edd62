import Kerberos
public import LoginProtocol

/// One login made in this process on the calling thread, for programs that make one login and exit (such as
/// `krb5-login`): each step runs the exchange once with the answers so far, on a krb5 context made at the first step
/// from ``LoginConfiguration/krb5`` and kept for the rounds after it.
///
/// Not `Sendable`: the context is used by one thread at a time.
public final class InProcessLogin {
    /// How the login is performed.
    public let configuration: LoginConfiguration
    private var context: Context?

    /// A login performed as `configuration` says; nothing is read before the first step.
    public init(configuration: LoginConfiguration) {
        self.configuration = configuration
    }

    /// Runs the exchange once with every answer `conversation` has so far, bounded by the login timeout. An
    /// unreadable krb5 configuration ends the login with an `internal` failure.
    ///
    /// With `finishing`, a login whose exchange ends (rather than asking questions) calls it with its result and
    /// messages instead of returning, on this thread, and `finishing` ends the process (`_exit`); a program that exits
    /// after its login so skips the shutdown of the login's event loop, which NIO hands to libdispatch threads. A
    /// login refused before any exchange (an unusable name or configuration) returns as usual.
    ///
    /// > Warning: Blocks the calling thread until answered; never call from Swift's cooperative pool.
    @available(*, noasync, message: "blocks the calling thread until answered")
    public func step(_ conversation: LoginConversation, finishing: ((LoginResult, _ info: [String]) -> Never)? = nil) -> LoginStep {
        do {
            let context = try self.context ?? Context(configuration.krb5)
            self.context = context
            return LoginService.stepBlocking(conversation, configuration: configuration, context: context, finishing: finishing)
        } catch {
            return .finished(.failed(.internal, "unusable krb5 configuration: \(error)", principal: conversation.principal), info: [])
        }
    }
}
