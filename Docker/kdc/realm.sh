#!/usr/bin/env bash
# A throwaway MIT Kerberos realm on 127.0.0.1: krb5kdc, kadmind (kpasswd), FreeRADIUS (OTP), SoftHSM
# (smart card), PKINIT certificates and a rogue KDC of the same realm name; on request a replica KDC fed by
# kprop/kpropd.
#   realm.sh up DIR | down DIR | run DIR | kadmin DIR ARGS... | add-otp-user DIR NAME | new-token DIR LABEL PIN
#   realm.sh replica DIR | propagate DIR | restart-kdc DIR primary|replica
set -euo pipefail

REALM=${REALM:-KRB5.TEST}
BIND_ADDR=${BIND_ADDR:-127.0.0.1}
SCRIPT=$(readlink -f "$0")
SOFTHSM_MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
PATH=$PATH:/usr/sbin:/sbin

die() { echo "realm.sh: $*" >&2; exit 1; }

# The daemons started here must not inherit the caller's descriptors: Foundation's Process (the Swift
# suites' TestRealm.run) learns that its child exited when a socket it passed down closes, and a KDC holding
# a copy keeps it open forever. Keep stdin/out/err and bash's own script descriptor (255).
for fd in $(ls /proc/$$/fd); do
    case $fd in 0|1|2|255) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
done

free_ports() { # N free TCP+UDP ports on the bind address
    python3 - "$1" "$BIND_ADDR" <<'EOF'
import socket, sys
n, addr = int(sys.argv[1]), sys.argv[2]
socks, ports = [], []
while len(ports) < n:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind((addr, 0))
    p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try: u.bind((addr, p))
    except OSError: t.close(); continue
    socks += [t, u]; ports.append(p)
print(" ".join(map(str, ports)))
EOF
}

load_env() { [ -f "$1/realm.env" ] || die "no realm in $1"; set -a; . "$1/realm.env"; set +a; }

kadmin_local() { # DIR ARGS... against the real database
    local dir=$1; shift
    KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/db/kdc.conf" kadmin.local -r "$REALM" "$@"
}

write_kdc_conf() { # DIR DBDIR KDC_PORT KADMIN_PORT KPASSWD_PORT RADIUS_PORT PKINIT(yes/no)
    local dir=$1 db=$2
    cat > "$db/kdc.conf" <<EOF
[kdcdefaults]
 kdc_listen = $BIND_ADDR:$3
 kdc_tcp_listen = $BIND_ADDR:$3

[realms]
 $REALM = {
  database_name = $db/principal
  key_stash_file = $db/stash
  acl_file = $db/kadm5.acl
  admin_keytab = FILE:$db/kadm5.keytab
  kadmind_listen = $BIND_ADDR:$4
  kpasswd_listen = $BIND_ADDR:$5
  max_life = 10h
  max_renewable_life = 7d
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  pkinit_identity = FILE:$dir/kdc.pem,$dir/kdckey.pem
  pkinit_anchors = FILE:$dir/ca.pem
  pkinit_allow_upn = false
 }

[otp]
 RADIUS = {
  server = 127.0.0.1:$6
  secret = $dir/radius.secret
  timeout = 2
  retries = 2
  strip_realm = true
 }

[logging]
 kdc = FILE:$db/kdc.log
 admin_server = FILE:$db/kadmind.log
EOF
    echo "*/admin@$REALM *" > "$db/kadm5.acl"
}

write_client_conf() { # FILE KDC_PORT ANCHOR [ADMIN_PORT KPASSWD_PORT [OTHER_KDC_PORT]]
    local other_realm="" capaths=""
    if [ -n "${6:-}" ]; then
        other_realm="$OTHER_REALM = {
  kdc = 127.0.0.1:$6
 }"
        capaths="
[capaths]
 $OTHER_REALM = {
  $REALM = .
 }
 $REALM = {
  $OTHER_REALM = .
 }"
    fi
    cat > "$1" <<EOF
[libdefaults]
 default_realm = $REALM
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 dns_canonicalize_hostname = false
 forwardable = false

[realms]
 $REALM = {
  kdc = 127.0.0.1:$2
  ${4:+admin_server = 127.0.0.1:$4}
  ${5:+kpasswd_server = 127.0.0.1:$5}
  pkinit_anchors = FILE:$3
 }
 $other_realm

[domain_realm]
 localhost = $REALM
 $HOSTNAME_FQDN = $REALM
$capaths
EOF
}

write_other_kdc_conf() { # DIR PORT: the second realm, which trusts ours and is trusted by it
    cat > "$1/other/kdc.conf" <<EOF
[kdcdefaults]
 kdc_listen = $BIND_ADDR:$2
 kdc_tcp_listen = $BIND_ADDR:$2

[realms]
 $OTHER_REALM = {
  database_name = $1/other/principal
  key_stash_file = $1/other/stash
  acl_file = $1/other/kadm5.acl
  supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
 }

[logging]
 kdc = FILE:$1/other/kdc.log
EOF
    : > "$1/other/kadm5.acl"
}

make_certs() { # DIR
    local dir=$1
    cat > "$dir/openssl.cnf" <<'EOF'
[req]
prompt = no
distinguished_name = dn
[dn]
CN = ${ENV::SUBJECT}
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[kdc_ext]
basicConstraints = CA:FALSE
keyUsage = digitalSignature,keyEncipherment,keyAgreement
extendedKeyUsage = 1.3.6.1.5.2.3.5
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = otherName:1.3.6.1.5.2.2;SEQUENCE:kdc_princ
[kdc_princ]
realm = EXP:0,GeneralString:${ENV::REALM}
principal_name = EXP:1,SEQUENCE:kdc_name
[kdc_name]
name_type = EXP:0,INTEGER:2
name_string = EXP:1,SEQUENCE:kdc_parts
[kdc_parts]
part1 = GeneralString:krbtgt
part2 = GeneralString:${ENV::REALM}
[client_ext]
basicConstraints = CA:FALSE
keyUsage = digitalSignature,keyEncipherment,keyAgreement
extendedKeyUsage = 1.3.6.1.5.2.3.4
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
subjectAltName = otherName:1.3.6.1.5.2.2;SEQUENCE:client_princ
[client_princ]
realm = EXP:0,GeneralString:${ENV::REALM}
principal_name = EXP:1,SEQUENCE:client_name
[client_name]
name_type = EXP:0,INTEGER:1
name_string = EXP:1,SEQUENCE:client_parts
[client_parts]
part1 = GeneralString:${ENV::CLIENT}
EOF
    (
        cd "$dir"
        export REALM CLIENT=pkuser OPENSSL_CONF="$dir/openssl.cnf"
        SUBJECT="Test realm CA" openssl req -x509 -newkey rsa:2048 -nodes -keyout cakey.pem -out ca.pem -days 30 -extensions ca_ext 2>/dev/null
        SUBJECT="Unrelated CA" openssl req -x509 -newkey rsa:2048 -nodes -keyout othercakey.pem -out otherca.pem -days 30 -extensions ca_ext 2>/dev/null
        SUBJECT="KDC" openssl req -new -newkey rsa:2048 -nodes -keyout kdckey.pem -out kdc.csr 2>/dev/null
        SUBJECT="KDC" openssl x509 -req -in kdc.csr -CA ca.pem -CAkey cakey.pem -CAcreateserial -out kdc.pem -days 30 -extfile openssl.cnf -extensions kdc_ext 2>/dev/null
        SUBJECT="pkuser" openssl req -new -newkey rsa:2048 -nodes -keyout pkuser-plain.pem -out pkuser.csr 2>/dev/null
        SUBJECT="pkuser" openssl x509 -req -in pkuser.csr -CA ca.pem -CAkey cakey.pem -CAcreateserial -out pkuser.pem -days 30 -extfile openssl.cnf -extensions client_ext 2>/dev/null
        openssl pkey -in pkuser-plain.pem -aes256 -passout pass:"$PKINIT_KEY_PASSPHRASE" -out pkuser-key.pem
        rm -f ./*.csr
        chmod 600 cakey.pem othercakey.pem kdckey.pem pkuser-plain.pem pkuser-key.pem
    )
}

softhsm_token() { # DIR LABEL PIN → prints the PKCS11 identity
    local dir=$1 label=$2 pin=$3
    export SOFTHSM2_CONF=$dir/softhsm2.conf
    softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$TOKEN_SO_PIN" >/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$dir/pkuser-plain.pem" -out "$dir/.token-key.p8"
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$label" --login --pin "$pin" \
        --write-object "$dir/.token-key.p8" --type privkey --id 01 --label pkuser >/dev/null 2>&1
    openssl x509 -in "$dir/pkuser.pem" -outform DER -out "$dir/.token-cert.der"
    pkcs11-tool --module "$SOFTHSM_MODULE" --token-label "$label" --login --pin "$pin" \
        --write-object "$dir/.token-cert.der" --type cert --id 01 --label pkuser >/dev/null 2>&1
    rm -f "$dir/.token-key.p8" "$dir/.token-cert.der"
    echo "PKCS11:module_name=$SOFTHSM_MODULE:token=$label"
}

write_radius() { # DIR PORT
    local dir=$1 rad=$1/radius
    mkdir -p "$rad"
    cat > "$rad/radiusd.conf" <<EOF
prefix = /usr
localstatedir = $rad
logdir = $rad
run_dir = $rad
raddbdir = $rad
libdir = /usr/lib/freeradius
pidfile = $rad/radiusd.pid
max_request_time = 5
cleanup_delay = 1
max_requests = 4096
security {
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = no
}
log {
    destination = files
    file = $dir/radius.log
    auth = no
}
\$INCLUDE clients.conf
modules {
    files {
        filename = \${raddbdir}/users
    }
    totp {
    }
}
server default {
    listen {
        type = auth
        ipaddr = 127.0.0.1
        port = $2
    }
    authorize {
        update request {
            &TOTP-Password := &User-Password
        }
        files
        if (&control:TOTP-Secret) {
            update control {
                &Auth-Type := totp
            }
        }
    }
    authenticate {
        Auth-Type totp {
            totp
        }
    }
}
EOF
    cat > "$rad/clients.conf" <<EOF
client localhost {
    ipaddr = 127.0.0.1
    secret = $RADIUS_SECRET
    require_message_authenticator = no
}
EOF
    : > "$rad/users"
    chmod 640 "$rad"/*.conf "$rad/users"
    chmod 750 "$rad"
}

add_radius_user() { # DIR NAME SECRET
    echo "$2 TOTP-Secret := \"$3\"" >> "$1/radius/users"
}

start_radius() { # DIR
    local dir=$1
    freeradius -d "$dir/radius" -f -l "$dir/radius.log" </dev/null >/dev/null 2>&1 9>&- &
    echo $! > "$dir/radius.pid"
}

stop_pid() { # PIDFILE
    [ -f "$1" ] || return 0
    local pid; pid=$(cat "$1")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

wait_kdc() { # CONFIG USER PASSWORD — until an AS exchange works
    for _ in $(seq 100); do
        if echo "$3" | KRB5_CONFIG=$1 KRB5CCNAME=MEMORY:wait kinit "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

# --- Replica KDC -------------------------------------------------------------------------------------------
# kpropd's standalone mode binds the wildcard address (kpropd.c get_wildcard_addr); to stay on 127.0.0.1 it
# runs in its inetd mode instead: this listener accepts on 127.0.0.1:PORT and starts one kpropd per
# connection with the socket as its standard input, as inetd's "nowait" service would.
write_kpropd_listener() { # FILE
    cat > "$1" <<'EOF'
import os, signal, socket, subprocess, sys
port, ready, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def reap(*_):  # not SIG_IGN: kpropd would inherit it and could not wait for its kdb5_util
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0: pass
    except ChildProcessError: pass
signal.signal(signal.SIGCHLD, reap)
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(5)
open(ready, "w").close()
while True:
    connection, _ = listener.accept()
    subprocess.Popen(args, stdin=connection)
    connection.close()
EOF
}

start_kpropd() { # DIR
    local dir=$1 rep=$1/replica
    rm -f "$rep/kpropd.ready"
    KRB5_CONFIG=$rep/krb5-kprop.conf KRB5_KDC_PROFILE=$rep/kdc.conf \
        python3 "$rep/kpropd-listen.py" "$KPROPD_PORT" "$rep/kpropd.ready" \
        kpropd -r "$REALM" -s "$rep/kprop.keytab" -f "$rep/from_primary" -a "$rep/kpropd.acl" \
        </dev/null >>"$rep/kpropd.log" 2>&1 9>&- &
    echo $! > "$rep/kpropd.pid"
    for _ in $(seq 100); do [ -f "$rep/kpropd.ready" ] && return 0; sleep 0.1; done
    die "the kpropd listener did not start (see $rep/kpropd.log)"
}

start_kdc() { # DIR primary|replica
    local dir=$1
    case $2 in
        primary) KRB5_KDC_PROFILE=$dir/db/kdc.conf KRB5_CONFIG=$dir/krb5.conf krb5kdc -r "$REALM" -P "$dir/krb5kdc.pid"
                 wait_kdc "$dir/krb5.conf" "$USER" "$USER_PASSWORD" || die "the primary KDC did not come up" ;;
        replica) KRB5_KDC_PROFILE=$dir/replica/kdc.conf KRB5_CONFIG=$dir/krb5.conf krb5kdc -r "$REALM" -P "$dir/replica/krb5kdc.pid"
                 wait_kdc "$dir/krb5-replica.conf" "$USER" "$USER_PASSWORD" || { tail -n 20 "$dir/replica/kdc.log" >&2; die "the replica KDC did not come up"; } ;;
        *) die "restart-kdc: primary or replica, not '$2'" ;;
    esac
}

propagate() { # DIR: a full dump of the primary, sent by the real kprop to kpropd, which loads it
    local dir=$1 rep=$1/replica
    KRB5_CONFIG=$dir/krb5.conf KRB5_KDC_PROFILE=$dir/db/kdc.conf kdb5_util dump "$rep/primary.dump"
    KRB5_TRACE=$rep/kprop.trace KRB5_CONFIG=$rep/krb5-kprop.conf \
        kprop -r "$REALM" -f "$rep/primary.dump" -P "$KPROPD_PORT" -s "$rep/kprop.keytab" localhost >>"$rep/kprop.log" 2>&1 \
        || { tail -n 5 "$rep/kprop.log" >&2; die "kprop failed"; }
}

replica() {
    local dir; dir=$(readlink -f "$1")
    local rep=$dir/replica
    load_env "$dir"
    [ -e "$rep" ] && die "$rep exists: the realm has a replica already"
    mkdir -p "$rep"
    read -r REPLICA_KDC_PORT KPROPD_PORT <<< "$(free_ports 2)"
    HOSTNAME_FQDN=${HOST_PRINCIPAL#host/}; HOSTNAME_FQDN=${HOSTNAME_FQDN%@*}

    # The replica's KDC profile: its own database, stash and log; no kadmind (replicas are read-only).
    write_kdc_conf "$dir" "$rep" "$REPLICA_KDC_PORT" 0 0 "$RADIUS_PORT"
    sed -i '/kadmind_listen\|kpasswd_listen/d' "$rep/kdc.conf"
    # The database arrives encrypted in the master key: the replica needs the primary's stash (MIT: copy it).
    cp "$dir/db/stash" "$rep/stash"; chmod 600 "$rep/stash"

    # Clients: both KDCs, primary first; and the replica alone (to prove what it serves).
    sed "s|^  kdc = 127.0.0.1:$KDC_PORT\$|  kdc = 127.0.0.1:$KDC_PORT\n  kdc = 127.0.0.1:$REPLICA_KDC_PORT|" \
        "$dir/krb5.conf" > "$dir/krb5-failover.conf"
    sed "s|^  kdc = 127.0.0.1:$KDC_PORT\$|  kdc = 127.0.0.1:$REPLICA_KDC_PORT|" "$dir/krb5.conf" > "$dir/krb5-replica.conf"
    grep -q "127.0.0.1:$REPLICA_KDC_PORT" "$dir/krb5-failover.conf" || die "could not list the replica in krb5-failover.conf"

    # kprop authenticates as host/<gethostname()> (krb5_sname_to_principal(NULL), lowercased; no DNS here as
    # dns_canonicalize_hostname = false) to host/<the name it is given>. It is given "localhost", which
    # resolves to loopback everywhere; kpropd's own name is host/<gethostname()>, so kpropd accepts any host/*
    # key in its keytab (ignore_acceptor_hostname) and the keytab holds host/localhost.
    local kprop_client; kprop_client="host/$(hostname | tr '[:upper:]' '[:lower:]')@$REALM"
    sed 's/^\[libdefaults\]$/[libdefaults]\n ignore_acceptor_hostname = true/' "$dir/krb5.conf" > "$rep/krb5-kprop.conf"
    kadmin_local "$dir" getprinc "$kprop_client" >/dev/null 2>&1 || kadmin_local "$dir" addprinc -randkey "$kprop_client" >/dev/null
    # -norandkey: the keys stay those of host.keytab, which keeps verifying logins.
    local principals=("$kprop_client"); [ "$kprop_client" != "$LOCALHOST_PRINCIPAL" ] && principals+=("$LOCALHOST_PRINCIPAL")
    kadmin_local "$dir" ktadd -norandkey -k "$rep/kprop.keytab" "${principals[@]}" >/dev/null
    echo "$kprop_client" > "$rep/kpropd.acl"

    write_kpropd_listener "$rep/kpropd-listen.py"
    cat >> "$dir/realm.env" <<EOF
REPLICA_KDC_PORT=$REPLICA_KDC_PORT
KPROPD_PORT=$KPROPD_PORT
REPLICA_DIR=$rep
REPLICA_KDC_PROFILE=$rep/kdc.conf
KDC_PID_FILE=$dir/krb5kdc.pid
REPLICA_KDC_PID_FILE=$rep/krb5kdc.pid
KPROPD_PID_FILE=$rep/kpropd.pid
KPROP_PRINCIPAL=$kprop_client
KPROP_KEYTAB=$rep/kprop.keytab
FAILOVER_KRB5_CONFIG=$dir/krb5-failover.conf
REPLICA_KRB5_CONFIG=$dir/krb5-replica.conf
EOF
    load_env "$dir"

    # A principal made now, before the first propagation, must be in the replica's database afterwards.
    local canary; canary="propagation-canary-$(date +%s)"
    kadmin_local "$dir" addprinc -randkey "$canary" >/dev/null
    start_kpropd "$dir"
    propagate "$dir"
    KRB5_CONFIG=$dir/krb5.conf KRB5_KDC_PROFILE=$rep/kdc.conf kadmin.local -r "$REALM" getprinc "$canary" >/dev/null 2>&1 \
        || die "kprop reported success but $canary is not in the replica's database"
    start_kdc "$dir" replica
    echo "replica KDC up (127.0.0.1:$REPLICA_KDC_PORT, kpropd on 127.0.0.1:$KPROPD_PORT); clients: $dir/krb5-failover.conf"
}

restart_kdc() { # DIR primary|replica: start a KDC again after it was stopped or killed
    local dir=$1 pidfile
    case $2 in primary) pidfile=$dir/krb5kdc.pid ;; replica) pidfile=$dir/replica/krb5kdc.pid ;; *) die "restart-kdc: primary or replica" ;; esac
    # A pid file outlives a SIGKILLed KDC, whose pid may be a zombie for a moment or reused: only a live
    # krb5kdc counts as running.
    if [ -f "$pidfile" ]; then
        local pid state; pid=$(cat "$pidfile")
        state=$({ sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null || true; } | cut -d' ' -f1)
        [ -n "$state" ] && [ "$state" != Z ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = krb5kdc ] && die "the $2 KDC is running"
    fi
    start_kdc "$dir" "$2"
}

up() {
    local dir=$1
    [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ] && die "$dir exists and is not empty"
    mkdir -p "$dir/db" "$dir/rogue" "$dir/other" "$dir/tokens"
    dir=$(readlink -f "$dir")
    HOSTNAME_FQDN=$(hostname -f 2>/dev/null || hostname)
    HOSTNAME_FQDN=${HOSTNAME_FQDN,,}
    read -r KDC_PORT KADMIN_PORT KPASSWD_PORT RADIUS_PORT ROGUE_KDC_PORT OTHER_KDC_PORT <<< "${FIXED_PORTS:-$(free_ports 6)}"
    [ -n "$OTHER_KDC_PORT" ] || die "FIXED_PORTS needs six ports: KDC KADMIN KPASSWD RADIUS ROGUE OTHER"
    OTHER_REALM=OTHER.$REALM OTHER_USER=xuser OTHER_USER_PASSWORD=xuser-Passw0rd
    USER=alice USER_PASSWORD=alice-Passw0rd ROGUE_PASSWORD=attacker-Chosen1
    PREAUTH_USER=palice PREAUTH_PASSWORD=palice-Passw0rd
    DISABLED_USER=disabled DISABLED_PASSWORD=disabled-Passw0rd EXPIRED_USER=expired EXPIRED_PASSWORD=expired-Passw0rd
    KEYTAB_CLIENT=kcuser PKINIT_USER=pkuser PKINIT_KEY_PASSPHRASE=pkinit-Phrase1
    TOKEN_LABEL=scard TOKEN_PIN=123456 TOKEN_SO_PIN=87654321 OTP_USER=otpuser OTP_SECRET=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP
    RADIUS_SECRET=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    local master; master=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

    # A pre-authentication mechanism of the realm's own, so the tests can see a responder question MIT does not know.
    gcc -shared -fPIC -O2 -o "$dir/preauth-question.so" "$(dirname "$SCRIPT")/preauth-question.c"
    write_kdc_conf "$dir" "$dir/db" "$KDC_PORT" "$KADMIN_PORT" "$KPASSWD_PORT" "$RADIUS_PORT"
    printf '\n[plugins]\n kdcpreauth = {\n  module = question:%s\n }\n' "$dir/preauth-question.so" >> "$dir/db/kdc.conf"
    write_kdc_conf "$dir" "$dir/rogue" "$ROGUE_KDC_PORT" 0 0 "$RADIUS_PORT"
    sed -i '/kadmind_listen\|kpasswd_listen\|pkinit_/d' "$dir/rogue/kdc.conf"
    ln -sf db/kdc.conf "$dir/kdc.conf"
    write_client_conf "$dir/krb5.conf" "$KDC_PORT" "$dir/ca.pem" "$KADMIN_PORT" "$KPASSWD_PORT" "$OTHER_KDC_PORT"
    write_other_kdc_conf "$dir" "$OTHER_KDC_PORT"
    printf '\n[plugins]\n clpreauth = {\n  module = question:%s\n }\n' "$dir/preauth-question.so" >> "$dir/krb5.conf"
    write_client_conf "$dir/krb5-rogue.conf" "$ROGUE_KDC_PORT" "$dir/ca.pem"
    write_client_conf "$dir/krb5-otherca.conf" "$KDC_PORT" "$dir/otherca.pem"
    echo "$RADIUS_SECRET" > "$dir/radius.secret"; chmod 600 "$dir/radius.secret"
    make_certs "$dir"

    export KRB5_CONFIG=$dir/krb5.conf
    KRB5_KDC_PROFILE=$dir/db/kdc.conf kdb5_util create -s -r "$REALM" -P "$master" >/dev/null
    local k="kadmin_local $dir"
    HOST_PRINCIPAL="host/$HOSTNAME_FQDN@$REALM" LOCALHOST_PRINCIPAL="host/localhost@$REALM"
    OTHER_SERVICE_PRINCIPAL="svc/other@$REALM"
    # Users as MIT's addprinc makes them (its default_principal_flags have no preauth: the KDC answers the first
    # AS-REQ with an AS-REP), and one that requires pre-authentication, as Debian's template, AD and FreeIPA do.
    # Smart-card and OTP users need it for their mechanism to be offered.
    $k addprinc -pw "$USER_PASSWORD" "$USER" >/dev/null
    $k addprinc -pw "$PREAUTH_PASSWORD" +requires_preauth "$PREAUTH_USER" >/dev/null
    $k addprinc -pw "$DISABLED_PASSWORD" -allow_tix "$DISABLED_USER" >/dev/null
    $k addprinc -pw "$EXPIRED_PASSWORD" +needchange "$EXPIRED_USER" >/dev/null
    $k addprinc -randkey "$KEYTAB_CLIENT" >/dev/null
    $k addprinc -randkey WELLKNOWN/ANONYMOUS >/dev/null
    $k addprinc -nokey +requires_preauth "$PKINIT_USER" >/dev/null
    $k addprinc -randkey "$LOCALHOST_PRINCIPAL" >/dev/null
    [ "$HOST_PRINCIPAL" != "$LOCALHOST_PRINCIPAL" ] && $k addprinc -randkey "$HOST_PRINCIPAL" >/dev/null
    $k addprinc -randkey "$OTHER_SERVICE_PRINCIPAL" >/dev/null
    $k ktadd -k "$dir/stale.keytab" "$LOCALHOST_PRINCIPAL" >/dev/null
    $k ktadd -k "$dir/host.keytab" "$LOCALHOST_PRINCIPAL" >/dev/null       # new kvno: stale.keytab is now stale
    [ "$HOST_PRINCIPAL" != "$LOCALHOST_PRINCIPAL" ] && $k ktadd -k "$dir/host.keytab" "$HOST_PRINCIPAL" >/dev/null
    $k ktadd -k "$dir/other.keytab" "$OTHER_SERVICE_PRINCIPAL" >/dev/null
    $k ktadd -k "$dir/client.keytab" "$KEYTAB_CLIENT" >/dev/null
    printf '\x05\x02' > "$dir/empty.keytab"                                 # a keytab file with no entries
    $k addprinc -nokey +requires_preauth "$OTP_USER" >/dev/null
    $k setstr "$OTP_USER" otp '[{"type":"RADIUS"}]' >/dev/null
    QUESTION_USER=quser QUESTION_PASSWORD=quser-Passw0rd
    $k addprinc -pw "$QUESTION_PASSWORD" +requires_preauth "$QUESTION_USER" >/dev/null
    $k setstr "$QUESTION_USER" question yes >/dev/null    # offered preauth-question.c's mechanism

    # The rogue KDC: same realm name, its own database, the attacker's password for the user.
    KRB5_KDC_PROFILE=$dir/rogue/kdc.conf kdb5_util create -s -r "$REALM" -P "rogue-$master" >/dev/null
    KRB5_CONFIG=$dir/krb5-rogue.conf KRB5_KDC_PROFILE=$dir/rogue/kdc.conf kadmin.local -r "$REALM" addprinc -pw "$ROGUE_PASSWORD" "$USER" >/dev/null
    for p in "$LOCALHOST_PRINCIPAL" "$HOST_PRINCIPAL"; do
        KRB5_CONFIG=$dir/krb5-rogue.conf KRB5_KDC_PROFILE=$dir/rogue/kdc.conf kadmin.local -r "$REALM" addprinc -randkey "$p" >/dev/null 2>&1 || true
    done

    # The other realm: a user of its own, and a two-way trust with ours (the same krbtgt keys on both sides).
    local trust; trust=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    KRB5_KDC_PROFILE=$dir/other/kdc.conf kdb5_util create -s -r "$OTHER_REALM" -P "other-$master" >/dev/null
    KRB5_KDC_PROFILE=$dir/other/kdc.conf kadmin.local -r "$OTHER_REALM" addprinc -pw "$OTHER_USER_PASSWORD" "$OTHER_USER" >/dev/null
    local side side_realm tgt
    for side in other db; do
        side_realm=$REALM; [ $side = other ] && side_realm=$OTHER_REALM
        for tgt in "krbtgt/$REALM@$OTHER_REALM" "krbtgt/$OTHER_REALM@$REALM"; do
            KRB5_KDC_PROFILE=$dir/$side/kdc.conf kadmin.local -r "$side_realm" addprinc -pw "$trust-$tgt" "$tgt" >/dev/null
        done
    done

    cat > "$dir/softhsm2.conf" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
EOF
    PKCS11_IDENTITY=$(softhsm_token "$dir" "$TOKEN_LABEL" "$TOKEN_PIN")
    # SoftHSM2 has no PIN retry limit; this wrapper adds one so the PIN flags can be tested to "locked".
    mkdir -p "$dir/pinlock"
    gcc -shared -fPIC -O2 -o "$dir/pkcs11-pinlock.so" "$(dirname "$SCRIPT")/pkcs11-pinlock.c" -ldl -I/usr/include/p11-kit-1

    write_radius "$dir" "$RADIUS_PORT"
    add_radius_user "$dir" "$OTP_USER" "$OTP_SECRET"
    add_radius_user "$dir" DEFAULT "$OTP_SECRET"   # any other OTP principal shares the realm's secret

    cat > "$dir/realm.env" <<EOF
REALM=$REALM
KDC_PORT=$KDC_PORT
KADMIN_PORT=$KADMIN_PORT
KPASSWD_PORT=$KPASSWD_PORT
RADIUS_PORT=$RADIUS_PORT
ROGUE_KDC_PORT=$ROGUE_KDC_PORT
OTHER_KDC_PORT=$OTHER_KDC_PORT
OTHER_REALM=$OTHER_REALM
OTHER_USER=$OTHER_USER
OTHER_USER_PASSWORD=$OTHER_USER_PASSWORD
OTHER_KDC_PROFILE=$dir/other/kdc.conf
KRB5_CONFIG_FILE=$dir/krb5.conf
KRB5_ROGUE_CONFIG_FILE=$dir/krb5-rogue.conf
KRB5_OTHERCA_CONFIG_FILE=$dir/krb5-otherca.conf
KDC_PROFILE=$dir/db/kdc.conf
HOST_PRINCIPAL=$HOST_PRINCIPAL
LOCALHOST_PRINCIPAL=$LOCALHOST_PRINCIPAL
HOST_KEYTAB=$dir/host.keytab
OTHER_KEYTAB=$dir/other.keytab
STALE_KEYTAB=$dir/stale.keytab
EMPTY_KEYTAB=$dir/empty.keytab
OTHER_SERVICE_PRINCIPAL=$OTHER_SERVICE_PRINCIPAL
USER=$USER
USER_PASSWORD=$USER_PASSWORD
PREAUTH_USER=$PREAUTH_USER
PREAUTH_PASSWORD=$PREAUTH_PASSWORD
ROGUE_PASSWORD=$ROGUE_PASSWORD
DISABLED_USER=$DISABLED_USER
DISABLED_PASSWORD=$DISABLED_PASSWORD
EXPIRED_USER=$EXPIRED_USER
EXPIRED_PASSWORD=$EXPIRED_PASSWORD
KEYTAB_CLIENT=$KEYTAB_CLIENT
CLIENT_KEYTAB=$dir/client.keytab
CA_CERT=$dir/ca.pem
OTHER_CA_CERT=$dir/otherca.pem
PKINIT_USER=$PKINIT_USER
PKINIT_CERT=$dir/pkuser.pem
PKINIT_KEY=$dir/pkuser-key.pem
PKINIT_KEY_PLAIN=$dir/pkuser-plain.pem
PKINIT_KEY_PASSPHRASE=$PKINIT_KEY_PASSPHRASE
SOFTHSM2_CONF=$dir/softhsm2.conf
PKCS11_MODULE=$SOFTHSM_MODULE
TOKEN_LABEL=$TOKEN_LABEL
TOKEN_PIN=$TOKEN_PIN
TOKEN_SO_PIN=$TOKEN_SO_PIN
PKCS11_IDENTITY=$PKCS11_IDENTITY
PKCS11_LOCKING_MODULE=$dir/pkcs11-pinlock.so
PINLOCK_DIR=$dir/pinlock
OTP_USER=$OTP_USER
QUESTION_USER=$QUESTION_USER
QUESTION_PASSWORD=$QUESTION_PASSWORD
OTP_SECRET=$OTP_SECRET
RADIUS_SECRET=$RADIUS_SECRET
REALM_SCRIPT=$SCRIPT
REALM_DIR=$dir
EOF
    start "$dir"
}

start() { # DIR: start every daemon and wait until the realm answers
    local dir=$1
    load_env "$dir"
    KRB5_KDC_PROFILE=$dir/db/kdc.conf KRB5_CONFIG=$dir/krb5.conf krb5kdc -r "$REALM" -P "$dir/krb5kdc.pid"
    KRB5_KDC_PROFILE=$dir/db/kdc.conf KRB5_CONFIG=$dir/krb5.conf kadmind -r "$REALM" -P "$dir/kadmind.pid"
    KRB5_KDC_PROFILE=$dir/rogue/kdc.conf KRB5_CONFIG=$dir/krb5-rogue.conf krb5kdc -r "$REALM" -P "$dir/rogue.pid"
    KRB5_KDC_PROFILE=$dir/other/kdc.conf KRB5_CONFIG=$dir/krb5.conf krb5kdc -r "$OTHER_REALM" -P "$dir/other.pid"
    start_radius "$dir"
    if ! wait_kdc "$dir/krb5.conf" "$USER" "$USER_PASSWORD" || ! wait_kdc "$dir/krb5-rogue.conf" "$USER" "$ROGUE_PASSWORD" \
        || ! wait_kdc "$dir/krb5.conf" "$OTHER_USER@$OTHER_REALM" "$OTHER_USER_PASSWORD"; then
        tail -n 20 "$dir"/db/kdc.log "$dir"/rogue/kdc.log "$dir"/other/kdc.log >&2 || true
        down "$dir"; die "the KDCs did not come up"
    fi
    for _ in $(seq 50); do
        [ -f "$dir/radius/radiusd.pid" ] || [ -s "$dir/radius.log" ] && break
        sleep 0.1
    done
    kill -0 "$(cat "$dir/radius.pid")" 2>/dev/null || { tail -n 20 "$dir/radius.log" >&2; down "$dir"; die "FreeRADIUS did not start"; }
    if [ -f "$dir/replica/kdc.conf" ]; then start_kpropd "$dir"; start_kdc "$dir" replica; fi
    echo "realm $REALM up in $dir (KDC 127.0.0.1:$KDC_PORT)"
}

down() {
    local dir=$1
    [ -d "$dir" ] || return 0
    for p in krb5kdc kadmind rogue other radius replica/krb5kdc replica/kpropd; do stop_pid "$dir/$p.pid"; done
}

# A realm served from a container (make test-docker) has DIR/container-exec, which runs a command inside
# it: the administrative commands run there, against the database and tokens the container owns, so the
# host needs no MIT server tools or SoftHSM utilities. DIR has the same path inside and out.
case ${1:-} in
    kadmin|add-otp-user|new-token|replica|propagate|restart-kdc)
        if [ $# -ge 2 ] && [ -x "$2/container-exec" ] && [ -z "${REALM_IN_CONTAINER:-}" ]; then
            exec "$2/container-exec" /usr/local/bin/realm.sh "$@"
        fi ;;
esac

case ${1:-} in
    up) [ $# -eq 2 ] || die "usage: realm.sh up DIR"; up "$2" ;;
    down) [ $# -eq 2 ] || die "usage: realm.sh down DIR"; down "$2" ;;
    run)
        [ $# -eq 2 ] || die "usage: realm.sh run DIR"
        if [ -f "$2/realm.env" ]; then start "$2"; else up "$2"; fi
        trap 'down "$2"; exit 0' TERM INT
        while sleep 3600 & wait $!; do :; done ;;
    kadmin)
        [ $# -ge 3 ] || die "usage: realm.sh kadmin DIR ARGS..."
        dir=$2; shift 2; load_env "$dir"
        KRB5_CONFIG=$dir/krb5.conf KRB5_KDC_PROFILE=$dir/db/kdc.conf kadmin.local -r "$REALM" "$@" ;;
    add-otp-user)
        # OTP principals share the realm's TOTP secret through FreeRADIUS's DEFAULT entry, so adding one
        # needs no reload (FreeRADIUS ignores SIGHUP within 5 s of the last and for same-second changes).
        [ $# -eq 3 ] || die "usage: realm.sh add-otp-user DIR NAME"
        dir=$2; load_env "$dir"
        KRB5_CONFIG=$dir/krb5.conf KRB5_KDC_PROFILE=$dir/db/kdc.conf kadmin.local -r "$REALM" addprinc -nokey +requires_preauth "$3" >/dev/null
        KRB5_CONFIG=$dir/krb5.conf KRB5_KDC_PROFILE=$dir/db/kdc.conf kadmin.local -r "$REALM" setstr "$3" otp '[{"type":"RADIUS"}]' >/dev/null ;;
    new-token)
        [ $# -eq 4 ] || die "usage: realm.sh new-token DIR LABEL PIN"
        dir=$2; load_env "$dir"
        exec 9>"$dir/token.lock"; flock 9
        softhsm_token "$dir" "$3" "$4" ;;
    replica) [ $# -eq 2 ] || die "usage: realm.sh replica DIR"; replica "$2" ;;
    propagate)
        [ $# -eq 2 ] || die "usage: realm.sh propagate DIR"
        load_env "$2"; [ -n "${KPROPD_PORT:-}" ] || die "no replica in $2 (realm.sh replica DIR)"
        propagate "$(readlink -f "$2")" ;;
    restart-kdc)
        [ $# -eq 3 ] || die "usage: realm.sh restart-kdc DIR primary|replica"
        load_env "$2"; restart_kdc "$(readlink -f "$2")" "$3" ;;
    *) die "usage: realm.sh up|down|run|kadmin|add-otp-user|new-token|replica|propagate|restart-kdc DIR ..." ;;
esac
