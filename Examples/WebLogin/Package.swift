// swift-tools-version: 6.2
// A web app that logs its users in against Kerberos through the library: HTTP Basic, and a login form with a session
// and a one-time-password step. docs/web.md walks through it; the tests in Tests/VerifyDaemonTests/ExampleAppTests.swift
// build it and drive it with curl and headless Chromium.
import PackageDescription

let package = Package(
    name: "WebLogin",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-kerberos", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(
            name: "WebLoginApp",
            dependencies: [
                .product(name: "Kerberos", package: "swift-kerberos"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
        .executableTarget(
            name: "WebLogin",
            dependencies: ["WebLoginApp", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
    ]
)
