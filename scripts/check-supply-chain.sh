#!/usr/bin/env bash
# Supply-chain checks, part of `make test`:
#   - cargo deny: licenses, bans (wildcards, duplicates), sources (crates.io only) against
#     deny.toml; these work offline;
#   - cargo deny: RustSec advisories. They need the advisory database, fetched from GitHub; where
#     it cannot be fetched (and no copy is cached) the check is SKIPPED with a loud line, not failed;
#   - npm audit of the web client's runtime dependencies (--omit=dev, fails on high or critical).
#     Where the registry's audit endpoint cannot be reached it is SKIPPED with a loud line.
# Prints `supply-chain: N passed, M failed` and exits non-zero on any policy violation.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
CARGO="${CARGO:-cargo}"
NPM="${NPM:-npm}"

passed=0
failed=0
skipped=()
pass() { passed=$((passed + 1)); echo "supply-chain: PASS $1"; }
fail() { failed=$((failed + 1)); echo "supply-chain: FAIL $1" >&2; }

if ! "$CARGO" deny --version >/dev/null 2>&1; then
    echo "supply-chain: installing cargo-deny (cargo install cargo-deny --locked; several minutes, once)"
    if ! "$CARGO" install cargo-deny --locked; then
        echo "supply-chain: cargo-deny could not be installed" >&2
        echo "supply-chain: 0 passed, 1 failed"
        exit 1
    fi
fi

# licenses, bans, sources: offline, against Cargo.lock and deny.toml.
for check in licenses bans sources; do
    if "$CARGO" deny --log-level warn check --hide-inclusion-graph "$check"; then
        pass "cargo deny check $check"
    else
        fail "cargo deny check $check"
    fi
done

# advisories: needs the RustSec database.
log="$(mktemp)"
"$CARGO" deny --log-level warn check advisories >"$log" 2>&1
status=$?
cat "$log"
if [[ $status -eq 0 ]]; then
    pass "cargo deny check advisories"
elif grep -qiE "failed to (fetch|open|load|clone)|unable to (fetch|clone)|could not (fetch|clone|resolve)|advisory database|git fetch|network|timed out|ssl|connect" "$log" \
    && ! grep -qE "RUSTSEC-[0-9]{4}-[0-9]{4}" "$log"; then
    # The database could not be fetched. A copy from an earlier fetch is still worth checking.
    if "$CARGO" deny --log-level warn check --disable-fetch advisories >"$log" 2>&1; then
        cat "$log"
        pass "cargo deny check advisories (cached advisory database, may be stale)"
    elif grep -qE "RUSTSEC-[0-9]{4}-[0-9]{4}" "$log"; then
        cat "$log"
        fail "cargo deny check advisories (cached advisory database)"
    else
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "advisories: SKIPPED (advisory database not reachable from this network)"
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        skipped+=("cargo advisories")
    fi
else
    fail "cargo deny check advisories"
fi

# npm audit of what ships to browsers (runtime dependencies only).
if [[ -f web/package-lock.json ]]; then
    (cd web && "$NPM" audit --omit=dev --audit-level=high --json) >"$log" 2>/dev/null
    status=$?
    if [[ $status -eq 0 ]]; then
        pass "npm audit --omit=dev --audit-level=high"
    elif python3 - "$log" <<'PY'
import json, sys
# Exit 0 when the output is a real audit report (so the failure is a finding), 1 otherwise.
try:
    report = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
sys.exit(0 if "vulnerabilities" in report or "metadata" in report else 1)
PY
    then
        (cd web && "$NPM" audit --omit=dev --audit-level=high) || true
        fail "npm audit --omit=dev --audit-level=high"
    else
        head -c 400 "$log"; echo
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "npm audit: SKIPPED (the registry's audit endpoint is not reachable from this network)"
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        skipped+=("npm audit")
    fi
fi
rm -f "$log"

summary="supply-chain: $passed passed, $failed failed"
[[ ${#skipped[@]} -gt 0 ]] && summary+=", ${#skipped[@]} skipped (${skipped[*]})"
echo "$summary"
[[ $failed -eq 0 ]]
