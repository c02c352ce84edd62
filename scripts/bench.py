#!/usr/bin/env python3
"""make bench: the library, krb5-verifyd, krb5-login and their peers (the C API, saslauthd -a kerberos5,
kinit) measured side by side in one run against a throwaway realm on loopback; writes docs/benchmarks.md.

Every load is bounded in time (BENCH_SECONDS per measurement, default 5) and in count, and talks to 127.0.0.1 only
(the Active Directory rows: to the Samba DC on its own loopback address, AD_ADDRESS).

Issue #12's rows (misbehaving KDCs) run against a replica of the realm (realm.sh replica) whose KDCs are SIGSTOPped
and SIGCONTed, and a black-hole KDC of a second realm; issue #13's rows against a Samba AD DC: KRB5_TEST_AD=DIR (a
running ad-realm.sh realm), else one started here as root with Docker/ad/ad-realm.sh on AD_ADDRESS; BENCH_AD=0 skips
them. Issue #24's rows put the same page behind HTTP Basic through Apache + mod_authnz_external + krb5-login and through
nginx auth_request + krb5-verifyd's HTTP endpoint, loaded with wrk. BENCH_ONLY=faults, BENCH_ONLY=ad, BENCH_ONLY=web or
BENCH_ONLY=matrix (issue #20's path matrix, MIT and Heimdal) runs only those rows and prints them (docs/benchmarks.md untouched)."""
import base64, json, os, platform, re, shutil, signal, socket, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
REALM = os.path.join(ROOT, ".realm.bench")
# BENCH_ONLY=process: only the one-process-per-login rows (krb5-login vs kinit), printed, docs/benchmarks.md untouched.
ONLY_PROCESS = os.environ.get("BENCH_ONLY") == "process"
ONLY = os.environ.get("BENCH_ONLY", "")
# The login_timeout of the fault rows' daemon: short, so that the all-hung rows stay short.
FAULT_LOGIN_TIMEOUT = 3
# The hung-realm flood row alternates "alone" and "beside the flood" this many times.
FLOOD_ROUNDS = 3
# BENCH_BIN=DIR: binaries from elsewhere (a debug build, to try the script; numbers from release builds only).
BIN = os.environ.get("BENCH_BIN") or subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


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


def sasl(socket_path, login, password_env, concurrency=1, seconds=None, count=None, pid=None, expect_no=False, client_address=None):
    """One krb5-bench sasl load: `concurrency` clients, bounded by `seconds` and `count`."""
    args = [f"{BIN}/krb5-bench", "sasl", "--socket", socket_path, "--login", login, "--concurrency", str(concurrency),
            "--seconds", str(seconds if seconds is not None else SECONDS)]
    if count is not None:
        args += ["--count", str(count)]
    if pid is not None:
        args += ["--pid", str(pid)]
    if expect_no:
        args.append("--expect-no")
    if client_address:
        args += ["--client-address", client_address]
    return measure(args, password_env)


def merge(results):
    """Several runs of one load as one: logins and seconds added, p50 the median of the runs' p50s, p99 and peaks the largest."""
    p50s = sorted(x["p50_ms"] for x in results)
    return {"logins": sum(x["logins"] for x in results), "seconds": sum(x["seconds"] for x in results), "p50_ms": p50s[len(p50s) // 2],
            "p99_ms": max(x["p99_ms"] for x in results), "max_ms": max(x.get("max_ms", 0) for x in results),
            "failures": sum(x["failures"] for x in results), "daemon_hwm_kb": max(x.get("daemon_hwm_kb", 0) for x in results)}

TICK = os.sysconf("SC_CLK_TCK")
# Issue #20's path matrix: one line per cell, rendered as its own table.
MATRIX = []
# BENCH_BASELINE=DIR: a directory with an older release krb5-verifyd, run beside ours in each MIT cell (issue #22's before and
# after, from one run).
BASELINE_BIN = os.environ.get("BENCH_BASELINE")
BASELINE = []


def cpu_ticks(pid, with_children=False):
    """utime + stime of `pid` in clock ticks, with its child processes' (saslauthd's pre-forked workers) when asked."""
    def own(process):
        try:
            fields = open(f"/proc/{process}/stat").read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return 0
    total = own(pid)
    if with_children:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                total += own(int(entry))
    return total


def timed_sasl(socket_path, login, password_env, concurrency, pid, kdc_pid=None, tree=False, kdc_tree=False):
    """A sasl load with the daemon's (and the KDC's) CPU per login in ms added to its result; `kdc_tree` counts the
    KDC's child processes too (Heimdal's kdc forks its workers)."""
    daemon0, kdc0 = cpu_ticks(pid, tree), cpu_ticks(kdc_pid, kdc_tree) if kdc_pid else 0
    result = sasl(socket_path, login, password_env, concurrency=concurrency, pid=pid)
    daemon1, kdc1 = cpu_ticks(pid, tree), cpu_ticks(kdc_pid, kdc_tree) if kdc_pid else 0
    logins = max(result["logins"], 1)
    result["daemon_cpu_ms"] = (daemon1 - daemon0) * 1000 / TICK / logins
    result["kdc_cpu_ms"] = (kdc1 - kdc0) * 1000 / TICK / logins if kdc_pid else None
    return result


def matrix_cell(rows, goals, kdc, principal, armor, concurrency, theirs, ours, s2k_ms, goal):
    """One cell of the path matrix: a row of the main table, a line of the matrix, and its goals."""
    ratio = rate(ours) / rate(theirs) if rate(theirs) else 0
    kdc_ms = ours.get("kdc_cpu_ms")
    limit = os.cpu_count() * 1000 / (s2k_ms + kdc_ms) if kdc_ms else None
    MATRIX.append((kdc, principal, armor, concurrency, rate(ours), rate(theirs), ratio, ours["daemon_cpu_ms"], theirs["daemon_cpu_ms"],
                   kdc_ms, theirs.get("kdc_cpu_ms"), limit))
    rows.append((f"{kdc}, {principal}, {armor}, saslauthd protocol, concurrency {concurrency}", "saslauthd -a kerberos5 (5 processes, unarmored)",
                 theirs, "krb5-verifyd (4 workers)", ours))
    if goal:
        goals.append((f"{kdc}, {principal}, {armor}, concurrency {concurrency}: {ratio:.2f}× saslauthd (goal ≥ 3×)", ratio >= 3))
    if limit and principal == "preauth" and concurrency == 16 and kdc == "MIT":
        goals.append((f"MIT, preauth, {armor}, concurrency 16: {rate(ours) / limit:.0%} of the machine's limit, {limit:.0f}/s "
                      f"(goal ≥ 50 %)", rate(ours) / limit >= 0.5))


def mit_matrix(rows, goals, r, server, s2k_ms):
    """Issue #20: {no preauth, preauth} × {no armor, anonymous FAST} on the MIT realm, krb5-verifyd against saslauthd at
    concurrency 4 and 16, with the daemons' and the KDC's CPU per login."""
    kdc_pid = int(open(os.path.join(REALM, "krb5kdc.pid")).read().split()[0])
    sasl_dir = os.path.join(REALM, "saslauthd")
    sasl_pid = start_saslauthd(sasl_dir, r["KRB5_CONFIG_FILE"], r["HOST_KEYTAB"])
    daemons = {}
    try:
        for armor in ("none", "anonymous"):
            for name, binary in (("", BIN), ("baseline-", BASELINE_BIN)):
                if not binary:
                    continue
                path = os.path.join(REALM, f"verifyd-{name}{armor}.mux")
                daemons[name + armor] = subprocess.Popen([f"{binary}/krb5-verifyd", "--sasl-socket", path, "--krb5-config", r["KRB5_CONFIG_FILE"],
                                                          "--keytab", r["HOST_KEYTAB"], "--server-principal", server, "--workers", "4", "--log-level", "error",
                                                          "--armor", armor], stderr=subprocess.DEVNULL)
                wait_for(path)
        for principal, user, password in (("no preauth", r["USER"], r["USER_PASSWORD"]), ("preauth", r["PREAUTH_USER"], r["PREAUTH_PASSWORD"])):
            secret = {"KRB5_BENCH_PASSWORD": password}
            for armor, label in (("none", "no armor"), ("anonymous", "anonymous FAST")):
                for concurrency in (4, 16):
                    theirs = timed_sasl(os.path.join(sasl_dir, "mux"), user, secret, concurrency, sasl_pid, kdc_pid, tree=True)
                    ours = timed_sasl(os.path.join(REALM, f"verifyd-{armor}.mux"), user, secret, concurrency, daemons[armor].pid, kdc_pid)
                    matrix_cell(rows, goals, "MIT", principal, label, concurrency, theirs, ours, s2k_ms, goal=True)
                    if BASELINE_BIN:
                        before = timed_sasl(os.path.join(REALM, f"verifyd-baseline-{armor}.mux"), user, secret, concurrency, daemons["baseline-" + armor].pid, kdc_pid)
                        BASELINE.append((principal, label, concurrency, rate(before), before["daemon_cpu_ms"], rate(ours), ours["daemon_cpu_ms"]))
                    if concurrency == 16 and principal == "no preauth" and armor == "none":
                        rss_mb = ours.get("daemon_hwm_kb", 0) / 1024
                        goals.append((f"krb5-verifyd's RSS at concurrency 16: {rss_mb:.1f} MB (goal ≤ 40 MB)", 0 < rss_mb <= 40))
    finally:
        for daemon in daemons.values():
            daemon.terminate()
            daemon.wait()
        stop_pid(sasl_pid)


def heimdal_rows(rows, goals, notes, host_name, s2k_ms):
    """Issue #20: the Heimdal KDC (preauth required, its default), krb5-verifyd against saslauthd, unarmored."""
    if os.environ.get("BENCH_AD") == "0" or os.geteuid() != 0:
        notes.append("Heimdal rows skipped (BENCH_AD=0, or not root: heimdal-realm.sh needs a chroot).")
        return
    directory = REALM + ".heimdal"
    script = os.path.join(ROOT, "Docker/ad/heimdal-realm.sh")
    subprocess.run([script, "down", directory], capture_output=True)
    shutil.rmtree(directory, ignore_errors=True)
    up = subprocess.run([script, "up", directory], capture_output=True, text=True)
    if up.returncode != 0:
        notes.append(f"Heimdal rows skipped: heimdal-realm.sh up failed: {up.stderr.strip()[-300:]}")
        return
    daemon, sasl_pid = None, None
    try:
        h = env_file(os.path.join(directory, "realm.env"))
        # saslauthd verifies as host/<this host>: that principal, and a keytab of its own with it.
        subprocess.run([script, "kadmin", directory, "add", "--random-key", "--use-defaults", f"host/{host_name}"], capture_output=True)
        keytab = os.path.join(directory, "saslauthd.keytab")
        subprocess.run([script, "kadmin", directory, "ext_keytab", "-k", keytab, f"host/{host_name}"], capture_output=True, check=True)
        sasl_pid = start_saslauthd(os.path.join(REALM, "saslauthd-heimdal"), h["KRB5_CONFIG_FILE"], keytab)
        ours_socket = os.path.join(REALM, "verifyd-heimdal.mux")
        daemon = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", ours_socket, "--krb5-config", h["KRB5_CONFIG_FILE"], "--keytab", h["HOST_KEYTAB"],
                                   "--server-principal", h["HOST_PRINCIPAL"], "--workers", "4", "--log-level", "error"], stderr=subprocess.DEVNULL)
        wait_for(ours_socket)
        kdc_pid = next((int(entry) for entry in os.listdir("/proc") if entry.isdigit() and os.path.exists(f"/proc/{entry}/cmdline")
                        and open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")[0].rsplit(b"/", 1)[-1] == b"kdc"), None)
        secret = {"KRB5_BENCH_PASSWORD": h["USER_PASSWORD"]}
        for concurrency in (4, 16):
            theirs = timed_sasl(os.path.join(REALM, "saslauthd-heimdal", "mux"), h["USER"], secret, concurrency, sasl_pid, kdc_pid, tree=True, kdc_tree=True)
            ours = timed_sasl(ours_socket, h["USER"], secret, concurrency, daemon.pid, kdc_pid, kdc_tree=True)
            matrix_cell(rows, goals, "Heimdal", "preauth", "no armor", concurrency, theirs, ours, s2k_ms, goal=True)
        notes.append("Heimdal: its KDC requires pre-authentication by default (`require-preauth = true`), so the matrix has no "
                     "Heimdal cell without preauth; and it has no anonymous PKINIT configured, so no armored cell.")
    finally:
        if daemon:
            daemon.terminate()
            daemon.wait()
        if sasl_pid:
            stop_pid(sasl_pid)
        subprocess.run([script, "down", directory], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def start_saslauthd(directory, krb5_config, keytab):
    """saslauthd -a kerberos5 (5 threads) on DIR/mux with its own krb5.conf and keytab; returns its pid."""
    os.makedirs(directory, exist_ok=True)
    subprocess.run(["saslauthd", "-a", "kerberos5", "-m", directory, "-n", "5"], check=True,
                   env={**os.environ, "KRB5_CONFIG": krb5_config, "KRB5_KTNAME": keytab})
    wait_for(os.path.join(directory, "mux"))
    wait_for(os.path.join(directory, "saslauthd.pid"))
    return int(open(os.path.join(directory, "saslauthd.pid")).read().split()[0])


def stop_pid(pid):
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


class BlackHoleKDC:
    """A KDC that never answers, on 127.0.0.1: accepts TCP connections and holds them, lets datagrams queue."""
    def __init__(self):
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp.listen(1024)
        self.held = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                connection, _ = self.tcp.accept()
            except OSError:
                return
            self.held.append(connection)
            del self.held[:-4096]

    def close(self):
        for s in [self.tcp, self.udp] + self.held:
            s.close()


def fault_rows(rows, goals):
    """Issue #12: a primary and a kprop-fed replica, a hung realm; krb5-verifyd (login_timeout FAULT_LOGIN_TIMEOUT s)
    and saslauthd on the same KDCs. Every load is bounded by count or time; the KDCs are SIGCONTed on every path."""
    subprocess.run([os.path.join(ROOT, "Docker/kdc/realm.sh"), "replica", REALM], check=True, capture_output=True)
    r = env_file(os.path.join(REALM, "realm.env"))
    secret = {"KRB5_BENCH_PASSWORD": r["USER_PASSWORD"]}
    kdc_pids = [int(open(r[key]).read().split()[0]) for key in ("KDC_PID_FILE", "REPLICA_KDC_PID_FILE")]
    hole = BlackHoleKDC()
    # Both KDCs of the realm (primary first), and a second realm HUNG.BENCH whose only KDC is the black hole; UDP
    # first, krb5's default (as the realm's krb5.conf has it), for both daemons.
    config = os.path.join(REALM, "krb5-faults.conf")
    text = open(r["FAILOVER_KRB5_CONFIG"]).read().replace("[realms]\n", f"[realms]\n HUNG.BENCH = {{\n  kdc = 127.0.0.1:{hole.port}\n }}\n", 1)
    assert "HUNG.BENCH" in text
    open(config, "w").write(text)
    ours_socket = os.path.join(REALM, "verifyd-faults.mux")
    # The throttle is out of the way: the flood's kdc-unreachable answers would otherwise block its address.
    daemon = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", ours_socket, "--krb5-config", config, "--keytab", r["HOST_KEYTAB"],
                               "--server-principal", r["HOST_PRINCIPAL"], "--workers", "4", "--log-level", "error",
                               "--login-timeout", f"{FAULT_LOGIN_TIMEOUT}s", "--throttle-failures", "1000000000"], stderr=subprocess.DEVNULL)
    sasl_pid = None
    try:
        sasl_pid = start_saslauthd(os.path.join(REALM, "saslauthd-faults"), config, r["HOST_KEYTAB"])
        theirs_socket = os.path.join(REALM, "saslauthd-faults", "mux")
        wait_for(ours_socket)
        user = r["USER"]
        healthy = sasl(ours_socket, user, secret, pid=daemon.pid)
        os.kill(kdc_pids[0], signal.SIGSTOP)
        try:
            noticed = sasl(ours_socket, user, secret, count=1)
            hung = sasl(ours_socket, user, secret, pid=daemon.pid)
            # MIT 1.20 waits about 1 s on the hung primary in every call: a few logins are enough.
            mit = sasl(theirs_socket, user, secret, count=max(3, int(SECONDS)), seconds=SECONDS * 3, pid=sasl_pid)
            os.kill(kdc_pids[1], signal.SIGSTOP)
            everything = sasl(ours_socket, user, secret, concurrency=16, count=16, seconds=FAULT_LOGIN_TIMEOUT * 4, expect_no=True)
        finally:
            for pid in kdc_pids:
                os.kill(pid, signal.SIGCONT)
        recovered = sasl(ours_socket, user, secret, count=1)
        delta = hung["p50_ms"] - healthy["p50_ms"]
        rows.append(("primary hung (SIGSTOP), replica healthy, 1 at a time, once the dead KDC was noticed", "krb5-verifyd, both KDCs healthy", healthy,
                     f"krb5-verifyd, primary hung (the login that noticed it: {noticed['p50_ms']:.0f} ms)", hung,
                     f"{delta:+.1f} ms p50 (goal ≤ +100 ms)"))
        goals.append((f"hung primary: p50 {delta:+.1f} ms against healthy (goal ≤ +100 ms)", delta <= 100 and hung["failures"] == 0))
        rows.append(("primary hung (SIGSTOP), replica healthy, 1 at a time", "saslauthd -a kerberos5 (MIT 1.20's client)", mit, "krb5-verifyd", hung, None))
        slowest = everything["max_ms"] / 1000
        answered = everything["logins"] - everything["failures"]
        rows.append(("all KDCs hung, 16 concurrent logins", None, None, f"krb5-verifyd --login-timeout {FAULT_LOGIN_TIMEOUT}s", everything,
                     f"{answered}/16 answered NO; slowest {slowest:.2f} s = {slowest / FAULT_LOGIN_TIMEOUT:.2f}× login_timeout"))
        # "Within login_timeout": the answer is due when the timeout fires; allowed: the timer's and the reply's own latency (0.5 s).
        goals.append((f"all KDCs hung: {answered} of 16 concurrent logins answered (NO), the slowest after {slowest:.2f} s, login_timeout {FAULT_LOGIN_TIMEOUT} s",
                      answered == 16 and everything["logins"] == 16 and slowest <= FAULT_LOGIN_TIMEOUT + 0.5))
        ok = recovered["failures"] == 0 and recovered["logins"] == 1
        rows.append(("first login after SIGCONT (both KDCs were hung and are remembered as such)", None, None, "krb5-verifyd", recovered,
                     f"{'OK' if ok else 'FAILED'} in {recovered['p50_ms']:.0f} ms"))
        goals.append((f"first login after recovery: {'succeeded' if ok else 'FAILED'} ({recovered['p50_ms']:.0f} ms)", ok))

        # Alone and beside the flood in turns, FLOOD_ROUNDS times, so that the machine's load shifts hit both alike.
        alone_runs, beside_runs, answered_no = [], [], 0
        for _ in range(FLOOD_ROUNDS):
            alone_runs.append(sasl(ours_socket, user, secret, concurrency=4, pid=daemon.pid))
            flood = subprocess.Popen([f"{BIN}/krb5-bench", "sasl", "--socket", ours_socket, "--login", "flood@HUNG.BENCH", "--concurrency", "32",
                                      "--seconds", str(SECONDS + 1), "--count", "100000", "--expect-no", "--client-address", "192.0.2.1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **secret})
            time.sleep(0.5)
            beside_runs.append(sasl(ours_socket, user, secret, concurrency=4, pid=daemon.pid))
            flooded = json.loads(flood.communicate(timeout=SECONDS + FAULT_LOGIN_TIMEOUT * 4)[0].strip().splitlines()[-1])
            answered_no += flooded["logins"] - flooded["failures"]
        alone, beside = merge(alone_runs), merge(beside_runs)
        ratio = rate(beside) / rate(alone) if rate(alone) else 0
        rows.append((f"default-realm logins, 4 at a time, beside a flood of 32 concurrent logins of a hung realm ({FLOOD_ROUNDS} rounds, in turns)", "krb5-verifyd, no flood", alone,
                     f"krb5-verifyd, beside the flood ({answered_no} hung-realm logins answered NO meanwhile)", beside,
                     f"{ratio:.2f}× the rate, p50 {beside['p50_ms'] - alone['p50_ms']:+.1f} ms"))
        goals.append((f"hung realm beside the default realm: {ratio:.2f}× the default realm's rate, p50 {beside['p50_ms'] - alone['p50_ms']:+.1f} ms, "
                       f"no failures: {beside['failures'] == 0} (goal: adds nothing; counted as met at ≥ 0.85× the rate, within this machine's run-to-run noise)", beside["failures"] == 0 and ratio >= 0.85))
    finally:
        for pid in kdc_pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        daemon.terminate()
        daemon.wait()
        if sasl_pid:
            stop_pid(sasl_pid)
        hole.close()


AD_REALM_DIR = REALM + ".ad"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, process):
    for _ in range(600):
        if process.poll() is not None:
            sys.exit(f"bench: {process.args[0]} exited ({process.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    sys.exit(f"bench: nothing listens on {port}")


def wrk(url, user, password, directory, connections=16, seconds=None):
    """wrk over keep-alive connections for `seconds`, the Basic credentials in a Lua script file (not on a command line)."""
    script = os.path.join(directory, "basic.lua")
    with open(os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        f.write(f'wrk.headers["Authorization"] = "Basic {token}"\n')
    duration = seconds if seconds is not None else SECONDS
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "30s", "--latency", "-s", script, url],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: wrk {url} failed: {out.stderr.strip()[-400:]}")
    text = out.stdout
    def latency(percent):
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == percent:
                value = parts[1]
                for suffix, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
                    if value.endswith(suffix):
                        return float(value[:-len(suffix)]) * scale
        return 0.0
    total = next(int(l.split()[0]) for l in text.splitlines() if "requests in" in l)
    bad = sum(int(l.split(":")[1]) for l in text.splitlines() if l.strip().startswith("Non-2xx"))
    errors = sum(int(n) for l in text.splitlines() if l.strip().startswith("Socket errors") for n in re.findall(r"\d+", l))
    return {"logins": total - bad, "seconds": duration, "p50_ms": latency("50%"), "p99_ms": latency("99%"), "failures": bad + errors}


def web_rows(rows, goals, r, server):
    """Issue #24: the same static page behind HTTP Basic, three ways, each at 16 keep-alive connections: Apache with
    mod_authnz_external starting krb5-login per request; nginx auth_request to krb5-verifyd's HTTP endpoint; the same
    with the result cache. All three with one krb5.conf, krb5's default transport."""
    directory = os.path.join(REALM, "web")
    os.makedirs(os.path.join(directory, "www"), exist_ok=True)
    with open(os.path.join(directory, "www", "index.html"), "w") as f:
        f.write("the protected page\n")
    os.chmod(directory, 0o755)
    # Apache's children run as nobody (Apache refuses root): krb5-login then needs the keytab and krb5.conf readable.
    keytab = os.path.join(directory, "host.keytab")
    shutil.copy(r["HOST_KEYTAB"], keytab)
    os.chmod(keytab, 0o644)
    os.chmod(REALM, 0o755)
    # krb5's default transport (UDP for small messages) on both sides, as the realm's krb5.conf has it: over TCP only,
    # krb5kdc's backlog of 5 overflows at 16 logins in flight and each dropped SYN costs a 1 s retransmission, which
    # would measure the KDC's backlog rather than the web servers. A copy readable by the web servers' users.
    krb5_config = os.path.join(directory, "krb5-udp.conf")
    shutil.copyfile(r["KRB5_CONFIG_FILE"], krb5_config)
    os.chmod(krb5_config, 0o644)
    processes = []
    try:
        apache_port = free_port()
        modules = "/usr/lib/apache2/modules"
        with open(os.path.join(directory, "apache2.conf"), "w") as f:
            f.write("\n".join([
                f"ServerRoot {directory}", "ServerName localhost", f"Listen 127.0.0.1:{apache_port}", f"PidFile {directory}/apache2.pid",
                f"ErrorLog {directory}/apache-error.log", "User nobody", "Group nogroup",
                # prefork: under the threaded event MPM, mod_authnz_external loses children's exit status now and then
                # ("Could not get status from child process") and refuses a right password.
                f"LoadModule mpm_prefork_module {modules}/mod_mpm_prefork.so", f"LoadModule authn_core_module {modules}/mod_authn_core.so",
                f"LoadModule authz_core_module {modules}/mod_authz_core.so", f"LoadModule authz_user_module {modules}/mod_authz_user.so",
                f"LoadModule auth_basic_module {modules}/mod_auth_basic.so", f"LoadModule authnz_external_module {modules}/mod_authnz_external.so",
                "StartServers 20", "MinSpareServers 20", "MaxSpareServers 40", "MaxRequestWorkers 40", "KeepAlive On", "MaxKeepAliveRequests 0",
                f'DefineExternalAuth krb5 pipe "{BIN}/krb5-login --krb5-config {krb5_config} --keytab {keytab} --server-principal {server}"',
                f"DocumentRoot {directory}/www",
                f'<Directory "{directory}/www">', "  AuthType Basic", '  AuthName "bench"', "  AuthBasicProvider external", "  AuthExternal krb5",
                "  Require valid-user", "</Directory>", ""]))
        # A session of its own: prefork's parent signals its whole process group when it stops.
        apache = subprocess.Popen(["apache2", "-f", os.path.join(directory, "apache2.conf"), "-DFOREGROUND"], stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        processes.append(apache)
        wait_for_port(apache_port, apache)
        url = "/index.html"
        helper = wrk(f"http://127.0.0.1:{apache_port}{url}", r["USER"], r["USER_PASSWORD"], directory)

        endpoints = []
        for name, extra in (("uncached", []), ("cached", ["--result-cache-ttl", "60s"])):
            socket_path = os.path.join(directory, f"verifyd-{name}.http")
            daemon = subprocess.Popen([f"{BIN}/krb5-verifyd", "--http-socket", socket_path, "--http-trusted-uids", str(os.getuid()),
                                       "--krb5-config", krb5_config, "--keytab", r["HOST_KEYTAB"], "--server-principal", server,
                                       "--workers", "4", "--log-level", "error", "--throttle-failures", "1000000"] + extra, stderr=subprocess.DEVNULL)
            processes.append(daemon)
            wait_for(socket_path)
            port = free_port()
            conf = os.path.join(directory, f"nginx-{name}.conf")
            with open(conf, "w") as f:
                f.write(f"""{"user root root;" if os.getuid() == 0 else ""}
worker_processes 1;
pid {directory}/nginx-{name}.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {directory}/nginx-{name}-body; proxy_temp_path {directory}/nginx-{name}-proxy;
    fastcgi_temp_path {directory}/nginx-{name}-fcgi; uwsgi_temp_path {directory}/nginx-{name}-uwsgi; scgi_temp_path {directory}/nginx-{name}-scgi;
    upstream krb5_verifyd {{ server unix:{socket_path}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        root {directory}/www;
        location / {{ auth_request /_krb5_auth; }}
        location = /_krb5_auth {{
            internal;
            proxy_pass http://krb5_verifyd/auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
""")
            nginx = subprocess.Popen(["nginx", "-c", conf, "-p", directory, "-e", os.path.join(directory, f"nginx-{name}-error.log"), "-g", "daemon off;"],
                                     stderr=subprocess.DEVNULL)
            processes.append(nginx)
            wait_for_port(port, nginx)
            result = wrk(f"http://127.0.0.1:{port}{url}", r["USER"], r["USER_PASSWORD"], directory)
            result["daemon_hwm_kb"] = daemon_hwm_kb(daemon.pid)
            endpoints.append(result)
        rows.append(("the same page behind HTTP Basic, 16 keep-alive connections", "Apache mod_authnz_external + krb5-login per request", helper,
                     "nginx auth_request + krb5-verifyd --http-socket", endpoints[0]))
        rows.append(("the same page behind HTTP Basic, 16 keep-alive connections", "Apache mod_authnz_external + krb5-login per request", helper,
                     "nginx auth_request + krb5-verifyd --http-socket --result-cache-ttl 60s", endpoints[1]))
        if rate(helper):
            ratio = rate(endpoints[0]) / rate(helper)
            goals.append((f"nginx + the HTTP endpoint against Apache + krb5-login per request, no result cache: {ratio:.1f}× (goal ≥ 10×)", ratio >= 10))
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def daemon_hwm_kb(pid):
    try:
        return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def ad_rows(rows, goals, notes, host_name):
    """Issue #13: krb5-verifyd against saslauthd -a kerberos5 on the same Samba AD DC (its KDC is Samba's Heimdal)."""
    if os.environ.get("BENCH_AD") == "0":
        notes.append("Active Directory rows skipped (BENCH_AD=0).")
        return
    directory = os.environ.get("KRB5_TEST_AD", "")
    started = False
    if not directory:
        if os.geteuid() != 0:
            notes.append("Active Directory rows skipped: not root, and no KRB5_TEST_AD (ad-realm.sh needs a chroot and a loopback address).")
            return
        subprocess.run([os.path.join(ROOT, "Docker/ad/ad-realm.sh"), "down", AD_REALM_DIR], capture_output=True)
        shutil.rmtree(AD_REALM_DIR, ignore_errors=True)
        # ad-realm.sh takes the DC's address from AD_ADDRESS (inherited).
        up = subprocess.run([os.path.join(ROOT, "Docker/ad/ad-realm.sh"), "up", AD_REALM_DIR], capture_output=True, text=True)
        if up.returncode != 0:
            notes.append(f"Active Directory rows skipped: ad-realm.sh up failed: {up.stderr.strip()[-300:]}")
            return
        directory, started = AD_REALM_DIR, True
    daemons, sasl_pid = [], None
    try:
        ad = env_file(os.path.join(directory, "realm.env"))
        script = ad.get("REALM_SCRIPT") or os.path.join(ROOT, "Docker/ad/ad-realm.sh")
        secret = {"KRB5_BENCH_PASSWORD": ad["USER_PASSWORD"]}
        # saslauthd verifies against host/<this host> (krb5_sname_to_principal(NULL)): the DC must know that SPN
        # (on WS1$, whose keys it shares) and the keytab must hold it. A copy of WS1$'s keytab, its host/ entries
        # also under host/<this host>, in the bench's own directory.
        subprocess.run([script, "samba-tool", directory, "spn", "add", f"host/{host_name}", "WS1$"], capture_output=True)
        keytab = os.path.join(REALM, "ad-saslauthd.keytab")
        copy_keytab_with_host(ad["HOST_KEYTAB"], host_name, keytab)
        sasl_pid = start_saslauthd(os.path.join(REALM, "saslauthd-ad"), ad["KRB5_CONFIG_FILE"], keytab)
        ours_socket = os.path.join(REALM, "verifyd-ad.mux")
        daemon = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", ours_socket, "--krb5-config", ad["KRB5_CONFIG_FILE"], "--keytab", ad["HOST_KEYTAB"],
                                   "--server-principal", ad["HOST_PRINCIPAL"], "--workers", "4", "--log-level", "error"], stderr=subprocess.DEVNULL)
        daemons.append(daemon)
        wait_for(ours_socket)
        for concurrency in (4, 16):
            theirs = timed_sasl(os.path.join(REALM, "saslauthd-ad", "mux"), ad["USER"], secret, concurrency, sasl_pid, tree=True)
            ours = timed_sasl(ours_socket, ad["USER"], secret, concurrency, daemon.pid)
            # The DC is Samba's many processes: its CPU per login is not read here (no limit column); the goal is MIT's and Heimdal's.
            matrix_cell(rows, goals, f"Active Directory (Samba {ad.get('KDC_ADDRESS', 'DC')})", "preauth", "no armor", concurrency, theirs, ours, 0, goal=False)
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.wait()
        if sasl_pid:
            stop_pid(sasl_pid)
        if started:
            subprocess.run([os.path.join(ROOT, "Docker/ad/ad-realm.sh"), "down", AD_REALM_DIR], capture_output=True)
            shutil.rmtree(AD_REALM_DIR, ignore_errors=True)


def copy_keytab_with_host(source, host_name, destination):
    """Writes `source` (a v0x502 keytab) to `destination` with every host/X entry also as host/`host_name`."""
    import struct
    data = open(source, "rb").read()
    if data[:2] != b"\x05\x02":
        sys.exit(f"bench: {source} is not a version 0x502 keytab")
    entries, offset = [], 2
    while offset + 4 <= len(data):
        size, = struct.unpack(">i", data[offset:offset + 4])
        offset += 4
        if size > 0:
            entries.append(data[offset:offset + size])
        offset += abs(size)

    def components(entry):
        count, = struct.unpack(">H", entry[:2])
        position, parts = 2, []
        for _ in range(count + 1):   # the realm, then the components
            length, = struct.unpack(">H", entry[position:position + 2])
            parts.append(entry[position + 2:position + 2 + length])
            position += 2 + length
        return parts, position

    renamed = []
    for entry in entries:
        parts, end = components(entry)
        if len(parts) == 3 and parts[1] == b"host":
            fields = [parts[0], b"host", host_name.encode()]
            renamed.append(struct.pack(">H", 2) + b"".join(struct.pack(">H", len(f)) + f for f in fields) + entry[end:])
    with open(destination, "wb") as out:
        out.write(b"\x05\x02" + b"".join(struct.pack(">i", len(e)) + e for e in entries + renamed))
    os.chmod(destination, 0o600)


def main():
    subprocess.run([os.path.join(ROOT, "Docker/kdc/realm.sh"), "down", REALM], capture_output=True)
    shutil.rmtree(REALM, ignore_errors=True)
    subprocess.run([os.path.join(ROOT, "Docker/kdc/realm.sh"), "up", REALM], check=True, capture_output=True)
    r = env_file(os.path.join(REALM, "realm.env"))
    secret = {"KRB5_BENCH_PASSWORD": r["USER_PASSWORD"]}
    server = r["HOST_PRINCIPAL"]
    rows = []
    daemons = []
    goals, notes = [], []
    host_name = server.split("/", 1)[1].split("@", 1)[0]
    try:
        if ONLY == "web":
            web_rows(rows, goals, r, server)
        elif ONLY == "faults":
            fault_rows(rows, goals)
        elif ONLY == "ad":
            ad_rows(rows, goals, notes, host_name)
        elif ONLY == "matrix":
            s2k_ms = measure([f"{BIN}/krb5-bench", "string-to-key"])["ms_per_key"]
            mit_matrix(rows, goals, r, server, s2k_ms)
            heimdal_rows(rows, goals, notes, host_name, s2k_ms)
        elif not ONLY_PROCESS:
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

            # 3. Issue #20's path matrix: krb5-verifyd vs saslauthd -a kerberos5 over the saslauthd protocol for each kind of
            # principal and armor, with CPU per login; and the C reference beside the daemon.
            s2k_ms = measure([f"{BIN}/krb5-bench", "string-to-key"])["ms_per_key"]
            notes.append(f"One AES-256 password key (PBKDF2, 4,096 iterations) costs {s2k_ms:.3f} ms of CPU here "
                         "(`krb5-bench string-to-key`); the machine's limit on verified logins is cores ÷ (that + the KDC's CPU per login).")
            mit_matrix(rows, goals, r, server, s2k_ms)
            heimdal_rows(rows, goals, notes, host_name, s2k_ms)
            ours_socket = os.path.join(REALM, "verifyd.mux")
            verifyd = subprocess.Popen([f"{BIN}/krb5-verifyd", "--sasl-socket", ours_socket, "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"],
                                        "--server-principal", server, "--workers", "4", "--log-level", "error"], stderr=subprocess.DEVNULL)
            daemons.append(verifyd)
            wait_for(ours_socket)
            for concurrency in (4, 16):
                ours = measure([f"{BIN}/krb5-bench", "sasl", "--socket", ours_socket, "--login", r["USER"], "--concurrency", str(concurrency),
                                "--seconds", str(SECONDS), "--pid", str(verifyd.pid)], secret)
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
            if rate(theirs):
                ratio = rate(ours) / rate(theirs)
                goals.append((f"result cache against saslauthd -c at concurrency 4: {ratio:.2f}× (goal ≥ 1×)", ratio >= 1))
            subprocess.run(["kill", str(cached_pid)])
            for daemon in daemons:
                daemon.terminate()
                daemon.wait()
            daemons.clear()

            # 5. Issue #12: misbehaving KDCs (a replica is added to the realm here), and 6. issue #13: Active Directory.
            fault_rows(rows, goals)
            ad_rows(rows, goals, notes, host_name)
            # 7. Issue #24: web servers in front of the HTTP endpoint and of the per-process helper.
            web_rows(rows, goals, r, server)

        if ONLY not in ("faults", "ad", "matrix", "web"):
            # 4. One process per login: kinit (no verification) vs krb5-login (with verification), spawned and reaped
            # here (posix_spawn + wait4). The earlier harness (krb5-bench process) used Foundation's Process, whose
            # waitUntilExit on Linux runs the run loop in 50 ms slices: any child still running when it is called
            # measured ~51 ms (kinit, krb5-login, and `sleep 0.002` alike).
            realm_env = {"KRB5_CONFIG": r["KRB5_CONFIG_FILE"]}
            # make release-static: the same helper with the Swift runtime linked in (-static-stdlib).
            static = os.path.join(ROOT, ".build-static", "release", "krb5-login")
            helpers = [("krb5-login", f"{BIN}/krb5-login")] + ([("krb5-login -static-stdlib", static)] if os.path.exists(static) else [])
            for principal, user, secret_text in (("no preauth", r["USER"], r["USER_PASSWORD"]), ("preauth", r["PREAUTH_USER"], r["PREAUTH_PASSWORD"])):
                password = secret_text.encode()
                kinit_args = [shutil.which("kinit"), "-c", "MEMORY:bench", user]
                commands = [(kinit_args, password + b"\n", realm_env, True, (0,))]
                for _, helper in helpers:
                    commands.append(([helper, "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"], "--server-principal", server],
                                     user.encode() + b"\n" + password + b"\n", realm_env, True, (0,)))
                for _, helper in helpers:
                    commands.append(([helper, "--pam-exec", "--krb5-config", r["KRB5_CONFIG_FILE"], "--keytab", r["HOST_KEYTAB"],
                                      "--server-principal", server, "--no-authorize"], password + b"\0",
                                     {"PAM_USER": user, "PAM_TYPE": "auth", "PAM_SERVICE": "bench"}, False, (0,)))
                results = spawn_interleaved(commands)
                kinit = results[0]
                for (name, _), login in zip(helpers, results[1:1 + len(helpers)]):
                    rows.append((f"MIT, {principal}: one process per login", "kinit (no verification)", kinit, f"{name} (with verification)", login))
                    if kinit["p50_ms"]:
                        ratio, goal = login["p50_ms"] / kinit["p50_ms"], 1.1 if "static" in name else 1.3
                        goals.append((f"MIT, {principal}: {name} costs {ratio:.2f}× kinit's time (goal ≤ {goal}×)", ratio <= goal))
                for (name, _), pam in zip(helpers, results[1 + len(helpers):]):
                    rows.append((f"MIT, {principal}: one process per login, pam_exec form", "kinit (no verification)", kinit, f"{name} --pam-exec (with verification)", pam))
            # Process start alone: kinit -V with no input reads the configuration, makes a context, sends one AS-REQ (answered
            # "pre-authentication required"), asks for the password and stops at end of input; krb5-login --version prints its version.
            starts = spawn_interleaved([([shutil.which("kinit"), "-V", "-c", "MEMORY:bench", r["PREAUTH_USER"]], b"", realm_env, True, (1,))]
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
             f"`make bench` on {os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}, MIT krb5 KDC on 127.0.0.1 "
             "(and a kprop-fed replica for the fault rows, a Samba AD DC on its loopback address for the Active Directory rows), "
             f"{SECONDS:g} s per measurement, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Absolute numbers are noisy on shared 2-core machines; the ratios within one run are what count. "
             "RSS is the measuring process's peak for in-process rows, the daemon's peak (VmHWM) for daemon rows, "
             "for per-process rows the command's own peak from GNU time. Per-process rows run their commands interleaved, "
             "one of each per round.", "",
             "| workload | peer | peer rate /s | peer p50 / p99 ms | ours | our rate /s | our p50 / p99 ms | ratio (ours / peer) | peer RSS MB | our RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        workload, peer_name, peer, our_name, ours = row[:5]
        given_ratio = row[5] if len(row) > 5 else None
        def rss(x):
            return x.get("daemon_hwm_kb") or x.get("child_max_rss_kb") or x.get("max_rss_kb") or 0
        ratio = rate(ours) / rate(peer) if peer and rate(peer) else 0
        if given_ratio:
            ratio_text = given_ratio
        elif "one process" in workload or workload == "process start":
            ratio_text = f"{ours['p50_ms'] / peer['p50_ms']:.2f}× the time" if peer["p50_ms"] else "-"
        else:
            ratio_text = f"{ratio:.2f}×"
        peer_cells = f"{peer_name} | {rate(peer):.0f} | {peer['p50_ms']:.2f} / {peer['p99_ms']:.2f}" if peer else "— | — | —"
        lines.append(f"| {workload} | {peer_cells} | {our_name} | {rate(ours):.0f} | "
                     f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} | {ratio_text} | {rss(peer) / 1024 if peer else 0:.1f} | {rss(ours) / 1024:.1f} |")
        # Rows whose logins must fail (a hung KDC's) count their NO answers as expected, not as failures.
        failures = (peer or {}).get("failures", 0) + ours.get("failures", 0)
        if failures and not workload.startswith("all KDCs hung"):
            lines.append(f"| ↳ failures in this row: {failures} | | | | | | | | | |")
    if MATRIX:
        def ms(value):
            return f"{value:.2f}" if value is not None else "—"
        lines += ["", "## Path matrix (issue #20)", "",
                  "krb5-verifyd (4 workers) against saslauthd -a kerberos5 (5 processes; it has no FAST) over the saslauthd protocol, per "
                  "KDC, kind of principal and armor, in this run. CPU per login from /proc (utime + stime over the load, divided by the "
                  "logins; saslauthd's includes its pre-forked workers). The machine's limit is cores ÷ (one password key + the KDC's CPU "
                  "per login): what a verified login must cost on one machine that runs both the client and the KDC.", "",
                  "| KDC | principal | armor | concurrency | krb5-verifyd /s | saslauthd /s | ratio | krb5-verifyd CPU ms/login | saslauthd CPU ms/login | KDC CPU ms/login (ours / saslauthd's) | machine limit /s | of the limit |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for kdc, principal, armor, concurrency, ours_rate, theirs_rate, ratio, ours_cpu, theirs_cpu, kdc_ours, kdc_theirs, limit in MATRIX:
            lines.append(f"| {kdc} | {principal} | {armor} | {concurrency} | {ours_rate:.0f} | {theirs_rate:.0f} | {ratio:.2f}× | {ms(ours_cpu)} | {ms(theirs_cpu)} | "
                         f"{ms(kdc_ours)} / {ms(kdc_theirs)} | {f'{limit:.0f}' if limit else '—'} | {f'{ours_rate / limit:.0%}' if limit else '—'} |")
    if BASELINE:
        lines += ["", "## The engine before and after its redesign (issue #22)", "",
                  f"krb5-verifyd as built before the redesign ({BASELINE_BIN}) beside today's, in the same cells of the same run.", "",
                  "| principal | armor | concurrency | before /s | before CPU ms/login | after /s | after CPU ms/login |", "|---|---|---|---|---|---|---|"]
        for principal, armor, concurrency, before_rate, before_cpu, after_rate, after_cpu in BASELINE:
            lines.append(f"| {principal} | {armor} | {concurrency} | {before_rate:.0f} | {ms(before_cpu)} | {after_rate:.0f} | {ms(after_cpu)} |")
    if goals:
        lines += ["", "## Goals in this run", ""]
        lines += [f"- {'✓' if met else '✗'} {text}" for text, met in goals]
    if notes:
        lines += [""] + notes
    lines += ["", "Reproduce: `make bench` (set `BENCH_SECONDS` for longer runs; `BENCH_ONLY=faults` or `BENCH_ONLY=ad scripts/bench.py` "
              "prints only those rows; `KRB5_TEST_AD=DIR` uses a running AD realm, `BENCH_AD=0` skips it).", "",
              "## Misbehaving KDCs (issue #12)", "",
              "The fault rows add a replica to the bench realm (`realm.sh replica`: kprop, a second krb5kdc) and run one "
              f"krb5-verifyd with both KDCs listed (`krb5-failover.conf`, UDP first as krb5's default), `--login-timeout {FAULT_LOGIN_TIMEOUT}s` and the "
              "throttle out of the way, beside saslauthd on the same configuration. A hung KDC is a SIGSTOPped krb5kdc: the "
              "kernel still completes TCP handshakes and queues datagrams, so to a client it accepts and never answers. "
              "The hung realm is a second realm, HUNG.BENCH, whose only KDC is a black hole on 127.0.0.1 (accepts TCP and "
              "holds it, lets datagrams queue); its flood runs from another client address, in parallel with the measured "
              f"default-realm logins, and runs with and without the flood take turns ({FLOOD_ROUNDS} rounds) so that the "
              "machine's load shifts hit both alike.", "",
              "- *Once the dead KDC was noticed*: the first login after the SIGSTOP waits one hedge delay (250 ms) before "
              "the replica is also asked (its time is in the row's name); the primary is then remembered as unresponsive for "
              "30 s and tried after the replica, so later logins do not wait for it (docs/engine.md). saslauthd's MIT 1.20 "
              "client waits about 1 s on the hung primary in every KDC exchange, and a saslauthd login makes three (AS, AS with preauth, TGS for verification): about 3 s per login.",
              "- *All KDCs hung*: 16 logins at once, each answered `NO` when the login timeout fires; the slowest answer is "
              "reported against `login_timeout` (MIT's blocking calls took 40 to 115 s here, issue #12).",
              "- *After SIGCONT*: both KDCs are remembered as unresponsive but still tried, so the first login succeeds.", "",
              "## Active Directory (issue #13)", "",
              "The same saslauthd-protocol load against a Samba AD DC (Samba 4.17, whose KDC is its Heimdal; "
              "`Docker/ad/ad-realm.sh` on `AD_ADDRESS`), krb5-verifyd with the DC's krb5.conf, WS1$'s keytab and its "
              "`host/ws1.ad.example` SPN; saslauthd -a kerberos5 with the same krb5.conf verifies as `host/<this host>`, so "
              "the bench adds that SPN to WS1$ and gives saslauthd a copy of the keytab with WS1$'s keys also under that name. "
              "Every AS reply from the DC is too big for UDP, so both clients send an AS request over UDP first, answered "
              "RESPONSE_TOO_BIG, then again over TCP (the DC's krb5.conf sets no `udp_preference_limit`). When both daemons "
              "level off at the same rate whatever the concurrency, with latency growing in proportion, the DC's KDC is the "
              "limit, not the clients.", "",
              "## What a verified login costs, and what krb5-verifyd saves", "",
              "The naive calls (what saslauthd, pam_krb5 and the C reference do) cost three KDC exchanges per login: an AS-REQ "
              "answered \"pre-authentication required\" with the salt, a second AS-REQ with the encrypted timestamp, and a TGS-REQ "
              "for the verification ticket; plus the password's string-to-key (PBKDF2, 4,096 iterations for the AES-SHA1 types), "
              "which profiling (`perf`) shows is about three quarters of the client's CPU time per login.", "",
              "- **One key per login, made fast** (docs/engine.md, \"One key per login\"): every password key is made by a PBKDF2 "
              "of our own on the CPU's SHA extensions (each HMAC half one compression on registers, the two blocks of an AES-256 key "
              "interleaved: about 0.35 ms against 1.2 ms on libcrypto's SHA-1 and 4.7–7 ms in libk5crypto's built-in SHA-1), also when "
              "MIT's own exchange makes it: `CStringToKey` stands in for libk5crypto's `krb5_c_string_to_key_with_params` in the process.",
              "- **Learnt etype info** (`learned_preauth`, on by default for password-only logins): a principal's first login is MIT's "
              "exchange (armored when configured), and the enctype and salt its key was made for are learnt once it succeeds; later "
              "logins make the key up front and send the timestamp (or FAST's encrypted challenge) in the first AS-REQ, from a MEMORY "
              "keytab whose entry krb5 wipes when it is removed right after the login. A refused key is re-asked without counting a "
              "failure, so a wrong password counts once at the KDC.",
              "- **The verification ticket from the AS** (`direct_verification_ticket`, on by default when no TGT is kept): the "
              "AS-REQ names the verification service (`in_tkt_service`), so `krb5_verify_init_creds` decrypts that ticket with "
              "the keytab directly and needs no TGS exchange. The proof is unchanged: only the real KDC can make a ticket the "
              "keytab decrypts.",
              "- **Armor from the first message**: armor caches are filled by krb5 itself, with the `fast_avail` entry, so an "
              "armored login does not first send its request unarmored (MIT's behaviour with a cache that lacks the entry).",
              "- **Reuse**: each worker keeps its context, keytab handle, server principal and armor ticket.", "",
              "What is left per login is one AS exchange and one PBKDF2, which no safe shortcut removes (caching derived keys "
              "would keep password equivalents in memory); the opt-in result cache skips the KDC altogether, with the "
              "trade-off described in [daemon.md](daemon.md). A cached request costs little more than its system calls, so "
              "there the connection handling decides: krb5-verifyd's saslauthd socket is answered by accept threads with "
              "accept, one read, one send and close, as saslauthd's preforked processes answer it, not by an event loop "
              "(whose epoll registrations, address lookups and timers held the cached row to half of saslauthd -c before; "
              "docs/daemon.md, \"The saslauthd socket\").", "",
              "Microbenchmarks of the hot paths that need no KDC (codecs, TOTP, result cache, principals, contexts): "
              "[microbenchmarks.md](microbenchmarks.md), `make bench-micro` (also run by `make bench`).", ""]
    if not ONLY_PROCESS and not ONLY:
        with open(os.path.join(ROOT, "docs/benchmarks.md"), "w") as f:
            f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
