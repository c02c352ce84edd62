#!/usr/bin/env bash
# make demo: the three front ends against a throwaway realm in $1.
set -euo pipefail
realm=$1
bin=$(swift build --show-bin-path)
set -a; . "$realm/realm.env"; set +a
flags=(--krb5-config "$KRB5_CONFIG_FILE" --keytab "$HOST_KEYTAB" --server-principal "$LOCALHOST_PRINCIPAL")

echo "== 1. Library password login with verification (krb5-login calls the Kerberos library in process)"
printf '%s\n%s\n' "$USER" "$USER_PASSWORD" | "$bin/krb5-login" "${flags[@]}" --ccache "FILE:$realm/demo.cc"
echo "   exit 0: $USER@$REALM authenticated and verified against $HOST_KEYTAB"
KRB5_CONFIG=$KRB5_CONFIG_FILE klist -c "FILE:$realm/demo.cc" | sed 's/^/   /'
printf '%s\n%s\n' "$USER" "wrong-password" | "$bin/krb5-login" "${flags[@]}" 2>&1 | sed 's/^/   /' || true

echo "== 2. OTP through the conversation helper (anonymous PKINIT armor → FAST → OTP → FreeRADIUS)"
code=$(python3 -c "
import base64,hashlib,hmac,struct,time
k=base64.b32decode('$OTP_SECRET'); t=time.time()
time.sleep(31-t%30 if t%30>26 else 0)
h=hmac.new(k,struct.pack('>Q',int(time.time())//30),hashlib.sha1).digest(); o=h[19]&15
print('%06d'%((struct.unpack('>I',h[o:o+4])[0]&0x7fffffff)%1000000))")
printf '{"type":"login","principal":"%s"}\n{"type":"answers","id":1,"answers":{"otp":{"token":0,"value":"%s"}}}\n' "$OTP_USER" "$code" |
    "$bin/krb5-login" "${flags[@]}" --conversation --armor anonymous | sed 's/^/   /'

echo "== 3. saslauthd protocol through krb5-verifyd, checked with Cyrus testsaslauthd"
sock=$realm/mux
"$bin/krb5-verifyd" --sasl-socket "$sock" "${flags[@]}" --log-level warning &
daemon=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
testsaslauthd -f "$sock" -u "$USER" -p "$USER_PASSWORD" | sed 's/^/   /'
testsaslauthd -f "$sock" -u "$USER" -p wrong-password | sed 's/^/   /' || true
kill -TERM $daemon; wait $daemon
echo "== done"
