public import KerberosSecrets

/// What an initial-credentials call authenticates, and how; made on a worker thread by the caller's setup closure.
public struct InitialCredentialsSetup {
    /// The client principal.
    public var client: Principal
    package var key: InitialKey
    /// Every option of the request, including a responder, a prompter and caches.
    public var options: InitialCredentialsOptions
    /// Objects that live as long as the request and are released on its worker with it (a guard that wipes a
    /// key from a MEMORY keytab, say).
    package var attachments: [AnyObject] = []
    /// Told, on the worker, which enctype, salt and parameters each password key of the exchange was made for (the
    /// KDC's etype info as the exchange received it).
    package var onPasswordKey: (@Sendable (EncryptionInfo) -> Void)?

    /// A password login (nil: asked through the responder or prompter).
    public init(client: Principal, password: Secret?, options: InitialCredentialsOptions = InitialCredentialsOptions()) {
        self.client = client
        self.key = .password(password)
        self.options = options
    }

    /// A keytab login.
    public init(client: Principal, keytab: Keytab, options: InitialCredentialsOptions = InitialCredentialsOptions()) {
        self.client = client
        self.key = .keytab(keytab)
        self.options = options
    }
}
