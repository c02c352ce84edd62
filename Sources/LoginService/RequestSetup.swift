import Kerberos
import KerberosEngine
import LoginProtocol

/// What the callbacks of one attempt collect, on the worker, for the attempt to read afterwards.
final class AttemptNotes: Sendable {
    private struct Notes {
        var info: [String] = []
        var missing: [LoginQuestion] = []
    }
    private let notes = Locked(Notes())
    var info: [String] { notes.withLock { $0.info } }
    var missing: [LoginQuestion] { notes.withLock { $0.missing } }
    func add(info message: String) { notes.withLock { $0.info.append(message) } }
    func need(_ questions: [LoginQuestion]) { notes.withLock { $0.missing = questions } }
}

/// The request of one attempt as the worker builds it: the client, the base options with the worker's armor
/// cache, the responder and prompter that replay the conversation's answers (``AnswerMapping``), the direct
/// verification ticket. Every exchange of the attempt (etype info, the login, the password change) starts from it.
///
/// Lives on the login's worker, with its context (``KerberosSession``).
struct RequestSetup {
    let context: Context
    /// The service's configuration as it applies to the client's realm.
    let configuration: LoginConfiguration
    /// The client, parsed once for the whole login (``LoginNames/client(_:in:)``), and its canonical name.
    let client: Principal, principal: String
    /// The conversation whose answers the callbacks replay (its principal as the client spelt it, for prompt texts).
    let conversation: LoginConversation
    /// Whether the worker holds armor for the client's realm (``ArmorProvider``), and what the callbacks noted.
    let armored: Bool, notes: AttemptNotes

    /// The request with `password` (nil: none; the responder or prompter asks for it).
    func make(password: Secret?) throws -> InitialCredentialsSetup {
        var options = InitialCredentialsOptions()
        if configuration.canonicalize || configuration.enterpriseNames { options.canonicalize = true }
        options.ticketLifetime = configuration.ticketLifetime
        options.renewLifetime = configuration.renewLifetime
        options.forwardable = configuration.forwardable
        options.preauthOptions = configuration.preauthOptions.map { ($0.name, $0.value) }
        options.fastRequired = configuration.fastRequired
        if armored, let cache = ArmorProvider.cache(realm: client.realm, in: context) {
            options.armor = .cache(cache)
        }
        let (answers, asked, notes) = (conversation.answers, conversation.principal, self.notes)
        options.responder = Responder { questions in
            do throws(Unanswered) { return try AnswerMapping.respond(questions, answers: answers, asked: asked) } catch {
                notes.need(error.questions)
                throw error
            }
        }
        options.prompter = Prompter { round in
            if let banner = round.banner, !banner.isEmpty { notes.add(info: banner) }
            do throws(Unanswered) { return try AnswerMapping.prompt(round, answers: answers) } catch {
                notes.need(error.questions)
                throw error
            }
        }
        options.expireCallback = { expiry in
            if let message = AnswerMapping.expiryMessage(password: expiry.passwordExpiration, account: expiry.accountExpiration) {
                notes.add(info: message)
            }
        }
        // A ticket straight from the AS only for the server's own realm: a user of another realm is
        // verified through the TGS path (cross-realm), since the AS of the user's realm cannot issue it.
        // Nor with canonicalization: AD then answers with the service's canonical name, which MIT refuses
        // for any AS service but krbtgt ("KDC reply did not match expectations").
        let directVerification = configuration.verify && configuration.directVerificationTicket && configuration.outputCache == nil
        if directVerification && options.canonicalize != true {
            let server = try VerificationTarget.server(configuration, context)
            if server.realm == client.realm { options.service = server.name() }
        }
        return InitialCredentialsSetup(client: client, password: password, options: options)
    }

    /// The request for asking the KDC the client's etype info: no callbacks, no service ticket.
    func makeForEncryptionInfo() throws -> InitialCredentialsSetup {
        var request = try make(password: nil)
        request.options.responder = nil
        request.options.prompter = nil
        request.options.expireCallback = nil
        request.options.service = nil
        return request
    }
}

/// Where logins are verified: the keytab and the service principal, made once per worker context.
enum VerificationTarget {
    /// ``LoginConfiguration/keytab``, else the default keytab.
    static func keytab(_ configuration: LoginConfiguration, _ context: Context) throws -> Keytab {
        try context.reusable("verify.keytab.\(configuration.keytab ?? "")") {
            if let name = configuration.keytab { return try Keytab(resolving: name, in: context) }
            return try Keytab.default(in: context)
        }
    }

    /// The configured service principal, else `host/<this host>` as krb5 canonicalises it.
    static func server(_ configuration: LoginConfiguration, _ context: Context) throws -> Principal {
        try context.reusable("verify.server.\(configuration.serverPrincipal ?? "")") {
            guard let name = configuration.serverPrincipal else { return try Principal.service("host", in: context) }
            return try Principal(parsing: name, in: context)
        }
    }
}
