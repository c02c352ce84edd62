// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "swift-kerberos",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Kerberos", targets: ["Kerberos", "KerberosEngine"]),
        .executable(name: "krb5-verifyd", targets: ["krb5-verifyd"]),
        .executable(name: "krb5-login", targets: ["krb5-login"]),
        // For the separate package in Benchmarks/ only: the wire formats, the result cache and TOTP. Not a stable API.
        .library(name: "_KerberosLoginInternals", targets: ["KerberosSecrets", "LoginProtocol", "LoginService", "TOTP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        // Already in the graph through swift-nio; named here for FileDescriptor and Errno.
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // MIT krb5 (Debian libkrb5-dev) as a Clang module.
        .systemLibrary(name: "CKrb5", providers: [.apt(["libkrb5-dev"])]),
        // OpenSSL's libcrypto, for LoginService's string-to-key and password digests.
        .systemLibrary(name: "COpenSSL", providers: [.apt(["libssl-dev"])]),
        // prctl(2), which is variadic, behind fixed-signature wrappers (the daemon's PR_SET_DUMPABLE).
        .systemLibrary(name: "CProcessControl"),
        // The AES-SHA1 string-to-key (PBKDF2 on the CPU's SHA extensions), which also stands in for libk5crypto's in
        // the process, so MIT's own exchanges make their password keys with it (docs/engine.md, "One key per login").
        .target(name: "CStringToKey", linkerSettings: [.linkedLibrary("crypto"), .linkedLibrary("krb5")]),

        // Without C: wiped secret memory, the OTP and PKINIT questions that ask for secrets and the answers
        // that carry them, KerberosTime, the package's lock and its thread starter. Shared by the library and the
        // wire formats. Nothing below krb5-verifyd imports Foundation: krb5-login starts once per login.
        .target(name: "KerberosSecrets", swiftSettings: strict),

        // The binding: typed Swift over krb5's objects and its initial-credentials API, one file per krb5 object, with
        // the blocking calls (re-exports KerberosSecrets). No network of its own, no threads.
        .target(
            name: "Kerberos",
            dependencies: ["CKrb5", "CStringToKey", "KerberosSecrets", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),

        // The engine over the binding: the non-blocking client (KerberosClient), its worker threads, the KDC locator,
        // the transport on SwiftNIO, DNS and kpasswd (re-exports Kerberos).
        .target(
            name: "KerberosEngine",
            dependencies: [
                "Kerberos", "CKrb5", "CStringToKey",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        // The wire formats of krb5-verifyd and krb5-login: saslauthd frames and JSON lines. No krb5 here.
        .target(name: "LoginProtocol", dependencies: ["KerberosSecrets"], swiftSettings: strict),

        // One verified login as a replayable conversation; shared by the daemon and the helper.
        // (libcrypto for the string-to-key: its PBKDF2 is several times faster than libk5crypto's; not swift-crypto,
        // which would bring Foundation into krb5-login's start-up.)
        .target(
            name: "LoginService",
            dependencies: ["Kerberos", "KerberosEngine", "KerberosSecrets", "LoginProtocol", "COpenSSL", "CStringToKey"],
            swiftSettings: strict
        ),

        // krb5-verifyd: listeners, worker pool, limits, metrics.
        .target(
            name: "VerifyDaemon",
            dependencies: [
                "LoginService", "LoginProtocol", "KerberosSecrets", "Kerberos", "CProcessControl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "krb5-verifyd",
            dependencies: ["VerifyDaemon", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),

        // krb5-login: stdin front ends and exit codes.
        .target(name: "LoginHelper", dependencies: ["LoginService", "LoginProtocol", "KerberosSecrets", "Kerberos", .product(name: "SystemPackage", package: "swift-system")], swiftSettings: strict),
        .executableTarget(
            name: "krb5-login",
            dependencies: ["LoginHelper", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict,
            // The toolchain's lld rather than gold: a smaller binary that loads about 0.2 ms faster per login.
            linkerSettings: [.unsafeFlags(["-use-ld=lld"], .when(platforms: [.linux]))]
        ),

        // RFC 6238 one-time codes, for the tests, the soak harness and the demo of OTP logins.
        .target(name: "TOTP", swiftSettings: strict),

        // Benchmarks (make bench): the C reference loop and our load generator.
        .executableTarget(name: "krb5-reference", linkerSettings: [.linkedLibrary("krb5"), .linkedLibrary("pthread")]),
        .executableTarget(
            name: "krb5-bench",
            dependencies: ["Kerberos", "KerberosEngine", "LoginProtocol", "LoginService", "TOTP", "CStringToKey", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),

        // make fuzz: libFuzzer targets for every parser of network and client bytes (built with -sanitize=fuzzer,address
        // -DFUZZING; an ordinary build replays inputs). docs/fuzzing.md.
        .executableTarget(
            name: "krb5-fuzz",
            dependencies: ["Kerberos", "KerberosEngine", "LoginProtocol", "VerifyDaemon", .product(name: "NIOCore", package: "swift-nio"),
                           .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: strict
        ),

        // The live test realm (Docker/kdc/realm.sh) as seen from the test suites.
        .target(name: "TestRealm", dependencies: ["Kerberos", "KerberosEngine", "TOTP", "LoginProtocol", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio")],
                path: "Tests/TestRealm", swiftSettings: strict),

        .testTarget(
            name: "KerberosTests",
            dependencies: ["Kerberos", "KerberosEngine", "CKrb5", "CStringToKey", "TestRealm", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KerberosEngineTests",
            dependencies: ["KerberosEngine", "Kerberos", "CKrb5", "CStringToKey", "TestRealm", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                           .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(name: "KerberosSecretsTests", dependencies: ["KerberosSecrets"], swiftSettings: strict),
        .testTarget(name: "LoginProtocolTests", dependencies: ["LoginProtocol", "KerberosSecrets"], swiftSettings: strict),
        .testTarget(name: "LoginServiceTests", dependencies: ["LoginService", "LoginProtocol", "Kerberos", "CKrb5", "COpenSSL", "CStringToKey", "TestRealm"], swiftSettings: strict),
        .testTarget(name: "TOTPTests", dependencies: ["TOTP"], swiftSettings: strict),
        .testTarget(
            name: "VerifyDaemonTests",
            dependencies: ["VerifyDaemon", "TestRealm", "CKrb5", .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                           .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(name: "LoginHelperTests", dependencies: ["LoginHelper", "VerifyDaemon", "TestRealm"], swiftSettings: strict),
    ]
)
