import Foundation
import KerberosSecrets
import LoginProtocol

/// A bounded random-input harness for the wire parsers (`make fuzz`): seeds from `Tests/Fuzz/corpus`,
/// mutated with a seeded generator (bit flips, byte changes, insertions, deletions, splices, truncation),
/// fed to each parser. Passes when nothing crashes, no input takes longer than a second, and memory stays
/// bounded. `krb5-fuzz [INPUTS-PER-TARGET] [SEED]`.
@main
struct Fuzz {
    static func main() throws {
        let arguments = CommandLine.arguments
        let inputs = arguments.count > 1 ? Int(arguments[1]) ?? 1_000_000 : 1_000_000
        let seed = arguments.count > 2 ? UInt64(arguments[2]) ?? 1 : 1
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Tests/Fuzz/corpus")
        let targets: [(String, String, ([UInt8], inout Generator) -> Void)] = [
            ("saslauthd frames", "sasl", fuzzSaslauthd),
            ("JSON client messages", "json", { bytes, _ in _ = try? ClientMessage.decode(bytes) }),
            ("JSON server messages and question decoders", "json", { bytes, _ in _ = try? ServerMessage.decode(bytes) }),
            ("line framer", "json", fuzzFramer),
        ]
        var failed = false
        for (name, directory, target) in targets {
            let seeds = try FileManager.default.contentsOfDirectory(at: corpus.appendingPathComponent(directory), includingPropertiesForKeys: nil)
                .map { Array(try Data(contentsOf: $0)) }
            var generator = Generator(seed: seed)
            var slowest = 0.0
            let start = Date()
            for index in 0..<inputs {
                let input = mutate(seeds[index % seeds.count], seeds: seeds, &generator)
                let began = Date()
                target(input, &generator)
                slowest = max(slowest, Date().timeIntervalSince(began))
            }
            let rss = residentKilobytes()
            let ok = slowest < 1 && rss < 512 * 1024
            failed = failed || !ok
            print(String(format: "%@ %@: %d inputs in %.1f s, slowest %.3f ms, RSS %d MB", ok ? "ok  " : "FAIL", name, inputs,
                         Date().timeIntervalSince(start), slowest * 1000, rss / 1024))
        }
        exit(failed ? 1 : 0)
    }

    static func fuzzSaslauthd(_ bytes: [UInt8], _ generator: inout Generator) {
        var decoder = SaslauthdDecoder(maximumFieldLength: 256)
        var offset = 0
        while offset < bytes.count {
            let size = min(bytes.count - offset, Int(generator.next() % 64) + 1)
            do {
                try decoder.feed(bytes[offset..<offset + size])
                if case .fourFields = try decoder.progress() { _ = try? decoder.fourFieldRequest() }
            } catch { return }
            offset += size
        }
    }

    static func fuzzFramer(_ bytes: [UInt8], _ generator: inout Generator) {
        var framer = LineFramer(maximumLength: 256)
        var offset = 0
        while offset < bytes.count {
            let size = min(bytes.count - offset, Int(generator.next() % 32) + 1)
            for case .line(let line) in framer.feed(bytes[offset..<offset + size]) {
                _ = line.withUnsafeBytes { try? ClientMessage.decode($0) }
            }
            offset += size
        }
    }

    static func mutate(_ seed: [UInt8], seeds: [[UInt8]], _ generator: inout Generator) -> [UInt8] {
        var bytes = seed
        for _ in 0..<Int(generator.next() % 4) + 1 {
            switch generator.next() % 7 {
            case 0 where !bytes.isEmpty: bytes[Int(generator.next() % UInt64(bytes.count))] ^= UInt8(1 << (generator.next() % 8))
            case 1 where !bytes.isEmpty: bytes[Int(generator.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: generator.next())
            case 2: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: Int(generator.next() % UInt64(bytes.count + 1)))
            case 3 where !bytes.isEmpty: bytes.remove(at: Int(generator.next() % UInt64(bytes.count)))
            case 4:
                let other = seeds[Int(generator.next() % UInt64(seeds.count))]
                let cut = Int(generator.next() % UInt64(bytes.count + 1))
                bytes = Array(bytes[..<cut]) + other[Int(generator.next() % UInt64(other.count + 1))...]
            case 5 where !bytes.isEmpty: bytes.removeLast(Int(generator.next() % UInt64(bytes.count)))
            default:
                let interesting: [UInt8] = [0x00, 0xFF, 0x7F, 0x80, 0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x0A, 0xC0, 0xED, 0xF4]
                bytes.insert(interesting[Int(generator.next() % UInt64(interesting.count))], at: Int(generator.next() % UInt64(bytes.count + 1)))
            }
        }
        return bytes
    }

    static func residentKilobytes() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
}

/// SplitMix64: reproducible runs from a seed.
struct Generator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}
