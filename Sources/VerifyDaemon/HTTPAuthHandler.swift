import KerberosSecrets
import LoginProtocol
import LoginService
import NIOCore
import NIOHTTP1

/// One connection to the HTTP auth endpoint (nginx `auth_request`, Caddy `forward_auth`): each request to `/auth`
/// carries `Authorization: Basic`, goes through the ``LoginGate`` as a saslauthd request does, and is answered
/// 200 (with `X-Remote-User` and `X-Remote-Principal`), 401 (with the Basic challenge), 403, 503, or 400 for a request
/// the endpoint cannot use. Keep-alive connections are served one request at a time (NIO's pipelining assistance
/// holds the next one back until the answer is out).
final class HTTPAuthHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// What every connection shares: the gate, the local names, whose address header to believe, the challenge and
    /// the timers.
    struct Settings: Sendable {
        let gate: LoginGate
        let localNames: LocalAccounts
        let trust: HTTPAuth.ProxyTrust
        /// The `WWW-Authenticate` value of a 401.
        let challenge: String
        let timeouts: ListenerTimeouts
    }

    private let settings: Settings
    private let peer: HTTPAuth.Peer
    private var head: HTTPRequestHead?
    /// A request is at the gate: its answer is still to be written.
    private var busy = false
    private var closing = false
    private var waitTimeout: Scheduled<Void>?

    init(settings: Settings, peer: HTTPAuth.Peer) {
        self.settings = settings
        self.peer = peer
    }

    /// NIO's HTTP/1 server codec with pipelining assistance, then a handler for `peer`.
    static func configure(_ channel: any Channel, settings: Settings, peer: HTTPAuth.Peer) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false)
            try channel.pipeline.syncOperations.addHandler(HTTPAuthHandler(settings: settings, peer: peer))
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armWaitTimeout(context: context)
    }

    /// Closes a connection on which no whole request arrives within `read_timeout` (at first, and between the
    /// requests of a keep-alive connection).
    private func armWaitTimeout(context: ChannelHandlerContext) {
        waitTimeout?.cancel()
        waitTimeout = context.schedule(in: settings.timeouts.read, self) { handler, context in
            guard !handler.busy else { return }
            handler.closing = true
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break  // auth requests carry no body; one sent anyway is read and dropped
        case .end:
            guard let request = head, !closing else { return }
            head = nil
            waitTimeout?.cancel()
            handle(request, context: context)
        }
    }

    private func handle(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = request.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/auth" else {
            return respond(.notFound, body: "not found: the auth endpoint is /auth", request: request, context: context)
        }
        do throws(HTTPAuth.BadRequest) {
            let headerBytes = request.headers.reduce(request.uri.utf8.count) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
            guard headerBytes <= HTTPAuth.maxHeaderBytes else { throw HTTPAuth.BadRequest("the request headers are larger than \(HTTPAuth.maxHeaderBytes) bytes") }
            let authorizations = request.headers["Authorization"]
            guard authorizations.count <= 1 else { throw HTTPAuth.BadRequest("more than one Authorization header") }
            guard case .basic(let credentials) = try HTTPAuth.authorization(authorizations.first) else {
                return respond(.unauthorized, body: "credentials required", request: request, context: context)
            }
            let forwarded = request.headers[settings.trust.header]
            guard forwarded.count <= 1 else { throw HTTPAuth.BadRequest("more than one \(settings.trust.header) header") }
            let address = try HTTPAuth.clientAddress(header: forwarded.first, peer: peer, trust: settings.trust)
            verify(credentials, clientAddress: address, request: request, context: context)
        } catch {
            settings.gate.invalidRequest(error, peer: peerCredentials, listener: .http)
            respond(.badRequest, body: "bad request: \(error.reason)", request: request, context: context)
        }
    }

    private var peerCredentials: PeerCredentials? {
        if case .local(let credentials) = peer { return credentials }
        return nil
    }

    private func verify(_ credentials: HTTPAuth.Credentials, clientAddress: String?, request: HTTPRequestHead, context: ChannelHandlerContext) {
        busy = true
        let login = SaslauthdRequest(login: credentials.user, password: credentials.password, service: "http", realm: "", clientAddress: clientAddress)
        let localNames = settings.localNames
        settings.gate.verifyPassword(login, peer: peerCredentials, listener: .http, on: context.eventLoop, context.onLoop(self) { handler, context, result in
            handler.busy = false
            var headers = HTTPHeaders()
            if result.ok {
                // Fails closed: a name the headers cannot carry (a control character from the KDC) lets nobody in.
                guard let principal = result.principal, HTTPAuth.isHeaderSafe(principal) else {
                    return handler.respond(.forbidden, body: "forbidden: the principal's name cannot be sent in a header", request: request, context: context)
                }
                let user = localNames.localName(of: principal).flatMap { HTTPAuth.isHeaderSafe($0) ? $0 : nil } ?? principal
                headers.add(name: "X-Remote-User", value: user)
                headers.add(name: "X-Remote-Principal", value: principal)
            }
            let status = HTTPAuth.status(for: result)
            handler.respond(status, headers: headers, body: Self.body(for: result, status: status), request: request, context: context)
        })
    }

    /// The short text of an answer; never a secret, and no more about the account than the status tells.
    private static func body(for result: LoginResult, status: HTTPResponseStatus) -> String {
        switch status {
        case .ok: "ok"
        case .forbidden: "forbidden: \(result.failure?.rawValue ?? "")"
        case .serviceUnavailable: "unavailable: \(result.failure?.rawValue ?? "")"
        case .badRequest: "bad request: \(result.message ?? "")"
        default: "authentication failed"
        }
    }

    private func respond(_ status: HTTPResponseStatus, headers extra: HTTPHeaders = [:], body: String, request: HTTPRequestHead,
                         context: ChannelHandlerContext, close: Bool = false) {
        guard context.channel.isActive else { return }
        let keepAlive = request.isKeepAlive && !close && status != .badRequest
        let bytes = Array((body + "\n").utf8)
        var headers = extra
        if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: settings.challenge) }
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(bytes.count))
        headers.add(name: "Cache-Control", value: "no-store")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if keepAlive {
            armWaitTimeout(context: context)
        } else {
            closing = true
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// A request NIO's HTTP decoder could not parse (headers beyond its own limit, not HTTP at all): 400, then close.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, !busy, !closing else {
            context.close(promise: nil)
            return
        }
        let reason = parserError == .headerOverflow ? "the request headers are too large" : "not an HTTP/1 request (\(parserError))"
        settings.gate.invalidRequest(HTTPAuth.BadRequest(reason), peer: peerCredentials, listener: .http)
        let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
        respond(.badRequest, body: "bad request: \(reason)", request: request, context: context, close: true)
    }

    func channelInactive(context: ChannelHandlerContext) {
        waitTimeout?.cancel()
        context.fireChannelInactive()
    }
}
