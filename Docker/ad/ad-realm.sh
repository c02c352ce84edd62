#!/usr/bin/env bash
# A throwaway Active Directory domain for the tests: a Samba AD DC (whose KDC is Samba's Heimdal) on
# 127.0.0.2, run from the cached bookworm root of kdc-root.sh, with one account for each case the library,
# krb5-verifyd and krb5-login must handle against AD.
#   ad-realm.sh root | up DIR | down DIR | samba-tool DIR ARGS... | add-user DIR NAME [OPTION...] | set-password DIR NAME
# add-user and set-password read the password on stdin (one line). add-user options: must-change, disabled,
# expired, rename=NEW, upn=NAME@SUFFIX, rc4-only.
# DIR/realm.env (KEY=VALUE lines) tells the tests everything; the MIT client configuration is DIR/krb5.conf.
set -euo pipefail

SCRIPT=$(readlink -f "$0")
. "$(dirname "$SCRIPT")/kdc-root.sh"
PATH=$PATH:/usr/sbin:/sbin

AD_REALM=AD.EXAMPLE
AD_DOMAIN=AD
AD_DNS_DOMAIN=ad.example
AD_ADDRESS=${AD_ADDRESS:-127.0.0.2}
UPN_SUFFIX=upn.example

die() { echo "ad-realm.sh: $*" >&2; exit 1; }

# As in realm.sh: the daemons must not inherit the caller's descriptors (Foundation's Process waits for them).
for fd in $(ls /proc/$$/fd); do
    case $fd in 0|1|2|255) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
done

load_env() { [ -f "$1/realm.env" ] || die "no realm in $1"; set -a; . "$1/realm.env"; set +a; }

samba_tool() { # DIR ARGS... — always with the realm's smb.conf (without -s samba-tool silently uses /var/lib/samba)
    local dir=$1; shift
    in_root "$dir" samba-tool "$@" -s "$dir/samba/etc/smb.conf"
}

base_dn() { echo "DC=${AD_DNS_DOMAIN//./,DC=}"; }

ldb_modify() { # DIR — an LDIF on stdin, applied to the domain's sam.ldb
    local dir=$1
    cat > "$dir/.modify.ldif"
    in_root "$dir" ldbmodify -H "$dir/samba/private/sam.ldb" "$dir/.modify.ldif" >/dev/null
    rm -f "$dir/.modify.ldif"
}

user_dn() { echo "CN=$2,CN=Users,$(base_dn)"; }

add_user() { # DIR NAME PASSWORD [OPTION...]
    local dir=$1 name=$2 password=$3; shift 3
    local create=(user create "$name" --random-password --use-username-as-cn)
    local option
    samba_tool "$dir" "${create[@]}" >/dev/null
    set_password "$dir" "$name" "$password"
    for option in "$@"; do
        case $option in
            must-change) set_password "$dir" "$name" "$password" must-change ;;
            disabled) samba_tool "$dir" user disable "$name" >/dev/null ;;
            expired) # accountExpires in the past (1 January 2000, in 100 ns units since 1601)
                ldb_modify "$dir" <<EOF
dn: $(user_dn "$dir" "$name")
changetype: modify
replace: accountExpires
accountExpires: 125911584000000000
EOF
                ;;
            rename=*) samba_tool "$dir" user rename "$name" --samaccountname="${option#rename=}" >/dev/null ;;
            upn=*)
                ldb_modify "$dir" <<EOF
dn: $(user_dn "$dir" "$name")
changetype: modify
replace: userPrincipalName
userPrincipalName: ${option#upn=}
EOF
                ;;
            rc4-only)
                ldb_modify "$dir" <<EOF
dn: $(user_dn "$dir" "$name")
changetype: modify
replace: msDS-SupportedEncryptionTypes
msDS-SupportedEncryptionTypes: 4
EOF
                ;;
            *) die "add-user: unknown option $option" ;;
        esac
    done
}

set_password() { # DIR NAME PASSWORD [must-change] — through ldbmodify's input (Samba's password_hash module
    # makes the keys, salted with the account's sAMAccountName as it is now), so the password is in no argv
    local dir=$1 name=$2 password=$3 encoded
    encoded=$(printf '"%s"' "$password" | iconv -f UTF-8 -t UTF-16LE | base64 -w0)
    local account; account=$(in_root "$dir" ldbsearch -H "$dir/samba/private/sam.ldb" "(sAMAccountName=$name)" dn | sed -n 's/^dn: //p')
    [ -n "$account" ] || die "no account $name"
    ldb_modify "$dir" <<EOF
dn: $account
changetype: modify
replace: unicodePwd
unicodePwd:: $encoded
EOF
    if [ "${4:-}" = must-change ]; then
        ldb_modify "$dir" <<EOF
dn: $account
changetype: modify
replace: pwdLastSet
pwdLastSet: 0
EOF
    fi
}

wait_kdc() { # CONFIG USER PASSWORD
    for _ in $(seq 150); do
        if echo "$3" | KRB5_CONFIG=$1 KRB5CCNAME=MEMORY:wait kinit "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    return 1
}

# The domain itself is provisioned once, offline (samba-tool and ldbmodify work on sam.ldb directly), into a
# template next to the cached root, and copied for each realm: provisioning takes tens of seconds, a copy
# (about 45 MB) under one. Only smb.conf holds the directory's path. The template is made again whenever the
# functions that make it or kdc-root.sh change.
AD_TEMPLATE=${AD_TEMPLATE:-$(dirname "$KDC_ROOT")/ad-template}

provision() { # DIR — the domain, its users, WS1$ and its keytab, in DIR; template.env with what was made
    local dir=$1
    local admin_password computer_password
    admin_password="Adm-$(head -c 9 /dev/urandom | base64 | tr '+/' 'xy')1"
    computer_password="Ws1-$(head -c 12 /dev/urandom | base64 | tr '+/' 'xy')9"
    mkdir -p "$dir/samba/run"
    in_root "$dir" samba-tool domain provision --targetdir="$dir/samba" --realm="$AD_REALM" --domain="$AD_DOMAIN" \
        --server-role=dc --dns-backend=SAMBA_INTERNAL --host-name=dc1 --host-ip="$AD_ADDRESS" \
        --adminpass="$admin_password" \
        --option="interfaces=$AD_ADDRESS" --option="bind interfaces only=yes" \
        --option="server services=kdc" --option="dns forwarder=$AD_ADDRESS" --option="pid directory=$dir/samba/run" \
        >"$dir/provision.log" 2>&1 || { tail -n 20 "$dir/provision.log" >&2; die "provisioning failed"; }
    # Every password below meets the domain's default policy (complexity on).
    add_user "$dir" alice Alice-Passw0rd1
    add_user "$dir" bob Robert-Passw0rd1 rename=robert
    # An alternative UPN suffix of the forest, and a user who logs in with it.
    ldb_modify "$dir" <<EOF
dn: CN=Partitions,CN=Configuration,$(base_dn)
changetype: modify
add: uPNSuffixes
uPNSuffixes: $UPN_SUFFIX
EOF
    add_user "$dir" carol Carol-Passw0rd1 "upn=carol.upn@$UPN_SUFFIX"
    add_user "$dir" mustchange Change-Passw0rd1 must-change
    add_user "$dir" disabled Disabled-Passw0rd1 disabled
    add_user "$dir" expired Expired-Passw0rd1 expired

    # The computer account WS1$ with host/ SPNs, and its keytab: WS1$ first (keytab logins and armor),
    # then the SPN that verifies logins.
    samba_tool "$dir" computer create WS1 --prepare-oldjoin \
        --service-principal-name="host/ws1.$AD_DNS_DOMAIN" --service-principal-name="host/WS1" >/dev/null
    ldb_modify "$dir" <<EOF
dn: CN=WS1,CN=Computers,$(base_dn)
changetype: modify
replace: dNSHostName
dNSHostName: ws1.$AD_DNS_DOMAIN
EOF
    set_password "$dir" 'WS1$' "$computer_password"
    samba_tool "$dir" domain exportkeytab "$dir/ws1.keytab" --principal="WS1\$@$AD_REALM" >/dev/null
    # Samba 4.17 exports only the RC4 key under an SPN's name. The SPN's keys are the account's (AD encrypts
    # tickets for any of its SPNs in the account's key), so MIT's ktutil makes them from the password and
    # the account's salt (REALM "host" name "." domain), the password on ktutil's standard input.
    local spn="host/ws1.$AD_DNS_DOMAIN@$AD_REALM" salt="${AD_REALM}hostws1.$AD_DNS_DOMAIN" kvno
    kvno=$(klist -k "$dir/ws1.keytab" | awk -v p="WS1\$@$AD_REALM" '$2 == p { print $1; exit }')
    {
        for enctype in aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96 arcfour-hmac; do
            printf 'addent -password -p %s -k %s -e %s -s %s\n%s\n' "$spn" "$kvno" "$enctype" "$salt" "$computer_password"
        done
        printf 'wkt %s\nquit\n' "$dir/ws1.keytab"
    } | ktutil >/dev/null
    # exportkeytab exits 0 and writes nothing for an account without keys: check, AES included.
    local principal
    for principal in "WS1\$@$AD_REALM" "$spn"; do
        klist -ke "$dir/ws1.keytab" | grep -qF " $principal (aes256-cts-hmac-sha1-96)" || die "ws1.keytab holds no AES key for $principal"
    done
    chmod 600 "$dir/ws1.keytab"
    printf 'ADMIN_PASSWORD=%s\n' "$admin_password" > "$dir/template.env"
}

ensure_template() {
    local stamp
    stamp=$({ declare -f provision add_user set_password ldb_modify samba_tool base_dn user_dn
              echo "$AD_REALM $AD_DOMAIN $AD_DNS_DOMAIN $AD_ADDRESS $UPN_SUFFIX"; cat "$(dirname "$SCRIPT")/kdc-root.sh"; } | sha256sum | cut -c1-16)
    [ "$(cat "$AD_TEMPLATE/.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    exec 7>"$AD_TEMPLATE.lock"; flock 7
    if [ "$(cat "$AD_TEMPLATE/.stamp" 2>/dev/null)" != "$stamp" ]; then
        local started=$SECONDS
        rm -rf "$AD_TEMPLATE"; mkdir -p "$AD_TEMPLATE"
        provision "$AD_TEMPLATE"
        rmdir -p "$KDC_ROOT$AD_TEMPLATE" 2>/dev/null || true
        echo "$stamp" > "$AD_TEMPLATE/.stamp"
        echo "ad-realm.sh: domain template provisioned in $AD_TEMPLATE ($((SECONDS - started)) s)" >&2
    fi
    exec 7>&-
}

up() {
    local dir=$1
    [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ] && die "$dir exists and is not empty"
    mkdir -p "$dir"
    dir=$(readlink -f "$dir")
    local started=$SECONDS
    ensure_root
    ensure_template
    ip -4 addr show dev lo | grep -q "inet $AD_ADDRESS/" || ip addr add "$AD_ADDRESS/32" dev lo
    # Port 88 on the DC's own address: another DC there would be a leftover of an earlier run.
    if (exec 3<>"/dev/tcp/$AD_ADDRESS/88") 2>/dev/null; then die "something already listens on $AD_ADDRESS:88 (ad-realm.sh down DIR?)"; fi
    cp -a "$AD_TEMPLATE/samba" "$AD_TEMPLATE/ws1.keytab" "$dir/"
    rm -f "$dir/samba/run/"*.pid
    sed -i "s|$AD_TEMPLATE/|$dir/|g" "$dir/samba/etc/smb.conf"
    if grep -qF "$AD_TEMPLATE/" "$dir/samba/etc/smb.conf"; then die "smb.conf still names the template"; fi
    # The KDC logs every AS-REQ and TGS-REQ (Heimdal's "Kerberos: AS-REQ alice@AD.EXAMPLE from …" lines): the
    # tests count exchanges there.
    sed -i "s|^\tinterfaces = |\tlog file = $dir/samba/log.samba\n\tlog level = 1 kerberos:3\n\tinterfaces = |" "$dir/samba/etc/smb.conf"
    local admin_password; admin_password=$(sed -n 's/^ADMIN_PASSWORD=//p' "$AD_TEMPLATE/template.env")

    cat > "$dir/krb5.conf" <<EOF
[libdefaults]
 default_realm = $AD_REALM
 dns_lookup_kdc = false
 dns_lookup_realm = false
 rdns = false
 dns_canonicalize_hostname = false
 forwardable = false

[realms]
 $AD_REALM = {
  kdc = $AD_ADDRESS
  admin_server = $AD_ADDRESS
  kpasswd_server = $AD_ADDRESS
 }

[domain_realm]
 $AD_DNS_DOMAIN = $AD_REALM
 .$AD_DNS_DOMAIN = $AD_REALM
EOF
    cat > "$dir/realm.env" <<EOF
KIND=ad
REALM=$AD_REALM
DNS_DOMAIN=$AD_DNS_DOMAIN
KDC_ADDRESS=$AD_ADDRESS
KRB5_CONFIG_FILE=$dir/krb5.conf
ADMIN_PASSWORD=$admin_password
USER=alice
USER_PASSWORD=Alice-Passw0rd1
RENAMED_USER=robert
RENAMED_OLD_NAME=bob
RENAMED_PASSWORD=Robert-Passw0rd1
UPN_USER=carol
UPN=carol.upn@$UPN_SUFFIX
UPN_SUFFIX=$UPN_SUFFIX
UPN_PASSWORD=Carol-Passw0rd1
MUST_CHANGE_USER=mustchange
MUST_CHANGE_PASSWORD=Change-Passw0rd1
DISABLED_USER=disabled
DISABLED_PASSWORD=Disabled-Passw0rd1
EXPIRED_USER=expired
EXPIRED_PASSWORD=Expired-Passw0rd1
COMPUTER_PRINCIPAL=WS1\$@$AD_REALM
HOST_PRINCIPAL=host/ws1.$AD_DNS_DOMAIN@$AD_REALM
HOST_KEYTAB=$dir/ws1.keytab
KDC_LOG=$dir/samba/log.samba
REALM_SCRIPT=$SCRIPT
REALM_DIR=$dir
EOF
    start "$dir" "$admin_password"
    # The keytab decrypts a ticket the DC issues for the SPN (what verification relies on).
    if ! echo Alice-Passw0rd1 | KRB5_CONFIG=$dir/krb5.conf KRB5CCNAME=FILE:$dir/.check.cc kinit alice >/dev/null 2>&1 \
        || ! KRB5_CONFIG=$dir/krb5.conf KRB5CCNAME=FILE:$dir/.check.cc kvno -k "$dir/ws1.keytab" "host/ws1.$AD_DNS_DOMAIN@$AD_REALM" >/dev/null 2>&1; then
        rm -f "$dir/.check.cc"; down "$dir"; die "ws1.keytab does not decrypt the DC's ticket for host/ws1.$AD_DNS_DOMAIN"
    fi
    rm -f "$dir/.check.cc"
    echo "AD realm $AD_REALM up in $dir (DC $AD_ADDRESS, $((SECONDS - started)) s)"
}

start() { # DIR ADMIN_PASSWORD
    local dir=$1
    in_root "$dir" samba -D -s "$dir/samba/etc/smb.conf" >"$dir/samba-start.log" 2>&1 \
        || { cat "$dir/samba-start.log" >&2; die "samba did not start"; }
    if ! wait_kdc "$dir/krb5.conf" Administrator "$2"; then
        tail -n 30 "$dir/samba/var/log.samba" "$dir/samba-start.log" >&2 2>/dev/null || true
        down "$dir"; die "the DC's KDC did not answer"
    fi
}

samba_pid() { # DIR — the samba master's pid, from its pid file (smb.conf's pid directory)
    [ -f "$1/samba/run/samba.pid" ] && cat "$1/samba/run/samba.pid"
}

down() {
    local dir=$1 pid
    [ -d "$dir" ] || return 0
    pid=$(samba_pid "$dir") || return 0
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    # Samba's worker processes follow their master; wait until the DC's port is free for the next realm.
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/$AD_ADDRESS/88") 2>/dev/null || break; sleep 0.1; done
    rmdir -p "$KDC_ROOT$dir" 2>/dev/null || true
}

case ${1:-} in
    root) ensure_root; ensure_template ;;   # only build the cached root and domain (make test: while the tests compile)
    up) [ $# -eq 2 ] || die "usage: ad-realm.sh up DIR"; up "$2" ;;
    down) [ $# -eq 2 ] || die "usage: ad-realm.sh down DIR"; down "$(readlink -f "$2")" ;;
    samba-tool)
        [ $# -ge 3 ] || die "usage: ad-realm.sh samba-tool DIR ARGS..."
        dir=$(readlink -f "$2"); shift 2; samba_tool "$dir" "$@" ;;
    add-user)
        [ $# -ge 3 ] || die "usage: ad-realm.sh add-user DIR NAME [OPTION...] (password on stdin)"
        dir=$(readlink -f "$2"); name=$3; shift 3
        IFS= read -r password || die "add-user: no password on stdin"
        # One at a time: samba-tool and ldbmodify on one sam.ldb from parallel tests.
        exec 9>"$dir/admin.lock"; flock 9
        add_user "$dir" "$name" "$password" "$@" ;;
    set-password)
        [ $# -eq 3 ] || die "usage: ad-realm.sh set-password DIR NAME (password on stdin)"
        dir=$(readlink -f "$2"); IFS= read -r password || die "set-password: no password on stdin"
        exec 9>"$dir/admin.lock"; flock 9; set_password "$dir" "$3" "$password" ;;
    *) die "usage: ad-realm.sh up|down|samba-tool|add-user|set-password DIR ..." ;;
esac
