#!/usr/bin/env bash
# make fuzz: builds krb5-fuzz for libFuzzer in .build-fuzz (coverage instrumentation and AddressSanitizer on every
# Swift module, libFuzzer's fuzzer_no_main runtime from the Swift toolchain: SwiftPM gives an executable its own
# entry point, so libFuzzer's main cannot be used), then runs each target for SECONDS from its committed seeds
# (Tests/Fuzz/corpus/TARGET, read only) and the inputs it found before (.build-fuzz/corpus/TARGET). A crash, a
# sanitizer report, a leak, an input slower than 10 s or over 2 GB of memory fails the target; libFuzzer keeps the
# input in .build-fuzz/findings/TARGET/. Usage: fuzz.sh SECONDS TARGET...
# With FUZZ_RUNS=N each target instead runs N inputs from a fixed seed, so that the same tree gives the same run
# (CI's mode: a time-bounded run explores differently each time, and a red CI must be reproducible).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=$1
shift
swift=${SWIFT:-swift}
toolchain=$(dirname "$(readlink -f "$(command -v "$swift")")")/..
runtime=$(ls "$toolchain"/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-"$(uname -m)".a 2>/dev/null | head -1)
[ -n "$runtime" ] || { echo "fuzz: no libclang_rt.fuzzer_no_main in $toolchain/lib/clang" >&2; exit 1; }
flags=(--product krb5-fuzz --scratch-path .build-fuzz -Xswiftc -DFUZZING -Xswiftc -sanitize=address
	-Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp -Xlinker "$runtime" -Xlinker -lstdc++)
# shellcheck disable=SC2086
"$swift" build "${flags[@]}" ${SWIFT_FLAGS:-} || exit 1
binary=$("$swift" build "${flags[@]}" --show-bin-path)/krb5-fuzz
failed=()
for target in "$@"; do
	corpus=.build-fuzz/corpus/$target
	findings=.build-fuzz/findings/$target
	mkdir -p "$corpus" "$findings"
	if [ -n "${FUZZ_RUNS:-}" ]; then
		bound=(-runs="$FUZZ_RUNS" -seed=1)
		echo "fuzz: $target for $FUZZ_RUNS inputs (seed 1)"
	else
		bound=(-max_total_time="$seconds")
		echo "fuzz: $target for $seconds s"
	fi
	if FUZZ_TARGET=$target LSAN_OPTIONS=suppressions=$PWD/scripts/fuzz-lsan.supp "$binary" "${bound[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
		-artifact_prefix="$findings/" -print_final_stats=1 "$corpus" "Tests/Fuzz/corpus/$target" >"$findings/log" 2>&1; then
		grep -E '^stat::number_of_executed_units|^stat::new_units_added|^stat::peak_rss_mb' "$findings/log" | tr '\n' ' '; echo
	else
		echo "fuzz: $target FAILED; the input and the log are in $findings" >&2
		grep -v '^#' "$findings/log" | tail -60 >&2
		failed+=("$target")
	fi
done
if [ ${#failed[@]} -gt 0 ]; then echo "fuzz: failed: ${failed[*]}" >&2; exit 1; fi
if [ -n "${FUZZ_RUNS:-}" ]; then echo "fuzz: every target ran $FUZZ_RUNS inputs without a finding"; else echo "fuzz: every target ran $seconds s without a finding"; fi
