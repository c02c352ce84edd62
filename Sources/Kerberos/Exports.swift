// The C-free values the library's API is made of (``Secret``, ``KerberosTime``, the OTP and PKINIT questions
// and answers) live in KerberosSecrets, which the wire formats use without linking krb5; `import Kerberos`
// brings them too. Nothing here imports Foundation (see ``KerberosTime``).
@_exported public import KerberosSecrets

