import Foundation
import Kerberos
import Logging
import LoginProtocol
@testable import LoginService
import NIOCore
import NIOEmbedded
import SystemPackage
import TestRealm
import Testing
@testable import VerifyDaemon

/// A daemon that needs no KDC: its own small krb5.conf, nothing started unless the test starts it.
struct OfflineDaemon {
    let directory: String
    let daemon: VerifyDaemon
    /// Every line the daemon logged.
    let logs = LogCapture()

    init(_ configure: (inout DaemonConfiguration) -> Void = { _ in }) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("kv-hard-\(getpid())-\(TestRealm.uniqueName("d"))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let krb5 = directory + "/krb5.conf"
        try """
        [libdefaults]
            default_realm = EXAMPLE.ORG
            dns_lookup_kdc = false
            dns_lookup_realm = false
        [realms]
            EXAMPLE.ORG = {
                kdc = 127.0.0.1:1
            }
        """.write(toFile: krb5, atomically: true, encoding: .utf8)
        var configuration = DaemonConfiguration()
        configuration.saslSocket = directory + "/mux"
        configuration.socket = directory + "/conv"
        configuration.login = LoginConfiguration(krb5: .files(krb5), keytab: directory + "/none.keytab", serverPrincipal: "host/x@EXAMPLE.ORG")
        configuration.workers = 1
        configuration.readTimeout = .seconds(5)
        configuration.idleTimeout = .seconds(5)
        configuration.failureFloor = .milliseconds(10)
        configure(&configuration)
        daemon = try VerifyDaemon(configuration: configuration, logger: Logger(label: "offline") { [logs] _ in logs.handler() })
    }

    func stop() async {
        await daemon.shutdown(grace: .zero)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

// MARK: Item 13: peer checks fail closed

@Suite("Peer checks fail closed (issue #11, item 13)", .onTestThreads)
struct PeerCheckTests {
    @Test("an unknown peer is refused when allow-lists are set, and let in when none is")
    func admitsDecision() {
        let peer = PeerCredentials(pid: 1, uid: 1000, gid: 100)
        #expect(PeerCredentials.admits(nil, uids: [], gids: []))
        #expect(!PeerCredentials.admits(nil, uids: [1000], gids: []))
        #expect(!PeerCredentials.admits(nil, uids: [], gids: [100]))
        #expect(PeerCredentials.admits(peer, uids: [1000], gids: []))
        #expect(PeerCredentials.admits(peer, uids: [], gids: [100]))
        #expect(!PeerCredentials.admits(peer, uids: [0], gids: [0]))
        #expect(PeerCredentials.admits(peer, uids: [], gids: []))
    }

    /// An `EmbeddedChannel` offers no socket options, so `SO_PEERCRED` cannot be read: the peer is unknown.
    static func firstReply(_ handler: any ChannelHandler) throws -> ByteBuffer? {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(handler)
        channel.connect(to: try SocketAddress(unixDomainSocketPath: "/nonexistent"), promise: nil)
        // Past the failure floor (10 ms), well before the read and idle timeouts (5 s).
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        defer { _ = try? channel.finish() }
        var reply: ByteBuffer?
        while let part = try channel.readOutbound(as: ByteBuffer.self) {
            var part = part
            if reply == nil { reply = part } else { reply!.writeBuffer(&part) }
        }
        return reply
    }

    /// The acceptor's answer to a connection from a peer whose `SO_PEERCRED` could not be read, which has sent
    /// `request` (one end of a socket pair; the acceptor gets the other, as from `accept(2)`).
    static func acceptorReply(_ daemon: VerifyDaemon, sent request: [UInt8]) throws -> SaslauthdReply {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kv-peer-\(getpid())-\(TestRealm.uniqueName("s"))").path
        let listener = try SaslauthdAcceptor.listen(at: path)
        defer { try? listener.close(); unlink(path) }
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]) }
        _ = request.withUnsafeBytes { Glibc.send(pair[0], $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        daemon.makeSaslauthdAcceptor(listener: listener).serve(SystemPackage.FileDescriptor(rawValue: pair[1]), peer: nil)
        var reply = [UInt8](repeating: 0, count: 512)
        let count = reply.withUnsafeMutableBytes { recv(pair[0], $0.baseAddress, $0.count, 0) }
        return try SaslauthdReply(decoding: Array(reply.prefix(max(count, 0))))
    }

    @Test("saslauthd listener: a peer whose credentials cannot be read is refused with allowed_uids set, and let in without")
    func saslauthdUnknownPeer() async throws {
        let garbage: [UInt8] = [0xff, 0xff, 0x41]  // a field longer than the limit: refused at once once let in
        let restricted = try OfflineDaemon { $0.allowedUIDs = [getuid()] }
        #expect(try Self.acceptorReply(restricted.daemon, sent: garbage) == .no("not allowed"))
        await restricted.stop()

        let open = try OfflineDaemon()
        #expect(try Self.acceptorReply(open.daemon, sent: garbage) == .no("invalid request"))
        await open.stop()
    }

    @Test("conversation listener: a peer whose credentials cannot be read is refused with allowed_gids set")
    func conversationUnknownPeer() async throws {
        let restricted = try OfflineDaemon { $0.allowedGIDs = [getgid()] }
        let reply = try Self.firstReply(restricted.daemon.makeConversationHandler())
        let text = reply.map { String(decoding: $0.readableBytesView, as: UTF8.self) } ?? ""
        #expect(text.contains(#""ok":false"#) && text.contains("peer not allowed"), "\(text)")
        await restricted.stop()

        let open = try OfflineDaemon()
        #expect(try Self.firstReply(open.daemon.makeConversationHandler()) == nil)
        await open.stop()
    }
}

// MARK: Item 14: sockets appear with their mode

/// inotify events for one directory, read without blocking.
private final class DirectoryWatch {
    let fd: Int32

    init(_ directory: String) throws {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0, inotify_add_watch(fd, directory, UInt32(IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE | IN_MOVED_FROM)) >= 0 else {
            throw ProtocolError("inotify: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    /// Every event queued so far, as (mask, name).
    func events() -> [(mask: UInt32, name: String)] {
        var result: [(UInt32, String)] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { return result }
            var offset = 0
            buffer.withUnsafeBytes { bytes in
                while offset < count {
                    let mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                    let length = Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                    let nameBytes = bytes[(offset + 16)..<(offset + 16 + length)].prefix { $0 != 0 }
                    result.append((mask, String(decoding: nameBytes, as: UTF8.self)))
                    offset += 16 + length
                }
            }
        }
    }
}

@Suite("Sockets appear only with their final mode (issue #11, item 14)", .onTestThreads)
struct SocketModeTests {
    static func scratch(_ name: String) throws -> String {
        let directory = "/tmp/kv-mode-\(getpid())-\(TestRealm.uniqueName(name))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return nil }
        return info.st_mode & 0o7777
    }

    /// A listening socket bound with plain system calls.
    static func bindListener(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        let bound = try #require(UnixSocketAddress(path: path)).withSockaddr { Glibc.bind(fd, $0, $1) }
        guard bound == 0, listen(fd, 8) == 0 else {
            let error = String(cString: strerror(errno))
            close(fd)
            throw ProtocolError("bind \(path): \(error)")
        }
        return fd
    }

    /// The design, checked event by event: the socket's name in the target directory is only ever the
    /// target of a rename (never created there, never chmod'ed or chgrp'ed there), and the file renamed in
    /// already has its mode. Repeated with replacement of a previous socket and alternating modes.
    @Test("the final path appears only by rename, with the mode and group already set")
    func renameIntoPlace() async throws {
        let directory = try Self.scratch("rename")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/listener.sock"
        let watch = try DirectoryWatch(directory)
        var open: [Int32] = []
        defer { open.forEach { _ = close($0) } }
        for round in 0..<50 {
            let mode: UInt32 = round % 2 == 0 ? 0o640 : 0o600
            var sawInside: mode_t?
            let fd = try await SocketFile.bind(path: path, mode: mode, group: String(getgid())) { temporary in
                // Inside the private directory: not reachable by anyone else, and not yet at the target.
                var parent = stat()
                #expect(stat(String(temporary[..<temporary.lastIndex(of: "/")!]), &parent) == 0 && parent.st_mode & 0o777 == 0o700)
                #expect(round > 0 || access(path, F_OK) != 0)
                return try Self.bindListener(temporary)
            } close: { fd in
                close(fd)
            }
            sawInside = Self.mode(path)
            open.append(fd)
            #expect(sawInside == mode_t(mode), "round \(round)")
            let events = watch.events()
            let forTarget = events.filter { $0.name == "listener.sock" }
            #expect(forTarget.count == 1 && forTarget[0].mask & UInt32(IN_MOVED_TO) != 0, "round \(round): \(forTarget)")
            // The private directory came and went; nothing else was created in the target directory.
            #expect(events.allSatisfy { $0.name == "listener.sock" || $0.name.hasPrefix(".kv") }, "\(events)")
            #expect(!events.contains { $0.mask & UInt32(IN_CREATE) != 0 && $0.mask & UInt32(IN_ISDIR) == 0 }, "\(events)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["listener.sock"])
    }

    @Test("a file that is not a socket is never replaced, and a failed bind leaves nothing behind")
    func refusesNonSocket() async throws {
        let directory = try Self.scratch("nonsocket")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/file"
        try "keep".write(toFile: path, atomically: true, encoding: .utf8)
        await #expect(throws: ConfigurationError.self) {
            _ = try await SocketFile.bind(path: path, mode: 0o600, group: nil) { try Self.bindListener($0) } close: { close($0) }
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "keep")
        await #expect(throws: ConfigurationError.self) {
            _ = try await SocketFile.bind(path: directory + "/s", mode: 0o600, group: "no-such-group-kv") { try Self.bindListener($0) } close: { close($0) }
        }
        await #expect(throws: ProtocolError.self) {
            _ = try await SocketFile.bind(path: directory + "/s", mode: 0o600, group: nil) { _ in throw ProtocolError("bind failed") } close: { close($0) }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["file"])
    }

    /// The daemon's own listeners, as "flags override the configuration file" (ShutdownTests) saw them: that
    /// test once read 0755 because it looked between bind and chmod.
    @Test("krb5-verifyd's listeners appear by rename with socket_mode already set")
    func daemonListeners() async throws {
        let offline = try OfflineDaemon {
            $0.socketMode = 0o640
            $0.socketGroup = String(getgid())
        }
        let watch = try DirectoryWatch(offline.directory)
        let endpoints = try await offline.daemon.start()
        let events = watch.events()
        for name in ["mux", "conv"] {
            let forName = events.filter { $0.name == name }
            #expect(forName.count == 1 && forName[0].mask & UInt32(IN_MOVED_TO) != 0, "\(name): \(forName)")
            #expect(Self.mode(offline.directory + "/" + name) == 0o640)
        }
        #expect(endpoints.saslSocket == offline.directory + "/mux")
        await offline.stop()
    }
}

// MARK: Item 10: the result cache

@Suite("The result cache (issue #11, item 10)", .onTestThreads)
struct ResultCacheUnitTests {
    let success = LoginResult.success(principal: "alice@EXAMPLE.ORG", verified: true, expires: .now + .seconds(3_600))

    @Test("a success with a new password replaces the principal's entry: the old password is no longer answered")
    func newPasswordDropsOld() {
        let cache = ResultCache(ttl: .seconds(60))
        cache.store(principal: "alice@EXAMPLE.ORG", password: Secret("old"), result: success)
        cache.store(principal: "bob@EXAMPLE.ORG", password: Secret("old"), result: success)
        #expect(cache.lookup(principal: "alice@EXAMPLE.ORG", password: Secret("old")) == success)
        cache.store(principal: "alice@EXAMPLE.ORG", password: Secret("new"), result: success)
        #expect(cache.lookup(principal: "alice@EXAMPLE.ORG", password: Secret("old")) == nil)
        #expect(cache.lookup(principal: "alice@EXAMPLE.ORG", password: Secret("new")) == success)
        #expect(cache.lookup(principal: "bob@EXAMPLE.ORG", password: Secret("old")) == success)
        #expect(cache.count == 2)
    }

    @Test("invalidation drops the principal named exactly as given (callers pass the canonical name)")
    func invalidateByName() {
        let cache = ResultCache(ttl: .seconds(60))
        cache.store(principal: "alice@EXAMPLE.ORG", password: Secret("pw"), result: success)
        cache.store(principal: "bob@EXAMPLE.ORG", password: Secret("pw"), result: success)
        cache.invalidate(principal: "alice@EXAMPLE.ORG")
        #expect(cache.lookup(principal: "alice@EXAMPLE.ORG", password: Secret("pw")) == nil)
        #expect(cache.lookup(principal: "bob@EXAMPLE.ORG", password: Secret("pw")) == success)
        #expect(cache.count == 1)
    }

    @Test("failures are not stored; entries expire; the principal and password are both in the key")
    func basics() async throws {
        let cache = ResultCache(ttl: .milliseconds(1))
        cache.store(principal: "alice@EXAMPLE.ORG", password: Secret("pw"), result: .failed(.badCredentials, "no", principal: "alice@EXAMPLE.ORG"))
        #expect(cache.count == 0)
        cache.store(principal: "alice@EXAMPLE.ORG", password: Secret("pw"), result: success)
        #expect(cache.lookup(principal: "alice@EXAMPLE.ORG", password: Secret("pw2")) == nil)
        #expect(cache.lookup(principal: "alice@EXAMPLE.OR", password: Secret("Gpw")) == nil)
        try await Task.sleep(for: .milliseconds(5))
        #expect(cache.lookup(principal: "alice@EXAMPLE.ORG", password: Secret("pw")) == nil)
        #expect(cache.count == 0)
    }

    @Test("the key is HMAC-SHA-256 of principal, a zero byte and password, as an independent HMAC computes it")
    func hmacVector() {
        let key = Array("Jefe".utf8)  // RFC 4231 test case 2's key
        let digester = PasswordDigester(key: key)
        #expect(digester.digest("what do ya want", Secret(" for nothing?")).matches(digester.digest("what do ya want", Secret(" for nothing?"))))
        // python3 -c "import hmac, hashlib; print(hmac.new(b'Jefe', b'what do ya want\x00 for nothing?', hashlib.sha256).hexdigest())"
        let hex = Array("cabaac5fb4a7102cd287cc98924c8a618112e35ac4016fa3e84e1eaf13e0ea8e".utf8)
        let expected = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        let digest = expected.withUnsafeBytes { PasswordDigester.Digest(bytes: $0) }
        #expect(digester.digest("what do ya want", Secret(" for nothing?")).matches(digest))
        #expect(!digester.digest("what do ya want", Secret(" for nothing!")).matches(digest))
        #expect(!digester.digest("what do ya wan", Secret("t for nothing?")).matches(digest), "the zero byte separates principal and password")
    }
}

@Suite("The result cache through the daemon (issue #11, item 10)", .onTestThreads)
struct ResultCacheDaemonTests {
    @Test("after a password change, the new password's success ends the old one's cached success")
    func newPasswordEndsOld() async throws {
        try await DaemonFixture.with(configure: { configuration, _ in configuration.resultCacheTTL = .seconds(60) }) { fixture throws in
            let realm = fixture.realm
            let user = try realm.addPrincipal(prefix: "cachenew", password: "Old-Passw0rd")
            #expect(try fixture.sasl(user, "Old-Passw0rd") == .ok)
            try realm.kadmin("cpw", "-pw", "New-Passw0rd", user)
            // Still answered from the cache (the documented trade-off)…
            #expect(try fixture.sasl(user, "Old-Passw0rd") == .ok)
            // …until the new password succeeds at the KDC, which replaces the entry.
            #expect(try fixture.sasl(user, "New-Passw0rd") == .ok)
            #expect(fixture.daemon.service.resultCache?.count == 1)
            #expect(try fixture.sasl(user, "Old-Passw0rd") == .no("authentication failed"))
            #expect(try fixture.sasl(user, "New-Passw0rd") == .ok)
        }
    }
}
