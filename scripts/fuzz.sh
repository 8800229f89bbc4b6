#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time: `scripts/fuzz.sh [seconds per target]`
# (default 20). Exits non-zero if a target crashes (the input is kept in fuzz/artifacts/<target>/;
# replay it with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` in fuzz/).
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address, sancov). Only the stable
# toolchain exists here, so RUSTC_BOOTSTRAP=1 lets stable rustc accept them; the fuzz project is
# its own workspace with its own target dir (fuzz/target), so this never touches the main build.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-20}}"
CARGO="${CARGO:-cargo}"
export RUSTC_BOOTSTRAP=1

if ! "$CARGO" fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked; a few minutes, once)"
    "$CARGO" install cargo-fuzz --locked || { echo "fuzz: 0 passed, 1 failed (cargo-fuzz install)"; exit 1; }
fi

# FUZZ_TARGET_DIR lets CI keep the instrumented build between runs, like CARGO_TARGET_DIR.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}"
cd "$ROOT/fuzz" || exit 1
targets=$("$CARGO" fuzz list)
echo "fuzz: building ${targets//$'\n'/ }"
if ! "$CARGO" fuzz build --target-dir "$FUZZ_TARGET_DIR"; then
    echo "fuzz: 0 passed, 1 failed (build)"
    exit 1
fi

passed=0
failed=0
failed_targets=()
for target in $targets; do
    mkdir -p "corpus/$target"
    corpora=("corpus/$target")
    [[ -d "seeds/$target" ]] && corpora+=("seeds/$target")
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
    # -max_total_time bounds the run; -rss_limit_mb and -timeout turn runaway memory or a hang on
    # one input into a failure instead of a stuck CI job.
    if "$CARGO" fuzz run --target-dir "$FUZZ_TARGET_DIR" "$target" "${corpora[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        2>"corpus/$target.log"; then
        grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "corpus/$target.log" | tail -2
        passed=$((passed + 1))
    else
        tail -40 "corpus/$target.log" >&2
        echo "fuzz: $target FAILED; crashing input in fuzz/artifacts/$target/" >&2
        failed=$((failed + 1))
        failed_targets+=("$target")
    fi
done

echo "fuzz: $passed passed, $failed failed${failed_targets:+ (${failed_targets[*]})}"
[[ $failed -eq 0 ]]
