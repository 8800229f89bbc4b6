#!/usr/bin/env bash
# Two chat-server builds under the same load at the same time: `make bench-compare`.
#
# On a shared VM the same binary's throughput and CPU per request move by 15 % or more from one
# run to the next (the host's load, invisible from inside), so running two builds one after the
# other cannot show a change worth a few per cent. Run at the same moment, both see the same
# host: each round loads both servers at once, each with its own wrk (one thread, the same
# connections), and reports each one's req/s and CPU per request (user + system, every thread,
# from /proc) and the second's ratio to the first. The ratios of one binary against itself stay
# within about 2 % here, where consecutive runs moved by 15 %.
#
# Unlike `make bench-instructions`, this counts the kernel's work (system calls, TCP, fdatasync)
# and waiting, not only instructions. Both servers share the two CPUs, so the absolute figures
# are about half of `make bench`'s: compare the ratios only.
#
# Usage: BENCH_BINARIES="old/chat-server new/chat-server" make bench-compare
# Knobs (env): BENCH_ROUNDS (5), BENCH_DURATION (s per round, 8), BENCH_CONNECTIONS (64 per
# server), BENCH_SCENARIO (seed: POST /chat/message; v1: POST to the default conversation).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROUNDS="${BENCH_ROUNDS:-5}"
DURATION="${BENCH_DURATION:-8}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
SCENARIO="${BENCH_SCENARIO:-seed}"

log() { printf '[compare] %s\n' "$*" >&2; }
# shellcheck source=tests/bench/common.sh
source "$ROOT/tests/bench/common.sh"

read -r -a BINARIES <<<"${BENCH_BINARIES:-}"
if [ "${#BINARIES[@]}" -ne 2 ]; then
    log 'usage: BENCH_BINARIES="first/chat-server second/chat-server" make bench-compare'
    exit 2
fi
for binary in "${BINARIES[@]}"; do
    [ -x "$binary" ] || { log "not an executable: $binary"; exit 2; }
done
case "$SCENARIO" in
    seed) FIELD=message ROUTE=/chat/message ;;
    v1) FIELD=content ROUTE="/api/v1/conversations/$DEFAULT_ID/messages" ;;
    *) log "BENCH_SCENARIO must be seed or v1, not $SCENARIO"; exit 2 ;;
esac
install_missing wrk

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-compare.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORTS=()
FIRST_PORT=$((23000 + RANDOM % 4000))
for index in 0 1; do
    port=$((FIRST_PORT + index))
    mkdir "$WORK/$index"
    # Private copies: a build writing the target dir cannot swap them mid-run.
    cp "${BINARIES[$index]}" "$WORK/$index/chat-server"
    (
        cd "$WORK/$index"
        export CHAT__SERVER__PORT="$port" CHAT__STORAGE__BACKEND=sqlite \
            CHAT__STORAGE__URL="$WORK/$index/chat.db" CHAT__LOG__LEVEL=warn \
            CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS=0 CHAT__WEB__DIST_DIR="$WORK/no-web-client"
        exec ./chat-server
    ) >"$WORK/$index/server.log" 2>&1 &
    PIDS+=("$!")
    PORTS+=("$port")
done
for index in 0 1; do
    wait_http "http://127.0.0.1:${PORTS[$index]}/readyz" 60 ||
        { log "${BINARIES[$index]} did not start; its log:"; cat "$WORK/$index/server.log" >&2; exit 1; }
done
if [ "$SCENARIO" = v1 ]; then
    # The default conversation exists once the seed route has been used.
    for index in 0 1; do
        curl -sf -o /dev/null -H 'Content-Type: application/json' -d '{"message":"warm-up"}' \
            "http://127.0.0.1:${PORTS[$index]}/chat/message"
    done
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

load_both() { # seconds, which server's load starts first -> leaves wrk's reports in $WORK/<index>/wrk
    local index wrk_pids=()
    for index in "$2" $((1 - $2)); do
        BENCH_FIELD="$FIELD" wrk -t1 -c"$CONNECTIONS" -d"$1"s -s "$ROOT/tests/bench/post.lua" \
            "http://127.0.0.1:${PORTS[$index]}$ROUTE" >"$WORK/$index/wrk" &
        wrk_pids+=("$!")
    done
    wait "${wrk_pids[@]}"
}

log "warming up both servers"
load_both 3 0
TICKS="$(getconf CLK_TCK)"
printf 'round   first req/s  µs/req   second req/s  µs/req   second/first: req/s  µs/req\n'
for round in $(seq "$ROUNDS"); do
    before=("$(cpu_ticks "${PIDS[0]}")" "$(cpu_ticks "${PIDS[1]}")")
    load_both "$DURATION" $((round % 2)) # neither gets a head start every time
    after=("$(cpu_ticks "${PIDS[0]}")" "$(cpu_ticks "${PIDS[1]}")")
    for index in 0 1; do
        if grep -q "Non-2xx\|Socket errors" "$WORK/$index/wrk"; then
            log "${BINARIES[$index]} answered with errors:"; cat "$WORK/$index/wrk" >&2; exit 1
        fi
    done
    awk -v round="$round" -v ticks="$TICKS" -v seconds="$DURATION" \
        -v n0="$(awk '/requests in/ {print $1}' "$WORK/0/wrk")" \
        -v n1="$(awk '/requests in/ {print $1}' "$WORK/1/wrk")" \
        -v c0=$((after[0] - before[0])) -v c1=$((after[1] - before[1])) 'BEGIN {
            cpu0 = c0 / ticks * 1e6 / n0; cpu1 = c1 / ticks * 1e6 / n1
            printf "%5d   %11.0f  %6.1f   %12.0f  %6.1f   %19.3f  %6.3f\n",
                round, n0 / seconds, cpu0, n1 / seconds, cpu1, n1 / n0, cpu1 / cpu0
        }'
done | tee "$WORK/rounds"
awk 'function median(values, count,   i, j, swap) {
        for (i = 1; i <= count; i++) for (j = i + 1; j <= count; j++)
            if (values[j] < values[i]) { swap = values[i]; values[i] = values[j]; values[j] = swap }
        return count % 2 ? values[(count + 1) / 2] : (values[count / 2] + values[count / 2 + 1]) / 2
    }
    { rate[NR] = $6; cpu[NR] = $7 }
    END { printf "median  second/first: req/s %.3f, CPU per request %.3f\n", median(rate, NR), median(cpu, NR) }' \
    "$WORK/rounds"
