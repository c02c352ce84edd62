#!/usr/bin/env python3
"""make bench: the library, krb5-verifyd, krb5-login and their peers (the C API, saslauthd -a kerberos5,
kinit) measured side by side in one run against a throwaway realm on loopback; writes docs/benchmarks.md.

Every load is bounded in time (BENCH_SECONDS per measurement, default 5) and talks to 127.0.0.1 only."""
import json, os, platform, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REALM = os.path.join(ROOT, ".realm.bench")
# BENCH_ONLY=process: only the one-process-per-login rows (krb5-login vs kinit), printed, docs/benchmarks.md untouched.
ONLY_PROCESS = os.environ.get("BENCH_ONLY") == "process"
BIN = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def env_file(path):
    return dict(line.split("=", 1) for line in open(path).read().splitlines() if "=" in line)


def measure(args, env=None):
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode not in (0, 1) or not out.stdout.strip():
        sys.exit(f"bench: {' '.join(args[:2])} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spawn_once(args, stdin, environment):
    """One run: posix_spawn, the input, wait4; returns (seconds, exit status)."""
    read_end, write_end = os.pipe()
    began = time.perf_counter()
    pid = os.posix_spawn(args[0], args, environment, file_actions=[
        (os.POSIX_SPAWN_DUP2, read_end, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    os.close(read_end)
    if stdin:
        os.write(write_end, stdin)
    os.close(write_end)
    _, status, _ = os.wait4(pid, 0)
    return time.perf_counter() - began, os.waitstatus_to_exitcode(status)


def peak_rss_kb(args, stdin, environment):
    """The command's own peak RSS, from GNU time (wait4 on a child of Python would count Python's pages)."""
    out = os.path.join(REALM, "rss.out")
    spawn_once(["/usr/bin/time", "-f", "%M", "-o", out] + args, stdin, environment)
    try:
        return int(open(out).read().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def spawn_interleaved(commands, count=300):
    """Runs each command once per round, round after round, so that the machine's load shifts hit all of them
    alike; each command is (args, stdin, env, inherit, expected statuses). Returns one result per command."""
    prepared = [(args, stdin, {**os.environ, **env} if inherit else dict(env), expect) for args, stdin, env, inherit, expect in commands]
    samples = [[] for _ in prepared]
    failures = [0 for _ in prepared]
    start = time.perf_counter()
    for _ in range(count):
        if time.perf_counter() - start > SECONDS * 2 * len(prepared):
            break
        for index, (args, stdin, environment, expect) in enumerate(prepared):
            seconds, status = spawn_once(args, stdin, environment)
            samples[index].append(seconds)
            if status not in expect:
                failures[index] += 1
    results = []
    for index, (args, stdin, environment, _) in enumerate(prepared):
        values = sorted(samples[index])
        def percentile(p):
            return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else 0
        results.append({"logins": len(values), "seconds": sum(values), "p50_ms": percentile(0.5), "p99_ms": percentile(0.99),
                        "failures": failures[index], "child_max_rss_kb": peak_rss_kb(args, stdin, environment)})
    return results

def rate(result):
    return result["logins"] / result["seconds"] if result["seconds"] else 0


def wait_for(path):
    for _ in range(100):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    sys.exit(f"bench: {path} did not appear")


def main():
    subprocess.run([os.path.join(ROOT, "Docker/kdc/realm.sh"), "down", REALM], capture_output=True)
    shutil.rmtree(REALM, ignore_errors=True)
    subprocess.run([os.path.join(ROOT, "Docker/kdc/realm.sh"), "up", REALM], check=True, capture_output=True)
    r = env_file(os.path.join(REALM, "realm.env"))
    secret = {"KRB5_BENCH_PASSWORD": r["USER_PASSWORD"]}
    server = r["HOST_PRINCIPAL"]
    rows = []
    daemons = []
    try:
        if not ONLY_PROCESS:
            # 1. The library in process vs the C reference (same krb5 calls), 1 and 2 threads.
            for threads in (1, 2):
                c = measure([f"{BIN}/krb5-reference", r["KRB5_CONFIG_FILE"], r["USER"], r["HOST_KEYTAB"], server, str(threads), str(SECONDS)], secret)
                lib = measure([f"{BIN}/krb5-bench", "library", "--config", r["KRB5_CONFIG_FILE"], "--principal", r["USER"], "--keytab", r["HOST_KEYTAB"],
                               "--server", server, "--threads", str(threads), "--seconds", str(SECONDS)], secret)
                rows.append((f"verified login, in process, {threads} thread(s)", "C reference (krb5_get_init_creds_password + krb5_verify_init_creds)", c, "Kerberos library", lib))
            # 2. Optimistic preauth: get-creds only, plain vs preauth list set.
            plain = measure([f"{BIN}/krb5-bench", "library", "--config", r["KRB5_CONFIG_FILE"], "--principal", r["USER"], "--keytab", r["HOST_KEYTAB"],
                             "--server", server, "--seconds", str(SECONDS), "--no-verify"], secret)
            optimistic = measure([f"{BIN}/krb5-bench", "library", "--config", r["KRB5_CONFIG_FILE"], "--principal", r["USER"], "--keytab", r["HOST_KEYTAB"],
                                  "--server", server, "--seconds", str(SECONDS), "--no-verify", "--optimistic"], secret)
            rows.append(("get-creds only, 1 thread", "plain (preauth-required round trip)", plain, "optimistic preauth (PA-ENC-TIMESTAMP first)", optimistic))
            # 2a. A verified login in one exchange: optimistic preauth plus the verification ticket straight from the AS.
            full = measure([f"{BIN}/krb5-bench", "library", "--config", r["KRB5_CONFIG_FILE"], "--principal", r["USER"], "--keytab", r["HOST_KEYTAB"],
                            "--server", server, "--seconds", str(SECONDS)], secret)
            lean = measure([f"{BIN}/krb5-bench", "library", "--config", r["KRB5_CONFIG_FILE"], "--principal", r["USER"], "--keytab", r["HOST_KEYTAB"],
                            "--server", server, "--seconds", str(SECONDS), "--optimistic", "--direct"], secret)
            rows.append(("verified login, 1 thread", "plain calls: AS, AS again with preauth, TGS", full,
                         "optimistic preauth + verification ticket from the AS: one AS exchange", lean))

            # 3. krb5-verifyd vs saslauthd -a kerberos5 over the saslauthd protocol.
            ours_socket = os.path.join(REALM, "verifyd.mux")
            verifyd = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", ours_socket, "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"],
                                        "--server-principal", server, "--workers", "4", "--log-level", "error"], stderr=subprocess.DEVNULL)
            daemons.append(verifyd)
            sasl_dir = os.path.join(REALM, "saslauthd")
            os.makedirs(sasl_dir, exist_ok=True)
            subprocess.run(["saslauthd", "-a", "kerberos5", "-m", sasl_dir, "-n", "5"], check=True,
                           env={**os.environ, "KRB5_CONFIG": r["KRB5_CONFIG_FILE"], "KRB5_KTNAME": r["HOST_KEYTAB"]})
            wait_for(ours_socket)
            wait_for(os.path.join(sasl_dir, "mux"))
            saslauthd_pid = int(open(os.path.join(sasl_dir, "saslauthd.pid")).read().split()[0])
            for concurrency in (1, 4, 16):
                theirs = measure([f"{BIN}/krb5-bench", "sasl", "--socket", os.path.join(sasl_dir, "mux"), "--login", r["USER"], "--concurrency", str(concurrency),
                                  "--seconds", str(SECONDS), "--pid", str(saslauthd_pid)], secret)
                ours = measure([f"{BIN}/krb5-bench", "sasl", "--socket", ours_socket, "--login", r["USER"], "--concurrency", str(concurrency),
                                "--seconds", str(SECONDS), "--pid", str(verifyd.pid)], secret)
                rows.append((f"saslauthd protocol, concurrency {concurrency}", "saslauthd -a kerberos5 (5 threads)", theirs, "krb5-verifyd (4 workers)", ours))
                if concurrency > 1:
                    c = measure([f"{BIN}/krb5-reference", r["KRB5_CONFIG_FILE"], r["USER"], r["HOST_KEYTAB"], server, str(concurrency), str(SECONDS)], secret)
                    rows.append((f"verified logins, {concurrency} at a time", f"C reference, {concurrency} threads in process (aggregate)", c,
                                 "krb5-verifyd over its socket", ours))

            # 3a. What the shortcuts buy: krb5-verifyd on the plain MIT path (three KDC exchanges per login).
            plain_socket = os.path.join(REALM, "verifyd-plain.mux")
            plain_daemon = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", plain_socket, "--krb5-config", r["KRB5_CONFIG_FILE"],
                                             "--keytab", r["HOST_KEYTAB"], "--server-principal", server, "--workers", "4", "--log-level", "error",
                                             "--no-learned-preauth", "--no-direct-verification-ticket"], stderr=subprocess.DEVNULL)
            daemons.append(plain_daemon)
            wait_for(plain_socket)
            for concurrency in (4, 16):
                plain = measure([f"{BIN}/krb5-bench", "sasl", "--socket", plain_socket, "--login", r["USER"], "--concurrency", str(concurrency),
                                 "--seconds", str(SECONDS), "--pid", str(plain_daemon.pid)], secret)
                ours = measure([f"{BIN}/krb5-bench", "sasl", "--socket", ours_socket, "--login", r["USER"], "--concurrency", str(concurrency),
                                "--seconds", str(SECONDS), "--pid", str(verifyd.pid)], secret)
                rows.append((f"saslauthd protocol, concurrency {concurrency}", "krb5-verifyd --no-learned-preauth --no-direct-verification-ticket", plain,
                             "krb5-verifyd (defaults: one AS exchange)", ours))

            # 3b. Opt-in success caches: saslauthd -c against krb5-verifyd --result-cache-ttl, same password repeated.
            for daemon in daemons:
                daemon.terminate()
                daemon.wait()
            daemons.clear()
            subprocess.run(["kill", str(saslauthd_pid)])
            time.sleep(0.5)
            cached_socket = os.path.join(REALM, "verifyd-cached.mux")
            cached = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", cached_socket, "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"],
                                       "--server-principal", server, "--workers", "4", "--log-level", "error", "--result-cache-ttl", "60s"], stderr=subprocess.DEVNULL)
            daemons.append(cached)
            cache_dir = os.path.join(REALM, "saslauthd-cached")
            os.makedirs(cache_dir, exist_ok=True)
            subprocess.run(["saslauthd", "-a", "kerberos5", "-m", cache_dir, "-n", "5", "-c", "-t", "60"], check=True,
                           env={**os.environ, "KRB5_CONFIG": r["KRB5_CONFIG_FILE"], "KRB5_KTNAME": r["HOST_KEYTAB"]})
            wait_for(cached_socket)
            wait_for(os.path.join(cache_dir, "mux"))
            cached_pid = int(open(os.path.join(cache_dir, "saslauthd.pid")).read().split()[0])
            theirs = measure([f"{BIN}/krb5-bench", "sasl", "--socket", os.path.join(cache_dir, "mux"), "--login", r["USER"], "--concurrency", "4",
                              "--seconds", str(SECONDS), "--pid", str(cached_pid)], secret)
            ours = measure([f"{BIN}/krb5-bench", "sasl", "--socket", cached_socket, "--login", r["USER"], "--concurrency", "4",
                            "--seconds", str(SECONDS), "--pid", str(cached.pid)], secret)
            rows.append(("success cache on, concurrency 4", "saslauthd -a kerberos5 -c", theirs, "krb5-verifyd --result-cache-ttl 60s", ours))
            subprocess.run(["kill", str(cached_pid)])

        # 4. One process per login: kinit (no verification) vs krb5-login (with verification), spawned and reaped
        # here (posix_spawn + wait4). The earlier harness (krb5-bench process) used Foundation's Process, whose
        # waitUntilExit on Linux runs the run loop in 50 ms slices: any child still running when it is called
        # measured ~51 ms (kinit, krb5-login, and `sleep 0.002` alike).
        realm_env = {"KRB5_CONFIG": r["KRB5_CONFIG_FILE"]}
        password = r["USER_PASSWORD"].encode()
        kinit_args = [shutil.which("kinit"), "-c", "MEMORY:bench", r["USER"]]
        # make release-static: the same helper with the Swift runtime linked in (-static-stdlib).
        static = os.path.join(ROOT, ".build-static", "release", "krb5-login")
        helpers = [("krb5-login", f"{BIN}/krb5-login")] + ([("krb5-login -static-stdlib", static)] if os.path.exists(static) else [])
        commands = [(kinit_args, password + b"\n", realm_env, True, (0,))]
        for _, helper in helpers:
            commands.append(([helper, "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"], "--server-principal", server],
                             r["USER"].encode() + b"\n" + password + b"\n", realm_env, True, (0,)))
        for _, helper in helpers:
            commands.append(([helper, "--pam-exec", "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"],
                              "--server-principal", server, "--no-authorize"], password + b"\0",
                             {"PAM_USER": r["USER"], "PAM_TYPE": "auth", "PAM_SERVICE": "bench"}, False, (0,)))
        results = spawn_interleaved(commands)
        kinit = results[0]
        for (name, _), login in zip(helpers, results[1:1 + len(helpers)]):
            rows.append(("one process per login", "kinit (no verification)", kinit, f"{name} (with verification)", login))
        for (name, _), pam in zip(helpers, results[1 + len(helpers):]):
            rows.append(("one process per login, pam_exec form", "kinit (no verification)", kinit, f"{name} --pam-exec (with verification)", pam))
        # Process start alone: kinit -V with no input reads the configuration, makes a context, sends one AS-REQ (answered
        # "pre-authentication required"), asks for the password and stops at end of input; krb5-login --version prints its version.
        starts = spawn_interleaved([([shutil.which("kinit"), "-V", "-c", "MEMORY:bench", r["USER"]], b"", realm_env, True, (1,))]
                                   + [([helper, "--version"], b"", realm_env, True, (0,)) for _, helper in helpers])
        for (name, _), login_start in zip(helpers, starts[1:]):
            rows.append(("process start", "kinit -V (context, one AS exchange, prompt, end of input)", starts[0], f"{name} --version", login_start))
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait()
        pid_file = os.path.join(REALM, "saslauthd", "saslauthd.pid")
        if os.path.exists(pid_file):
            subprocess.run(["kill", open(pid_file).read().split()[0]])
        subprocess.run([os.path.join(ROOT, "Docker/kdc/realm.sh"), "down", REALM], capture_output=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = ["# Benchmarks", "",
             f"`make bench` on {os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}, MIT krb5 KDC on 127.0.0.1, "
             f"{SECONDS:g} s per measurement, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Absolute numbers are noisy on shared 2-core machines; the ratios within one run are what count. "
             "RSS is the measuring process's peak for in-process rows, the daemon's peak (VmHWM) for daemon rows, "
             "for per-process rows the command's own peak from GNU time. Per-process rows run their commands interleaved, "
             "one of each per round.", "",
             "| workload | peer | peer rate /s | peer p50 / p99 ms | ours | our rate /s | our p50 / p99 ms | ratio (ours / peer) | peer RSS MB | our RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for workload, peer_name, peer, our_name, ours in rows:
        def rss(x):
            return x.get("daemon_hwm_kb") or x.get("child_max_rss_kb") or x.get("max_rss_kb") or 0
        ratio = rate(ours) / rate(peer) if rate(peer) else 0
        if workload.startswith("one process") or workload == "process start":
            ratio_text = f"{ours['p50_ms'] / peer['p50_ms']:.2f}× the time" if peer["p50_ms"] else "-"
        else:
            ratio_text = f"{ratio:.2f}×"
        lines.append(f"| {workload} | {peer_name} | {rate(peer):.0f} | {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f} | {our_name} | {rate(ours):.0f} | "
                     f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} | {ratio_text} | {rss(peer) / 1024:.1f} | {rss(ours) / 1024:.1f} |")
        failures = peer.get("failures", 0) + ours.get("failures", 0)
        if failures:
            lines.append(f"| ↳ failures in this row: {failures} | | | | | | | | | |")
    lines += ["", "Reproduce: `make bench` (set `BENCH_SECONDS` for longer runs).", "",
              "## What a verified login costs, and what krb5-verifyd saves", "",
              "The naive calls (what saslauthd, pam_krb5 and the C reference do) cost three KDC exchanges per login: an AS-REQ "
              "answered \"pre-authentication required\" with the salt, a second AS-REQ with the encrypted timestamp, and a TGS-REQ "
              "for the verification ticket; plus the password's string-to-key (PBKDF2, 4,096 iterations for the AES-SHA1 types), "
              "which profiling (`perf`) shows is about three quarters of the client's CPU time per login.", "",
              "- **Learnt etype info** (`learned_preauth`, on by default for password-only logins): the first login of a principal "
              "asks the KDC for its enctype and salt with an AS-REQ without pre-authentication (no password involved, no failure counted; the engine reads PA-ETYPE-INFO2 from the reply itself, or uses `krb5_get_etype_info` under FAST); later "
              "logins send the timestamp made with them in the first AS-REQ (`krb5_get_init_creds_opt_set_salt`, "
              "`_set_etype_list`, `_set_preauth_list`). Unlike MIT's plain optimistic preauth, which guesses the default salt, a "
              "principal with a non-default salt works from its first login, and a wrong password counts once at the KDC.",
              "- **String-to-key in process** (part of `learned_preauth`): for the AES-SHA1 enctypes the key is made with "
              "BoringSSL's PBKDF2 (swift-crypto), about 3.5 times faster than libk5crypto's built-in SHA-1, checked against "
              "RFC 3962's vectors and libk5crypto itself, and handed to `krb5_init_creds_set_keytab` through a MEMORY keytab of the worker's "
              "pool, whose entry krb5 wipes when it is removed right after the login.",
              "- **The verification ticket from the AS** (`direct_verification_ticket`, on by default when no TGT is kept): the "
              "AS-REQ names the verification service (`in_tkt_service`), so `krb5_verify_init_creds` decrypts that ticket with "
              "the keytab directly and needs no TGS exchange. The proof is unchanged: only the real KDC can make a ticket the "
              "keytab decrypts.",
              "- **Armor from the first message**: armor caches are filled by krb5 itself, with the `fast_avail` entry, so an "
              "armored login does not first send its request unarmored (MIT's behaviour with a cache that lacks the entry).",
              "- **Reuse**: each worker keeps its context, keytab handle, server principal and armor ticket.", "",
              "What is left per login is one AS exchange and one PBKDF2, which no safe shortcut removes (caching derived keys "
              "would keep password equivalents in memory); the opt-in result cache skips the KDC altogether, with the "
              "trade-off described in [daemon.md](daemon.md). With the cache on, saslauthd's preforked processes answer a "
              "cached request with fewer system calls than an event loop does (accept, reads, one write, close, against "
              "NIO's epoll registrations and peer lookups), so there saslauthd -c stays ahead; both answer in well under a "
              "millisecond.", "",
              "Microbenchmarks of the hot paths that need no KDC (codecs, TOTP, result cache, principals, contexts): "
              "[microbenchmarks.md](microbenchmarks.md), `make bench-micro` (also run by `make bench`).", ""]
    if not ONLY_PROCESS:
        with open(os.path.join(ROOT, "docs/benchmarks.md"), "w") as f:
            f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
