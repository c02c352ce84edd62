import NIOCore

extension ChannelHandlerContext {
    /// `body` as a `Sendable` closure for a completion that runs on this context's event loop: the handler and
    /// the context travel in one `NIOLoopBound` box, which traps if the closure runs elsewhere.
    func onLoop<Handler: AnyObject, Value>(_ handler: Handler, _ body: @escaping (Handler, ChannelHandlerContext, Value) -> Void) -> @Sendable (Value) -> Void {
        let box = NIOLoopBound((handler, self, body), eventLoop: eventLoop)
        return { value in
            let (handler, context, body) = box.value
            body(handler, context, value)
        }
    }

    /// `body` as a `Sendable` closure without a value (see ``onLoop(_:_:)-(_,(Handler,ChannelHandlerContext,Value)->Void)``).
    func onLoop<Handler: AnyObject>(_ handler: Handler, _ body: @escaping (Handler, ChannelHandlerContext) -> Void) -> @Sendable () -> Void {
        let box = NIOLoopBound((handler, self, body), eventLoop: eventLoop)
        return {
            let (handler, context, body) = box.value
            body(handler, context)
        }
    }

    /// Schedules `body` with the handler and this context on this context's event loop after `delay`.
    func schedule<Handler: AnyObject>(in delay: Duration, _ handler: Handler, _ body: @escaping (Handler, ChannelHandlerContext) -> Void) -> Scheduled<Void> {
        eventLoop.scheduleTask(in: TimeAmount(delay), onLoop(handler, body))
    }
}
