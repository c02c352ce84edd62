#!/usr/bin/env bash
# A throwaway Heimdal realm for the tests: Debian's heimdal-kdc, run from the cached bookworm root of
# kdc-root.sh (heimdal-clients conflicts with the host's krb5-user), on 127.0.0.1 and a free port.
#   heimdal-realm.sh up DIR | down DIR | kadmin DIR ARGS...
# DIR/realm.env (KEY=VALUE lines) tells the tests everything; the MIT client configuration is DIR/krb5.conf.
set -euo pipefail

SCRIPT=$(readlink -f "$0")
. "$(dirname "$SCRIPT")/kdc-root.sh"

HEIMDAL_REALM=HEIMDAL.TEST

die() { echo "heimdal-realm.sh: $*" >&2; exit 1; }

for fd in $(ls /proc/$$/fd); do
    case $fd in 0|1|2|255) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
done

free_port() {
    python3 -c '
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try: u.bind(("127.0.0.1", p))
    except OSError: continue
    print(p); break'
}

kadmin_local() { # DIR ARGS... — Heimdal's kadmin on the realm's database
    local dir=$1; shift
    in_root "$dir" kadmin -l -c "$dir/heimdal.conf" "$@"
}

heimdal_kdc() { # the kdc binary inside the root
    local path
    for path in /usr/lib/heimdal-servers/kdc /usr/sbin/kdc /usr/libexec/kdc; do
        [ -x "$KDC_ROOT$path" ] && { echo "$path"; return 0; }
    done
    die "no Heimdal kdc in $KDC_ROOT"
}

wait_kdc() { # CONFIG USER PASSWORD
    for _ in $(seq 100); do
        if echo "$3" | KRB5_CONFIG=$1 KRB5CCNAME=MEMORY:wait kinit "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    return 1
}

up() {
    local dir=$1
    [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ] && die "$dir exists and is not empty"
    mkdir -p "$dir/db"
    dir=$(readlink -f "$dir")
    ensure_root
    local port; port=$(free_port)
    cat > "$dir/heimdal.conf" <<EOF
[libdefaults]
 default_realm = $HEIMDAL_REALM

[realms]
 $HEIMDAL_REALM = {
  kdc = 127.0.0.1:$port
 }

[kdc]
 database = {
  dbname = $dir/db/heimdal
  realm = $HEIMDAL_REALM
  mkey_file = $dir/db/m-key
  acl_file = $dir/db/kadmind.acl
  log_file = $dir/db/iprop.log
 }
 addresses = 127.0.0.1
 ports = $port
 require-preauth = true
 enable-kerberos4 = false

[logging]
 kdc = FILE:$dir/kdc.log
 default = FILE:$dir/heimdal.log
EOF
    cat > "$dir/krb5.conf" <<EOF
[libdefaults]
 default_realm = $HEIMDAL_REALM
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 dns_canonicalize_hostname = false
 forwardable = false

[realms]
 $HEIMDAL_REALM = {
  kdc = 127.0.0.1:$port
 }

[domain_realm]
 localhost = $HEIMDAL_REALM
EOF
    : > "$dir/db/kadmind.acl"
    in_root "$dir" kstash --random-key --key-file="$dir/db/m-key" >/dev/null 2>&1
    kadmin_local "$dir" init --realm-max-ticket-life=1d --realm-max-renewable-life=1w "$HEIMDAL_REALM"
    local user_password=Alice-Passw0rd1 disabled_password=Disabled-Passw0rd1
    kadmin_local "$dir" add --password="$user_password" --use-defaults --attributes=requires-pre-auth alice
    kadmin_local "$dir" add --password="$disabled_password" --use-defaults --attributes=requires-pre-auth,disallow-all-tix disabled
    kadmin_local "$dir" add --random-key --use-defaults host/localhost
    kadmin_local "$dir" ext_keytab -k "$dir/host.keytab" host/localhost
    klist -k "$dir/host.keytab" | grep -q "host/localhost@$HEIMDAL_REALM" || die "host.keytab holds no key for host/localhost"
    chmod 600 "$dir/host.keytab"

    cat > "$dir/realm.env" <<EOF
KIND=heimdal
REALM=$HEIMDAL_REALM
KDC_PORT=$port
KRB5_CONFIG_FILE=$dir/krb5.conf
USER=alice
USER_PASSWORD=$user_password
DISABLED_USER=disabled
DISABLED_PASSWORD=$disabled_password
HOST_PRINCIPAL=host/localhost@$HEIMDAL_REALM
HOST_KEYTAB=$dir/host.keytab
KDC_PID_FILE=$dir/kdc.pid
REALM_SCRIPT=$SCRIPT
REALM_DIR=$dir
EOF
    start "$dir"
}

start() {
    local dir=$1
    load() { set -a; . "$dir/realm.env"; set +a; }
    load
    in_root_daemon "$dir" "$(heimdal_kdc)" --config-file="$dir/heimdal.conf" --addresses=127.0.0.1 --ports="$KDC_PORT" \
        </dev/null 2>>"$dir/kdc.out" > "$dir/kdc.pid"
    if ! wait_kdc "$dir/krb5.conf" "$USER" "$USER_PASSWORD"; then
        tail -n 20 "$dir/kdc.log" "$dir/kdc.out" >&2 2>/dev/null || true
        down "$dir"; die "the Heimdal KDC did not come up"
    fi
    echo "Heimdal realm $HEIMDAL_REALM up in $dir (KDC 127.0.0.1:$KDC_PORT)"
}

down() {
    local dir=$1
    [ -f "$dir/kdc.pid" ] || return 0
    local pid; pid=$(cat "$dir/kdc.pid")
    # The kdc forks workers: stop its whole process group.
    if kill -- "-$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$dir/kdc.pid"
    rmdir -p "$KDC_ROOT$dir" 2>/dev/null || true
}

case ${1:-} in
    up) [ $# -eq 2 ] || die "usage: heimdal-realm.sh up DIR"; up "$2" ;;
    down) [ $# -eq 2 ] || die "usage: heimdal-realm.sh down DIR"; down "$(readlink -f "$2")" ;;
    kadmin)
        [ $# -ge 3 ] || die "usage: heimdal-realm.sh kadmin DIR ARGS..."
        dir=$(readlink -f "$2"); shift 2; kadmin_local "$dir" "$@" ;;
    *) die "usage: heimdal-realm.sh up|down|kadmin DIR ..." ;;
esac
