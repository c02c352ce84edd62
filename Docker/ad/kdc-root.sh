# Sourced by ad-realm.sh and heimdal-realm.sh: a cached Debian bookworm root holding the KDCs that are not
# MIT's (Samba's AD DC, Heimdal's kdc). They stay off the host's root: heimdal-clients conflicts with
# krb5-user, and Samba's packages would bring their own Kerberos defaults.
#
# The root is made once with debootstrap --variant=minbase from the host's own Debian mirror (read from
# /etc/apt/sources.list.d/*.sources or sources.list) and reused while its packages list matches. Daemons run
# chrooted in a mount namespace of their own (unshare -m) with /proc, /dev and the realm directory mounted
# at the same path as on the host, so nothing is left mounted when they exit and every path in realm.env
# means the same inside and out. The network is the host's: the KDCs listen on loopback addresses.

KDC_ROOT=${KDC_ROOT:-/var/cache/swift-kerberos/bookworm-kdc}
KDC_ROOT_PACKAGES="samba samba-ad-dc samba-ad-provision ldb-tools heimdal-kdc"

root_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

debian_mirror() { # the host's bookworm mirror URL
    local mirror=""
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        mirror=$(awk '/^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print uri; exit } }' \
            /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
        mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "$mirror" ] || root_die "no bookworm mirror in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
    echo "$mirror"
}

in_root() { # BIND_DIR CMD... — run CMD chrooted into $KDC_ROOT with BIND_DIR (may be empty) mounted
    local bind=$1; shift
    unshare --mount --propagation private /bin/bash -c '
        set -e
        root=$1 bind=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        if [ -n "$bind" ]; then mkdir -p "$root$bind"; mount --bind "$bind" "$root$bind"; fi
        # A Samba domain in BIND_DIR: its smb.conf is the one every Samba tool reads by default (ldbmodify
        # loads the password_hash module, which salts new keys with the realm from smb.conf).
        if [ -n "$bind" ] && [ -f "$bind/samba/etc/smb.conf" ]; then mount --bind "$bind/samba/etc" "$root/etc/samba"; fi
        exec chroot "$root" "$@"' in_root "$KDC_ROOT" "$bind" "$@"
}

in_root_daemon() { # BIND_DIR CMD... — in_root in the background as a process group of its own (its pid is
    # the group's id: kill -- -PID stops the daemon and the children it forks); prints the pid
    local bind=$1; shift
    setsid unshare --mount --propagation private /bin/bash -c '
        set -e
        root=$1 bind=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        if [ -n "$bind" ]; then mkdir -p "$root$bind"; mount --bind "$bind" "$root$bind"; fi
        exec chroot "$root" "$@"' in_root "$KDC_ROOT" "$bind" "$@" >&2 &
    echo $!
}

ensure_root() {
    [ "$(id -u)" = 0 ] || root_die "needs root (debootstrap, chroot, a loopback address)"
    [ -f "$KDC_ROOT/.packages" ] && [ "$(cat "$KDC_ROOT/.packages")" = "$KDC_ROOT_PACKAGES" ] && return 0
    mkdir -p "$(dirname "$KDC_ROOT")"
    exec 8>"$KDC_ROOT.lock"; flock 8
    if [ -f "$KDC_ROOT/.packages" ] && [ "$(cat "$KDC_ROOT/.packages")" = "$KDC_ROOT_PACKAGES" ]; then exec 8>&-; return 0; fi
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    local mirror tmp=$KDC_ROOT.tmp started=$SECONDS
    mirror=$(debian_mirror)
    echo "kdc-root: building $KDC_ROOT (debootstrap bookworm from $mirror, then $KDC_ROOT_PACKAGES)" >&2
    rm -rf "$tmp" "$KDC_ROOT"
    debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$KDC_ROOT.log" 2>&1 \
        || { tail -n 20 "$KDC_ROOT.log" >&2; root_die "debootstrap failed (log: $KDC_ROOT.log)"; }
    # Packages must not start their services in the root; heimdal-kdc's postinst needs a realm (debconf).
    printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"; chmod 755 "$tmp/usr/sbin/policy-rc.d"
    cat > "$tmp/preseed" <<'SEED'
krb5-config krb5-config/default_realm string HEIMDAL.TEST
krb5-config krb5-config/add_servers_realm string HEIMDAL.TEST
krb5-config krb5-config/add_servers boolean false
krb5-config krb5-config/kerberos_servers string localhost
krb5-config krb5-config/admin_server string localhost
krb5-config krb5-config/read_conf boolean true
heimdal-kdc heimdal/realm string HEIMDAL.TEST
SEED
    local saved=$KDC_ROOT; KDC_ROOT=$tmp
    in_root "" debconf-set-selections /preseed
    in_root "" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$saved.log" 2>&1
    in_root "" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $KDC_ROOT_PACKAGES >>"$saved.log" 2>&1 \
        || { KDC_ROOT=$saved; tail -n 20 "$KDC_ROOT.log" >&2; root_die "installing the KDC packages failed (log: $KDC_ROOT.log)"; }
    KDC_ROOT=$saved
    rm -f "$tmp/preseed" "$tmp/etc/samba/smb.conf"
    rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*_Packages
    echo "$KDC_ROOT_PACKAGES" > "$tmp/.packages"
    mv "$tmp" "$KDC_ROOT"
    exec 8>&-
    echo "kdc-root: ready in $((SECONDS - started)) s" >&2
}
