print("krb5-verifyd")
