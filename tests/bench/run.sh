#!/usr/bin/env bash
# The benchmark behind `make bench` and docs/benchmarks.md.
#
# Builds chat-server and bench-baseline (actix-web answering the same JSON shapes with no storage),
# then on 127.0.0.1 only:
#   - POST /chat/message and POST /api/v1/conversations/{id}/messages (non-streaming), 64
#     keep-alive connections, driving the baseline and chat-server ALTERNATELY so machine noise
#     hits both; chat-server's throughput is reported as a ratio of the baseline's;
#   - v1 page reads (limit=50) of a conversation of 10 and of 100,000 exchanges, alternately;
#   - GET /chat/history of 10,000 exchanges (streamed);
#   - peak RSS (VmHWM) of chat-server per scenario; the storage_writer_batch_size metric;
#   - for each run, the CPU each thread of the server used per request, the time its threads
#     waited for a CPU, and the CPUs left idle, which tell whether a run was bound by CPU or by
#     latency;
#   - cold start on the existing database to the first answered /readyz (median of 5);
#   - the same against PostgreSQL when 127.0.0.1:5432 answers (own database, dropped at the end).
# Fresh databases in a temp dir; nothing is left behind. About 5 minutes plus the build.
#
# Knobs (env): BENCH_DURATION (s per run, 10), BENCH_ROUNDS (alternations, 2), BENCH_CONNECTIONS
# (64), BENCH_THREADS (wrk threads, 2), BENCH_LARGE (exchanges, 100000), BENCH_HISTORY (10000),
# BENCH_POSTGRES (auto|0), BENCH_SKIP_BUILD (1 to reuse the release binaries), BENCH_BIN_DIR
# (where chat-server and bench-baseline are; default the release target dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_DIR="$ROOT/tests/bench"
DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
LARGE="${BENCH_LARGE:-100000}"
SMALL=10
HISTORY="${BENCH_HISTORY:-10000}"
POSTGRES="${BENCH_POSTGRES:-auto}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="${BENCH_BIN_DIR:-$TARGET_DIR/release}"

log() { printf '[bench] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Tools and build

# shellcheck source=tests/bench/common.sh
source "$BENCH_DIR/common.sh"
install_missing wrk
for tool in wrk curl sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || { log "missing tool: $tool"; exit 1; }
done

if [ "${BENCH_SKIP_BUILD:-0}" != "1" ]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -p server -p bench-baseline)
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/chat-bench.XXXXXX")"
# Private copies: another build writing the shared target dir cannot swap them mid-run.
cp "$BIN_DIR/chat-server" "$BIN_DIR/bench-baseline" "$WORK/"
CHAT_BIN="$WORK/chat-server"
BASE_BIN="$WORK/bench-baseline"
PIDS=()
PG_DB=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$PG_DB" ]; then
        psql -q -h 127.0.0.1 -U postgres -d postgres \
            -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
EXTRA="$WORK/extra.txt"
: >"$EXTRA"
# Below Linux's ephemeral range (32768 and up): there an outgoing connection (wrk's, the pool's)
# can already hold the port, and the server then cannot listen on it.
PORT_BASE=$((20000 + ($$ % 1200) * 10))

# ---------------------------------------------------------------------------------------------
# Processes

start_baseline() { # port -> sets LAST_PID
    "$BASE_BIN" "$1" >"$WORK/baseline-$1.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$1/healthz" 20
}

start_chat() { # port, backend, url -> sets LAST_PID
    (
        cd "$WORK"
        exec env CHAT__SERVER__PORT="$1" CHAT__STORAGE__BACKEND="$2" CHAT__STORAGE__URL="$3" \
            CHAT__LOG__LEVEL=warn CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS=0 "$CHAT_BIN"
    ) >>"$WORK/chat-$1.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$1/readyz" 60 ||
        { log "chat-server did not start on port $1; its log:"; tail -5 "$WORK/chat-$1.log" >&2; return 1; }
}

stop() { # pid
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

reset_peak_rss() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

# Time each of the process's threads has spent so far running and runnable but waiting for a CPU,
# by thread name: "name<TAB>running ns<TAB>waiting ns" lines (schedstat's first two fields).
thread_cpu_ns() { # pid
    local task
    for task in /proc/"$1"/task/*; do
        printf '%s\t%s\n' "$(cat "$task/comm" 2>/dev/null)" "$(awk '{print $1 "\t" $2}' "$task/schedstat" 2>/dev/null)"
    done | awk -F'\t' '$2 != "" {run[$1] += $2; wait[$1] += $3}
        END {for (name in run) printf "%s\t%d\t%d\n", name, run[name], wait[name]}'
}
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }

# Where a run's CPU went: microseconds of CPU per answered request by thread, then the time the
# threads spent ready to run but waiting for a CPU, which with CPUs left idle means the work came
# in bursts (threads under 0.05 µs left out), and the number of the machine's CPUs left idle.
cpu_breakdown() { # before-file after-file requests idle-ticks seconds
    awk -F'\t' -v requests="$3" '
        function part(parts, name, value) {
            return value < 0.05 ? parts : parts sprintf("%s%s %.1f", parts == "" ? "" : ", ", name, value)
        }
        FNR == NR { ran[$1] = $2; waited[$1] = $3; next }
        { used = ($2 - ran[$1]) / 1000 / requests; waiting = ($3 - waited[$1]) / 1000 / requests
          total += used; total_waiting += waiting
          used_parts = part(used_parts, $1, used); waiting_parts = part(waiting_parts, $1, waiting) }
        END { printf "%.1f µs of CPU per request (%s); %.1f µs waiting for a CPU (%s)", \
                  total, used_parts, total_waiting, waiting_parts }' "$1" "$2"
    awk -v idle="$4" -v seconds="$5" -v cpus="$(nproc)" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "; %.2f of %d CPUs idle\n", idle / hz / seconds, cpus }'
}
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------------------------------------
# Load

to_ms() { # wrk latency such as 812.00us, 1.20ms, 1.05s
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}

# run_wrk backend scenario server url pid [lua field]: one run, appended to RESULTS.
run_wrk() {
    local backend="$1" scenario="$2" server="$3" url="$4" pid="$5" lua="${6:-}" field="${7:-}"
    local out="$WORK/wrk.out" args=(-t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s --latency)
    [ -n "$lua" ] && args+=(-s "$BENCH_DIR/$lua")
    [ "$server" = chat ] && reset_peak_rss "$pid"
    local idle_before
    idle_before=$(idle_ticks)
    [ "$pid" != "-" ] && thread_cpu_ns "$pid" >"$WORK/cpu.before"
    BENCH_FIELD="$field" wrk "${args[@]}" "$url" >"$out" 2>&1 || { cat "$out" >&2; return 1; }
    if [ "$pid" != "-" ]; then
        thread_cpu_ns "$pid" >"$WORK/cpu.after"
        echo "$backend $scenario, $server: $(cpu_breakdown "$WORK/cpu.before" "$WORK/cpu.after" \
            "$(awk '/requests in/ {print $1}' "$out")" $(($(idle_ticks) - idle_before)) "$DURATION")" >>"$EXTRA"
    fi
    local rps p50 p99 errors rss=0
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    errors=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$out")
    [ "$server" = chat ] && rss=$(peak_rss_kib "$pid")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$scenario" "$server" "$rps" "$p50" "$p99" "$errors" "$rss" >>"$RESULTS"
    log "$(printf '%-8s %-22s %-9s %8s req/s  p50 %7s ms  p99 %7s ms  errors %s  peak RSS %s KiB' \
        "$backend" "$scenario" "$server" "$rps" "$p50" "$p99" "$errors" "$rss")"
}

writer_metrics() { # port, label
    {
        echo "# $2: writer metrics after the POST runs"
        # A p99 of hundreds of ms at 64 connections means a stalled commit or sync. The buckets
        # count those done within 10 ms, within 100 ms and in all: the differences are the slow ones.
        curl -sf "http://127.0.0.1:$1/metrics" |
            grep -E '^storage_writer_(batch_size|(commit|sync)_seconds_(sum|count))|^storage_writer_rejected|^storage_writer_(commit|sync)_seconds_bucket\{le="(0.01|0.1|\+Inf)"\}' || true
    } >>"$EXTRA"
}

# ---------------------------------------------------------------------------------------------
# Seeding PostgreSQL as common.sh's seed_sqlite seeds SQLite.

seed_postgres() { # database name, exchanges in the small, large and default conversations
    local db="$1" small="$2" large="$3" history="$4" now
    now=$(($(date +%s) * 1000000))
    {
        echo "BEGIN;"
        echo "INSERT INTO conversations (id, title, created_at, updated_at, last_position) VALUES
              ('$DEFAULT_ID', 'Chat', $now, $now, 0) ON CONFLICT (id) DO NOTHING;"
        echo "INSERT INTO conversations (id, title, created_at, updated_at, last_position) VALUES
              ('$SMALL_ID', 'Small', $now, $now, 0), ('$LARGE_ID', 'Large', $now, $now, 0);"
        for pair in "$DEFAULT_ID:$history:1" "$SMALL_ID:$small:2" "$LARGE_ID:$large:3"; do
            IFS=: read -r id count tag <<<"$pair"
            cat <<ONE
INSERT INTO messages (id, conversation_id, position, role, content, created_at)
SELECT (lpad(to_hex($tag), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       '$id', i,
       CASE i % 2 WHEN 1 THEN 'user' ELSE 'assistant' END,
       CASE i % 2 WHEN 1 THEN 'bench message ' || ((i + 1) / 2) || ' seeded by psql'
                  ELSE 'Hi there! I''m a simulated AI assistant.' END,
       $now + i
FROM generate_series(1, 2 * $count) AS i;
UPDATE conversations SET last_position = 2 * $count WHERE id = '$id';
ONE
        done
        echo "COMMIT;"
        echo "ANALYZE;"
    } | psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$db" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# One backend: POSTs alternating with the baseline, reads, cold start.

bench_backend() { # backend url-for-post-db url-for-read-db seed-fn seed-arg
    local backend="$1" post_url="$2" read_url="$3" seed_fn="$4" seed_arg="$5"
    local base_port=$((PORT_BASE + 1)) chat_port=$((PORT_BASE + 2)) read_port=$((PORT_BASE + 3))
    local base_pid chat_pid read_pid round

    log "== $backend: POST, alternating baseline and chat-server, ${ROUNDS} x ${DURATION}s each"
    # Under `if` (the PostgreSQL run) `set -e` is off, so each start says itself when it fails.
    start_baseline "$base_port" || return 1
    base_pid=$LAST_PID
    start_chat "$chat_port" "$backend" "$post_url" || return 1
    chat_pid=$LAST_PID
    for round in $(seq "$ROUNDS"); do
        run_wrk "$backend" "POST /chat/message" baseline "http://127.0.0.1:$base_port/chat/message" "$base_pid" post.lua message
        run_wrk "$backend" "POST /chat/message" chat "http://127.0.0.1:$chat_port/chat/message" "$chat_pid" post.lua message
    done
    for round in $(seq "$ROUNDS"); do
        run_wrk "$backend" "POST v1 messages" baseline \
            "http://127.0.0.1:$base_port/api/v1/conversations/$DEFAULT_ID/messages" "$base_pid" post.lua content
        run_wrk "$backend" "POST v1 messages" chat \
            "http://127.0.0.1:$chat_port/api/v1/conversations/$DEFAULT_ID/messages" "$chat_pid" post.lua content
    done
    writer_metrics "$chat_port" "$backend"
    echo "$backend: peak RSS of chat-server over all POST runs: $(peak_rss_kib "$chat_pid") KiB (after the last reset)" >>"$EXTRA"
    stop "$chat_pid"
    stop "$base_pid"

    log "== $backend: seeding $SMALL, $LARGE and $HISTORY (default conversation) exchanges"
    start_chat "$read_port" "$backend" "$read_url" || return 1 # runs the migrations
    read_pid=$LAST_PID
    stop "$read_pid"
    local seeded_at=$SECONDS
    "$seed_fn" "$seed_arg" "$SMALL" "$LARGE" "$HISTORY"
    log "seeded in $((SECONDS - seeded_at)) s"
    start_chat "$read_port" "$backend" "$read_url" || return 1
    read_pid=$LAST_PID
    local count
    count=$(curl -sf "http://127.0.0.1:$read_port/api/v1/conversations/$LARGE_ID/messages?limit=50" |
        grep -o '"role"' | wc -l)
    [ "$count" -eq 50 ] || { log "the large conversation answered $count messages, not 50"; return 1; }

    log "== $backend: reads, ${ROUNDS} x ${DURATION}s each (after a 2 s warm-up of each)"
    local small_url="http://127.0.0.1:$read_port/api/v1/conversations/$SMALL_ID/messages?limit=50"
    local large_url="http://127.0.0.1:$read_port/api/v1/conversations/$LARGE_ID/messages?limit=50"
    # Unmeasured: fills the OS page cache and every pooled reader's page cache, so both sizes are
    # compared in the steady state rather than the first one paying for the cold file.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$small_url" >/dev/null
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$large_url" >/dev/null
    # 10 exchanges are only 20 messages: the page of the small conversation is 20 messages long,
    # so the large one is also read with limit=20 to compare equal pages.
    local large20_url="http://127.0.0.1:$read_port/api/v1/conversations/$LARGE_ID/messages?limit=20"
    for round in $(seq "$ROUNDS"); do
        # Alternating which size goes first cancels any drift within a round.
        if [ $((round % 2)) -eq 1 ]; then
            run_wrk "$backend" "GET page @10" chat "$small_url" "$read_pid"
            run_wrk "$backend" "GET page @$LARGE" chat "$large_url" "$read_pid"
            run_wrk "$backend" "GET page @$LARGE l=20" chat "$large20_url" "$read_pid"
        else
            run_wrk "$backend" "GET page @$LARGE l=20" chat "$large20_url" "$read_pid"
            run_wrk "$backend" "GET page @$LARGE" chat "$large_url" "$read_pid"
            run_wrk "$backend" "GET page @10" chat "$small_url" "$read_pid"
        fi
    done
    for round in $(seq "$ROUNDS"); do
        run_wrk "$backend" "GET history $HISTORY" chat "http://127.0.0.1:$read_port/chat/history" "$read_pid"
    done
    local bytes started ended
    started=$(date +%s%N)
    bytes=$(curl -sf "http://127.0.0.1:$read_port/chat/history" | wc -c)
    ended=$(date +%s%N)
    echo "$backend: one GET /chat/history of $HISTORY exchanges alone: $(((ended - started) / 1000000)) ms, $bytes bytes" >>"$EXTRA"
    stop "$read_pid"

    log "== $backend: cold start on the existing database (5 starts)"
    local starts=() t0 t1 pid
    for _ in 1 2 3 4 5; do
        t0=$(date +%s%N)
        (
            cd "$WORK"
            exec env CHAT__SERVER__PORT="$read_port" CHAT__STORAGE__BACKEND="$backend" \
                CHAT__STORAGE__URL="$read_url" CHAT__LOG__LEVEL=warn "$CHAT_BIN"
        ) >>"$WORK/cold.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        until curl -sf -o /dev/null "http://127.0.0.1:$read_port/readyz"; do
            kill -0 "$pid" 2>/dev/null || { log "chat-server died at start"; return 1; }
        done
        t1=$(date +%s%N)
        starts+=($(((t1 - t0) / 1000000)))
        stop "$pid"
    done
    local median
    median=$(printf '%s\n' "${starts[@]}" | sort -n | sed -n 3p)
    echo "$backend: cold start to first answered /readyz: median ${median} ms (runs: ${starts[*]} ms)" >>"$EXTRA"
    printf '%s\tcold start\t%s\n' "$backend" "$median" >>"$WORK/cold.tsv"
}

# ---------------------------------------------------------------------------------------------

mkdir -p "$WORK/sqlite"
bench_backend sqlite "$WORK/sqlite/post.db" "$WORK/sqlite/read.db" seed_sqlite "$WORK/sqlite/read.db"

PG_STATUS="not measured"
if [ "$POSTGRES" != "0" ] && command -v psql >/dev/null 2>&1 &&
    psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    PG_DB="chat_bench_$$"
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE ${PG_DB}_post" >/dev/null
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $PG_DB" >/dev/null
    PG_URL="postgres://postgres@127.0.0.1:5432"
    if bench_backend postgres "$PG_URL/${PG_DB}_post" "$PG_URL/$PG_DB" seed_postgres "$PG_DB"; then
        PG_STATUS="measured"
    else
        PG_STATUS="failed (see above)"
    fi
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS ${PG_DB}_post WITH (FORCE)" >/dev/null 2>&1 || true
else
    log "PostgreSQL on 127.0.0.1:5432 is not reachable: not measured"
fi

# ---------------------------------------------------------------------------------------------
# Report

echo
echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(uname -r), $(rustc --version 2>/dev/null || echo rustc ?)"
echo "Load: wrk -t$THREADS -c$CONNECTIONS, ${DURATION}s per run, $ROUNDS alternations; chat-server with the dummy assistant, SQLite WAL synced before every acknowledgement"
echo
printf '%-9s %-26s %-9s %4s %10s %9s %9s %7s %7s %10s\n' backend scenario server runs "req/s" "p50 ms" "p99 ms" errors ratio "peak RSS"
awk -F'\t' '
    { key = $1 "\t" $2 "\t" $3
      if (!(key in n)) order[++k] = key
      n[key]++; rps[key] += $4; p50[key] += $5; if ($6 > p99[key]) p99[key] = $6
      err[key] += $7; if ($8 > rss[key]) rss[key] = $8 }
    END {
      for (i = 1; i <= k; i++) {
        key = order[i]; split(key, f, "\t")
        mean = rps[key] / n[key]
        ratio = "-"
        if (f[3] == "chat") {
          base = f[1] "\t" f[2] "\tbaseline"
          if (base in n && rps[base] > 0) ratio = sprintf("%.2f", mean / (rps[base] / n[base]))
        }
        memory = rss[key] > 0 ? sprintf("%.1f MiB", rss[key] / 1024) : "-"
        printf "%-9s %-26s %-9s %4d %10.0f %9.2f %9.2f %7d %7s %10s\n", f[1], f[2], f[3], n[key], mean, p50[key] / n[key], p99[key], err[key], ratio, memory
      }
    }' "$RESULTS"
echo
echo "req/s: mean of the runs; p50: mean of the runs; p99 and peak RSS: worst run. Page reads and"
echo "history have no baseline. Peak RSS is VmHWM of chat-server, reset before each run."
awk -F'\t' '$2 ~ /^GET page @/ {
        kind = $2 == "GET page @10" ? "small" : ($2 ~ /l=20$/ ? "large20" : "large")
        s[$1, kind] += $4; c[$1, kind]++ }
    END { split("sqlite postgres", backends, " ")
          for (i = 1; i <= 2; i++) { b = backends[i]
              if (!(((b, "small") in s) && s[b, "small"] > 0)) continue
              small = s[b, "small"] / c[b, "small"]
              printf "%s: page read req/s, '"$LARGE"' exchanges / 10 exchanges: limit=50 (50 vs 20 messages) %.2f", b, (s[b, "large"] / c[b, "large"]) / small
              if ((b, "large20") in s) printf ", equal pages of 20 messages %.2f", (s[b, "large20"] / c[b, "large20"]) / small
              printf "\n" } }' "$RESULTS"
echo
cat "$EXTRA"
echo "PostgreSQL: $PG_STATUS"
