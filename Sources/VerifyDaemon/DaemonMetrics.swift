import CoreMetrics
import Foundation
import KerberosSecrets
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// The daemon's metrics through swift-metrics, exported by swift-prometheus: requests by listener and
/// outcome, a latency histogram, logins in flight and conversations parked at a question.
final class DaemonMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    let inFlight: CoreMetrics.Meter
    let parked: CoreMetrics.Meter
    let connections: CoreMetrics.Meter
    /// The counters and timers already made, by label values: making one costs more than using it.
    private let counters = Locked<[String: CoreMetrics.Counter]>([:])
    private let timers = Locked<[String: CoreMetrics.Timer]>([:])

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [.milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                                   .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
                                                   .seconds(1), .seconds(2.5), .seconds(5), .seconds(10)]
        self.factory = factory
        inFlight = CoreMetrics.Meter(label: "krb5_verifyd_logins_in_flight", factory: factory)
        parked = CoreMetrics.Meter(label: "krb5_verifyd_conversations_parked", factory: factory)
        connections = CoreMetrics.Meter(label: "krb5_verifyd_connections_open", factory: factory)
    }

    /// Counts one finished request and its latency.
    func record(listener: String, outcome: String, latency: Duration) {
        let factory = self.factory
        Self.made(counters, listener + "\u{0}" + outcome) {
            CoreMetrics.Counter(label: "krb5_verifyd_requests_total", dimensions: [("listener", listener), ("outcome", outcome)], factory: factory)
        }.increment()
        Self.made(timers, listener) {
            CoreMetrics.Timer(label: "krb5_verifyd_request_duration_seconds", dimensions: [("listener", listener)], factory: factory)
        }.recordNanoseconds(Int64(latency.components.seconds) * 1_000_000_000 + latency.components.attoseconds / 1_000_000_000)
    }

    /// The handle stored under `key`, made by `make` the first time.
    private static func made<Handle>(_ table: Locked<[String: Handle]>, _ key: String, _ make: () -> Handle) -> Handle {
        table.withLock { table in
            if let handle = table[key] { return handle }
            let handle = make()
            table[key] = handle
            return handle
        }
    }

    /// The Prometheus text exposition.
    func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

/// Serves `GET /metrics` over HTTP/1.1.
final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let metrics: DaemonMetrics
    init(metrics: DaemonMetrics) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let request) = unwrapInboundIn(data) else { return }
        let (status, body): (HTTPResponseStatus, [UInt8]) = request.uri == "/metrics" && request.method == .GET
            ? (.ok, metrics.exposition()) : (.notFound, Array("not found\n".utf8))
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; version=0.0.4")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
