public import Kerberos
import KerberosEngine
public import Testing

/// Expects `body` to throw a ``KerberosError`` with `reason`, and records the error's message otherwise.
public func expectReason(_ reason: KerberosError.Reason, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> some Any) {
    let error = #expect(throws: KerberosError.self, sourceLocation: sourceLocation) { _ = try body() }
    if let error {
        #expect(error.reason == reason, "got \(error.reason): \(error)", sourceLocation: sourceLocation)
    }
}

/// Polls `condition` every 20 ms for up to 30 s (long enough for a loaded CI machine; a wrong outcome still
/// fails), then expects it. For states the code under test reaches on its own threads, which a fixed sleep
/// only guesses at.
public func expectEventually(_ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation, _ condition: () throws -> Bool) async throws {
    for _ in 0..<1500 {
        if try condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    #expect(try condition(), comment, sourceLocation: sourceLocation)
}
