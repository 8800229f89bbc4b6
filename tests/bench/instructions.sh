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
# assistant. BENCH_SCENARIO picks the load:
#   - post (the default): wrk POSTs /chat/message on 4 connections for a warm-up, the counters
#     are zeroed, then for BENCH_SECONDS (20);
#   - pages: the database is seeded with `make bench`'s seeder (a conversation of 10 exchanges
#     and one of BENCH_LARGE, 100,000), both newest pages of 20 messages are read for a warm-up, then
#     each for BENCH_SECONDS with the counters zeroed before and dumped after; the last line is
#     the large conversation's count over the small one's, the issue's "a page costs the same at
#     100,000 exchanges as at 10" without the host's noise.
# Threads are grouped by what they run (HTTP workers, the SQLite writer, syncer, answerer and
# readers) and their instructions divided by the requests answered.
#
# What the counts do not show: the kernel's work (system calls, TCP, fdatasync) and time spent
# waiting. callgrind also counts a `rep stos`/`rep movs` once per byte, so memset and memcpy
# weigh more here than on the CPU. The writer's count depends on how many requests share a
# commit, so compare it only between runs with the same load.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SECONDS_MEASURED="${BENCH_SECONDS:-20}"
SCENARIO="${BENCH_SCENARIO:-post}"
SMALL=10
LARGE="${BENCH_LARGE:-100000}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

log() { printf '[instructions] %s\n' "$*" >&2; }

# shellcheck source=tests/bench/common.sh
source "$ROOT/tests/bench/common.sh"
case "$SCENARIO" in
    post) install_missing wrk valgrind callgrind_control:valgrind ;;
    pages) install_missing wrk valgrind callgrind_control:valgrind sqlite3 ;;
    *) log "BENCH_SCENARIO must be post or pages, not $SCENARIO"; exit 2 ;;
esac

if [ -z "${BENCH_BINARIES:-}" ]; then
    log "building the release server"
    (cd "$ROOT" && cargo build --release -p server --bin chat-server)
    BENCH_BINARIES="$TARGET_DIR/release/chat-server"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-instructions.XXXXXX")"
SERVER_PID=""
cleanup() {
    [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

post() { # port seconds -> prints the number of requests answered
    BENCH_FIELD=message wrk -t2 -c4 -d"$2"s -s "$ROOT/tests/bench/post.lua" \
        "http://127.0.0.1:$1/chat/message" | awk '/requests in/ {print $1}'
}

get() { # url seconds -> prints the number of requests answered
    wrk -t2 -c4 -d"$2"s "$1" | awk '/requests in/ {print $1}'
}

# The group a thread belongs to, from what its profile ran.
thread_group() { # callgrind output file
    if grep -q "actix_http::h1::dispatcher" "$1"; then echo "HTTP workers"
    elif grep -q "adapters_sqlite::queries::list_messages" "$1"; then echo "SQLite readers"
    elif grep -q "sqlite3VdbeExec" "$1"; then echo "SQLite writer"
    elif grep -q "run_syncer" "$1"; then echo "SQLite syncer"
    elif grep -q "run_answerer" "$1"; then echo "SQLite answerer"
    else echo "other"
    fi
}

# Starts `binary` on the database in `run` (natively, or under callgrind) and waits until it is
# ready; sets SERVER_PID.
start_server() { # binary run-dir port native|callgrind
    local binary="$1" run="$2" port="$3" how="$4" wrapper=()
    if [ "$how" = callgrind ]; then
        wrapper=(valgrind --tool=callgrind --separate-threads=yes
            --callgrind-out-file="$run/callgrind.out")
    fi
    (
        cd "$run"
        export CHAT__SERVER__PORT="$port" CHAT__STORAGE__URL="$run/chat.db" CHAT__LOG__LEVEL=warn \
            CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS=0 CHAT__WEB__DIST_DIR="$run/no-web-client"
        exec "${wrapper[@]}" "$binary"
    ) >>"$run/server.log" 2>&1 &
    SERVER_PID=$!
    wait_http "http://127.0.0.1:$port/readyz" 60 ||
        { log "$binary did not start; its log:"; cat "$run/server.log" >&2; exit 1; }
}

stop_server() {
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# Dumps the counts since they were last zeroed into their own directory and prints them per
# thread group and request; the last line is every thread's.
report() { # run-dir directory-name label requests
    local run="$1" dir="$1/$2" label="$3" requests="$4" profile
    callgrind_control --dump "$SERVER_PID" >/dev/null 2>&1
    mkdir "$dir"
    mv "$run"/callgrind.out.*-* "$dir/"
    echo "$label: $requests requests"
    for profile in "$dir"/callgrind.out.*; do
        printf '%s\t%s\n' "$(thread_group "$profile")" \
            "$(awk '/^summary:/ {print $2; exit}' "$profile")"
    done | awk -F'\t' -v n="$requests" '
        { total[$1] += $2; all += $2 }
        END {
            for (group in total) printf "  %-16s %9.0f instructions per request\n", group, total[group] / n | "sort"
            close("sort")
            printf "  %-16s %9.0f instructions per request\n", "all threads", all / n
        }'
}

measure_post() { # binary run-dir port
    local binary="$1" run="$2" port="$3" requests
    start_server "$binary" "$run" "$port" callgrind
    post "$port" 5 >/dev/null
    callgrind_control --zero "$SERVER_PID" >/dev/null 2>&1
    requests=$(post "$port" "$SECONDS_MEASURED")
    report "$run" post "POST /chat/message" "$requests"
    stop_server
}

measure_pages() { # binary run-dir port
    local binary="$1" run="$2" port="$3" size requests
    start_server "$binary" "$run" "$port" native # runs the migrations
    stop_server
    seed_sqlite "$run/chat.db" "$SMALL" "$LARGE" "$SMALL"
    start_server "$binary" "$run" "$port" callgrind
    declare -A page_url=(
        [$SMALL]="http://127.0.0.1:$port/api/v1/conversations/$SMALL_ID/messages?limit=20"
        [$LARGE]="http://127.0.0.1:$port/api/v1/conversations/$LARGE_ID/messages?limit=20"
    )
    for size in "$SMALL" "$LARGE"; do
        get "${page_url[$size]}" 5 >/dev/null
    done
    for size in "$SMALL" "$LARGE"; do
        callgrind_control --zero "$SERVER_PID" >/dev/null 2>&1
        requests=$(get "${page_url[$size]}" "$SECONDS_MEASURED")
        report "$run" "page-$size" "page of 20 at $size exchanges" "$requests" |
            tee "$run/$size.txt"
    done
    stop_server
    local small_count large_count
    small_count=$(awk '/all threads/ {print $3}' "$run/$SMALL.txt")
    large_count=$(awk '/all threads/ {print $3}' "$run/$LARGE.txt")
    awk -v large="$large_count" -v small="$small_count" 'BEGIN {
        printf "page at '"$LARGE"' exchanges / at '"$SMALL"', all threads: %.3f\n", large / small }'
}

for binary in $BENCH_BINARIES; do
    run="$(mktemp -d "$WORK/run.XXXX")"
    echo "$binary"
    "measure_$SCENARIO" "$binary" "$run" $((21000 + RANDOM % 4000))
done
