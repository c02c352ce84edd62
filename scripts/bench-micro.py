#!/usr/bin/env python3
"""make bench-micro: the microbenchmarks in Benchmarks/ (a separate package over ordo-one/benchmark), run once
through its SwiftPM plugin; writes docs/microbenchmarks.md, a summary table followed by the plugin's own
percentile tables.

Needs no KDC. With KRB5_TEST_REALM naming a running realm (Docker/kdc/realm.sh up DIR), one verified
password login against it is measured too."""
import os, platform, re, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWIFT = os.environ.get("SWIFT", "swift")
COMMAND = [SWIFT, "package", "--package-path", "Benchmarks", "benchmark", "run", "--no-progress", "--format", "markdown", "--path", "stdout"]
SCALE = {"": 1, "#": 1, "K": 1e3, "M": 1e6, "G": 1e9}
TIME = {"ns": 1e-3, "μs": 1, "us": 1, "ms": 1e3, "s": 1e6}


def parse(markdown):
    """The plugin's markdown: `### name` then a table of metric rows, p0 … p100 and Samples columns."""
    results, name, columns = [], None, []
    for line in markdown.splitlines():
        if line.startswith("### "):
            name = line[4:].strip()
            results.append({"name": name})
        elif name and line.startswith("| Metric"):
            columns = [c.strip() for c in line.strip("|").split("|")]
        elif name and line.startswith("|") and not line.startswith("|:"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            row = dict(zip(columns, cells))
            label = re.match(r"^(.*?\))\s*(?:\(([^)]*)\))?\s*\*?$", row["Metric"])
            if not label:
                continue
            metric, unit = label.group(1), label.group(2) or ""
            def value(p):
                return float(row[p].replace(",", ""))
            if metric == "Time (wall clock)":
                results[-1]["p50_us"] = value("p50") * TIME[unit]
                results[-1]["p99_us"] = value("p99") * TIME[unit]
            elif metric == "Throughput (# / s)":
                results[-1]["rate"] = value("p50") * SCALE[unit]
            elif metric == "Malloc (total)":
                results[-1]["mallocs"] = value("p50") * SCALE[unit]
            results[-1]["samples"] = int(row["Samples"])
    return results


def duration(us):
    return f"{us * 1000:.0f} ns" if us < 1 else f"{us:.2f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


def main():
    run = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True)
    sys.stderr.write(run.stderr[-2000:] if run.returncode else "")
    if run.returncode != 0:
        sys.exit(f"bench-micro: {' '.join(COMMAND)} failed ({run.returncode})")
    markdown = run.stdout[run.stdout.find("## HotPaths"):] if "## HotPaths" in run.stdout else ""
    results = parse(markdown)
    if not results:
        sys.exit("bench-micro: no benchmark results in the plugin's output:\n" + run.stdout[-2000:])
    skipped = [line for line in run.stdout.splitlines() if "skipping the verified-login benchmark" in line][:1]

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    swift = subprocess.run([SWIFT, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = ["# Microbenchmarks", "",
             f"`make bench-micro` on {os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}, {swift}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "The hot paths of one login that need no KDC, measured with [ordo-one/benchmark](https://github.com/ordo-one/benchmark) "
             "(package `Benchmarks/`, built in release mode; mallocs counted by its MallocInterposer trait, no jemalloc). "
             "Numbers are per operation: each sample repeats the operation 1,000 times, except context creation, the 9,000-member line and the login (once). "
             "Medians (p50) of all samples; shared 2-core machines are noisy, so look at p50 and the malloc counts, which are exact.", "",
             "| benchmark | wall clock p50 | p99 | throughput p50 /s | mallocs | samples |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {duration(r['p50_us'])} | {duration(r['p99_us'])} | {r['rate']:,.0f} | {r['mallocs']:.0f} | {r['samples']} |")
    if skipped:
        lines += ["", "Not measured in this run: one verified password login against a KDC (set `KRB5_TEST_REALM` to a running realm's "
                  "directory, as `make test` does, to include it; `docs/benchmarks.md` measures logins end to end)."]
    lines += ["", "Reproduce: `make bench-micro` (the first build of `Benchmarks/` and its dependencies takes several minutes). "
              "`swift package --package-path Benchmarks benchmark` prints the same tables; `--filter` takes a regular expression "
              "that must match a whole benchmark name.", "",
              "## All percentiles", "",
              "The plugin's own tables; rows marked `*` are per operation.", ""]
    lines += [line.replace("### ", "#### ", 1) if line.startswith("### ") else line.replace("## HotPaths", "### HotPaths", 1)
              for line in markdown.rstrip().splitlines()]
    lines.append("")
    with open(os.path.join(ROOT, "docs/microbenchmarks.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
