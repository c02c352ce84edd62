// The C-free values the library's API is made of (``Secret``, the OTP and PKINIT questions and answers)
// live in KerberosSecrets, which the wire formats use without linking krb5; `import Kerberos` brings them too.
@_exported public import KerberosSecrets

// Date, the type of the API's times (ticket lifetimes, keytab timestamps): from FoundationEssentials where the
// toolchain has it, so the binding does not link all of Foundation; re-exported once here for the module's files
// and its users.
#if canImport(FoundationEssentials)
@_exported public import struct FoundationEssentials.Date
#else
@_exported public import struct Foundation.Date
#endif
