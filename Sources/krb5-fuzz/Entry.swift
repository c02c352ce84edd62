#if canImport(Glibc)
import Glibc
#endif

/// `krb5-fuzz`: with `-DFUZZING` (`make fuzz`: coverage instrumentation, AddressSanitizer and libFuzzer's
/// `fuzzer_no_main` runtime, scripts/fuzz.sh) it is libFuzzer with FUZZ_TARGET, a ``FuzzTarget`` name, saying which
/// parser gets the inputs: `FUZZ_TARGET=dns krb5-fuzz [libFuzzer flags] [corpus directories or inputs]`. Without it
/// (an ordinary build), `krb5-fuzz TARGET FILE...` runs each file through the target once, to replay what
/// libFuzzer saved, or the seed corpus, without sanitizers.
@main
struct FuzzMain {
    static func main() {
        #if FUZZING
        guard let name = getenv("FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget(rawValue: name) else {
            complain("krb5-fuzz: set FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n")
            exit(2)
        }
        selected = target
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            selected!.run(size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
            return 0
        })
        #else
        let arguments = CommandLine.arguments
        guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) else {
            complain("usage: krb5-fuzz {\(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|"))} FILE...\n")
            exit(2)
        }
        for path in arguments.dropFirst(2) {
            guard let file = fopen(path, "rb") else {
                complain("krb5-fuzz: cannot read \(path)\n")
                exit(1)
            }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while case let count = fread(&buffer, 1, buffer.count, file), count > 0 { bytes += buffer[0..<count] }
            fclose(file)
            target.run(bytes)
            print("\(path): \(bytes.count) bytes, ok")
        }
        #endif
    }
}

/// Writes `text` to standard error.
func complain(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

#if FUZZING
/// The target the inputs go to (set once, before libFuzzer starts).
nonisolated(unsafe) private var selected: FuzzTarget?

/// libFuzzer's driver (`fuzzer_no_main`): parses its flags from the arguments and calls `callback` with each input.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
#endif
