#!/usr/bin/env bash
# make docs-coverage: fails, listing file:line and name, when a public symbol of the documented targets has no doc comment.
#
# Builds the symbol graphs with `swift package dump-symbol-graph` (public and open symbols only) and
# reads each target's `<Module>.symbols.json` plus `<Module>@<Other>.symbols.json` (extensions of
# other modules' types). Skipped, because nobody can write a comment for them here: symbols without a
# source location (compiler-synthesized `==`, `hash(into:)`, `init(rawValue:)`, …) and members a type
# gets from protocol extensions it does not own (OptionSet's `union`, `insert`, … ; `::SYNTHESIZED::`).
#
#   scripts/doc-coverage.sh                      # KerberosSecrets Kerberos KerberosEngine LoginProtocol LoginService VerifyDaemon LoginHelper TOTP
#   scripts/doc-coverage.sh Kerberos TOTP        # only these
#   SYMBOL_GRAPH_DIR=dir scripts/doc-coverage.sh # read graphs already dumped into dir; no build
set -euo pipefail
cd "$(dirname "$0")/.."

SWIFT=${SWIFT:-swift}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(KerberosSecrets Kerberos KerberosEngine LoginProtocol LoginService VerifyDaemon LoginHelper TOTP)

dir=${SYMBOL_GRAPH_DIR:-}
if [ -z "$dir" ]; then
	bin=$($SWIFT build --show-bin-path)
	[ -n "$bin" ] || exit 2
	dir=$bin/../symbolgraph
	rm -rf "$dir"
	# --skip-inherited-docs: a member without a comment of its own must not borrow the protocol's.
	# The command builds what it needs, then exits non-zero because the test-discovery modules
	# (swift_kerberosPackageTests, …) cannot be loaded; any other error fails here.
	log=$(mktemp); trap 'rm -f "$log"' EXIT
	if ! $SWIFT package dump-symbol-graph --minimum-access-level public --skip-inherited-docs >"$log" 2>&1 \
		&& grep '^error:' "$log" | grep -qv "for 'swift_kerberosPackage\(Discovered\)\?Tests'"; then
		cat "$log" >&2; echo "doc-coverage: dump-symbol-graph failed" >&2; exit 2
	fi
fi
[ -d "$dir" ] || { echo "doc-coverage: no symbol graphs in $dir" >&2; exit 2; }

python3 - "$dir" "$PWD" "${targets[@]}" <<'PY'
import glob, json, os, sys
from urllib.parse import unquote, urlparse

directory, root, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
total_all = documented_all = 0
missing = []
for module in targets:
    files = [os.path.join(directory, f"{module}.symbols.json")] + sorted(glob.glob(os.path.join(directory, f"{module}@*.symbols.json")))
    if not os.path.exists(files[0]):
        print(f"doc-coverage: no symbol graph for {module} in {directory}", file=sys.stderr); sys.exit(2)
    source = os.path.join(root, "Sources", module) + os.sep
    seen = set()
    total = documented = 0
    for path in files:
        for symbol in json.load(open(path))["symbols"]:
            identifier = symbol["identifier"]["precise"]
            kind = symbol["kind"]["identifier"]
            location = symbol.get("location")
            if kind == "swift.extension" or "::SYNTHESIZED::" in identifier or location is None:
                continue
            if symbol.get("accessLevel") not in ("public", "open"):
                continue
            file = unquote(urlparse(location["uri"]).path)
            if not file.startswith(source) or identifier in seen:
                continue
            seen.add(identifier)
            total += 1
            lines = (symbol.get("docComment") or {}).get("lines", [])
            if any(line["text"].strip() for line in lines):
                documented += 1
            else:
                line = location["position"]["line"] + 1
                name = ".".join(symbol["pathComponents"])
                missing.append(f"{os.path.relpath(file, root)}:{line}: {kind.removeprefix('swift.')} {name}")
    print(f"{module:14} {documented:4}/{total:<4} documented ({100 * documented / max(total, 1):.1f}%)")
    total_all += total
    documented_all += documented
print(f"{'total':14} {documented_all:4}/{total_all:<4} documented ({100 * documented_all / max(total_all, 1):.1f}%)")
if missing:
    print(f"\n{len(missing)} public symbols without a doc comment:", file=sys.stderr)
    for entry in sorted(missing):
        print("  " + entry, file=sys.stderr)
    sys.exit(1)
PY
