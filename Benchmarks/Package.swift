// swift-tools-version: 6.1
// Microbenchmarks of the hot paths that need no KDC (make bench-micro), with ordo-one/benchmark.
// A package of its own so the main build and CI never fetch or build the benchmark dependency.
import PackageDescription

let package = Package(
    name: "swift-kerberos-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-kerberos", path: ".."),
        // MallocInterposer counts mallocs without jemalloc; naming the trait also leaves the default
        // RuntimeInterposer trait (and the package it needs) off.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPaths",
            dependencies: [
                .product(name: "Kerberos", package: "swift-kerberos"),
                .product(name: "_KerberosLoginInternals", package: "swift-kerberos"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/HotPaths",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
