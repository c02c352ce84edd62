/// This package's version, shown by `--version` of `krb5-verifyd` and `krb5-login`.
public enum KerberosVersion {
    /// The version, such as `0.1.0`.
    public static let current = "0.1.0"
}
