/// This package's version, shown by `--version` of `krb5-verifyd` and `krb5-login`.
public enum KerberosVersion {
    public static let current = "0.1.0"
}
