#!/usr/bin/env bash
# Instructions per request of chat-server's threads, counted by callgrind: `make bench-instructions`.
#
# Throughput on a shared machine moves by 10 to 20 % from one run to the next, which hides a
# change worth a few per cent. Instruction counts do not move: the same binary, requests and
# environment give the same counts whatever else the machine is doing. Use this to compare two
# binaries' CPU work per request (BENCH_BINARIES="old/chat-server new/chat-server"); use
# `make bench` for throughput, latency and memory.
#
# Each binary runs under `valgrind --tool=callgrind` on a fresh SQLite database with the dummy
# assistant; wrk POSTs /chat/message on 4 connections for a warm-up, the counters are zeroed,
# then for BENCH_SECONDS (20). Threads are grouped by what they run (HTTP workers, the SQLite
# writer, syncer and answerer) and their instructions divided by the requests answered.
#
# What the counts do not show: the kernel's work (system calls, TCP, fdatasync) and time spent
# waiting. callgrind also counts a `rep stos`/`rep movs` once per byte, so memset and memcpy
# weigh more here than on the CPU. The writer's count depends on how many requests share a
# commit, so compare it only between runs with the same load.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_MEASURED="${BENCH_SECONDS:-20}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { printf '[instructions] %s\n' "$*" >&2; }

# shellcheck source=tests/bench/common.sh
source "$ROOT/tests/bench/common.sh"
install_missing wrk valgrind callgrind_control:valgrind

if [ -z "${BENCH_BINARIES:-}" ]; then
    log "building the release server"
    (cd "$ROOT" && cargo build --release -p server --bin chat-server)
    BENCH_BINARIES="$TARGET_DIR/release/chat-server"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-instructions.XXXXXX")"
VALGRIND_PID=""
cleanup() {
    [ -n "$VALGRIND_PID" ] && kill -9 "$VALGRIND_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

post() { # port seconds -> prints the number of requests answered
    BENCH_FIELD=message wrk -t2 -c4 -d"$2"s -s "$ROOT/tests/bench/post.lua" \
        "http://127.0.0.1:$1/chat/message" | awk '/requests in/ {print $1}'
}

# The group a thread belongs to, from what its profile ran.
thread_group() { # callgrind output file
    if grep -q "actix_http::h1::dispatcher" "$1"; then echo "HTTP workers"
    elif grep -q "sqlite3VdbeExec" "$1"; then echo "SQLite writer"
    elif grep -q "run_syncer" "$1"; then echo "SQLite syncer"
    elif grep -q "run_answerer" "$1"; then echo "SQLite answerer"
    else echo "other"
    fi
}

measure() { # binary
    local binary="$1" run port requests
    run="$(mktemp -d "$WORK/run.XXXX")"
    port=$((21000 + RANDOM % 4000))
    (
        cd "$run"
        export CHAT__SERVER__PORT="$port" CHAT__STORAGE__URL="$run/chat.db" CHAT__LOG__LEVEL=warn \
            CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS=0 CHAT__WEB__DIST_DIR="$run/no-web-client"
        exec valgrind --tool=callgrind --separate-threads=yes \
            --callgrind-out-file="$run/callgrind.out" "$binary"
    ) >"$run/server.log" 2>&1 &
    VALGRIND_PID=$!
    wait_http "http://127.0.0.1:$port/readyz" 60 ||
        { log "$binary did not start; its log:"; cat "$run/server.log" >&2; exit 1; }
    post "$port" 5 >/dev/null
    callgrind_control --zero "$VALGRIND_PID" >/dev/null 2>&1
    requests=$(post "$port" "$SECONDS_MEASURED")
    callgrind_control --dump "$VALGRIND_PID" >/dev/null 2>&1
    kill -9 "$VALGRIND_PID" 2>/dev/null || true
    wait "$VALGRIND_PID" 2>/dev/null || true
    VALGRIND_PID=""
    echo "$binary: $requests requests"
    for profile in "$run"/callgrind.out.*-*; do
        printf '%s\t%s\n' "$(thread_group "$profile")" \
            "$(awk '/^summary:/ {print $2; exit}' "$profile")"
    done | awk -F'\t' -v n="$requests" '
        { total[$1] += $2; all += $2 }
        END {
            for (group in total) printf "  %-16s %9.0f instructions per request\n", group, total[group] / n
            printf "  %-16s %9.0f instructions per request\n", "all threads", all / n
        }' | sort
}

for binary in $BENCH_BINARIES; do
    measure "$binary"
done
