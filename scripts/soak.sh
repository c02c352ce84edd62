#!/usr/bin/env bash
# make soak: COUNT mixed logins through the release krb5-verifyd at concurrency 16, every reply checked.
# SOAK_CASES=unknown,otpGood (say) runs only those cases. SOAK_THROTTLE_FAILURES=5 (the daemon's default)
# runs it as a mail server sees it, every user behind one uid; SOAK_THROTTLE_PENALTY sets throttle_penalty.
set -euo pipefail
count=${1:-100000}
root=$(cd "$(dirname "$0")/.." && pwd)
realm=$root/.realm.soak
bin=$(cd "$root" && swift build -c release --show-bin-path)
"$root/Docker/kdc/realm.sh" down "$realm" 2>/dev/null || true
rm -rf "$realm"
"$root/Docker/kdc/realm.sh" up "$realm" >/dev/null
trap '"$root/Docker/kdc/realm.sh" down "$realm"; rm -rf "$realm"' EXIT
set -a; . "$realm/realm.env"; set +a
"$root/Docker/kdc/realm.sh" add-otp-user "$realm" soakotp
cat > "$realm/verifyd.toml" <<TOML
sasl_socket = "$realm/mux"
socket = "$realm/conversation"
krb5_config = "$KRB5_CONFIG_FILE"
keytab = "$HOST_KEYTAB"
server_principal = "$LOCALHOST_PRINCIPAL"
armor = "anonymous"
workers = 4
failure_floor = 0
throttle_failures = ${SOAK_THROTTLE_FAILURES:-100000000}
throttle_penalty = "${SOAK_THROTTLE_PENALTY:-1s}"
log_level = "warning"
TOML
"$bin/krb5-verifyd" --config "$realm/verifyd.toml" &
daemon=$!
# Stopped on every exit, a failed soak included, before the realm.
trap '[ -z "$daemon" ] || { kill -TERM "$daemon"; wait "$daemon"; }; "$root/Docker/kdc/realm.sh" down "$realm"; rm -rf "$realm"' EXIT
for _ in $(seq 100); do [ -S "$realm/conversation" ] && break; sleep 0.1; done
"$bin/krb5-bench" soak --realm-env "$realm/realm.env" --sasl-socket "$realm/mux" --socket "$realm/conversation" \
    --otp-user soakotp --count "$count" ${SOAK_CASES:+--cases "$SOAK_CASES"} --concurrency 16 --seconds 3600 --pid "$daemon"
# A clean stop (exit 0) is part of the soak.
kill -TERM "$daemon"; wait "$daemon"; daemon=
