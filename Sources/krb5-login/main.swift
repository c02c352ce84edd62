print("krb5-login")
