// The engine's API is made of the binding's values (Principal, InitialCredentialsSetup, Secret, KerberosError):
// `import KerberosEngine` brings them too.
@_exported public import Kerberos
