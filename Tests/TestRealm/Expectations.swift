public import Kerberos
public import Testing

/// Expects `body` to throw a ``KerberosError`` with `reason`, and records the error's message otherwise.
public func expectReason(_ reason: KerberosError.Reason, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> some Any) {
    let error = #expect(throws: KerberosError.self, sourceLocation: sourceLocation) { _ = try body() }
    if let error {
        #expect(error.reason == reason, "got \(error.reason): \(error)", sourceLocation: sourceLocation)
    }
}
