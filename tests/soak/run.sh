#!/usr/bin/env bash
# Soak test (not part of `make test`): a release chat-server on a fresh SQLite database under
# sustained mixed load for SOAK_SECONDS, reporting every SOAK_INTERVAL seconds the requests,
# errors, p50/p99 latency and the server's RSS, then totals and memory growth.
#
#   SOAK_SECONDS=300 SOAK_CONCURRENCY=16 SOAK_INTERVAL=10 bash tests/soak/run.sh
#
# Other knobs: CHAT_SERVER_BIN (skip the build and use this binary), SOAK_WORD_DELAY_MS (the dummy
# assistant's pause between streamed words, default 0), SOAK_REPORT (write a Markdown report here).
# Exits non-zero if any request failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SECONDS_TOTAL="${SOAK_SECONDS:-300}"
CONCURRENCY="${SOAK_CONCURRENCY:-16}"
INTERVAL="${SOAK_INTERVAL:-10}"
WORD_DELAY_MS="${SOAK_WORD_DELAY_MS:-0}"

if [[ -z "${CHAT_SERVER_BIN:-}" ]]; then
    cargo build --release -p server --bin chat-server
    CHAT_SERVER_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/chat-server"
fi

[[ "$CHAT_SERVER_BIN" = /* ]] || CHAT_SERVER_BIN="$ROOT/$CHAT_SERVER_BIN"

WORK="$(mktemp -d)"
SERVER_PID=""
# shellcheck disable=SC2329 # run by the EXIT trap, which shellcheck does not count as a call
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# A signal ends the script (and so runs cleanup once); a handler that returned would let it go on.
trap 'exit 130' INT TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
(
    cd "$WORK"
    export CHAT__SERVER__PORT="$PORT" CHAT__SERVER__HOST=127.0.0.1 \
        CHAT__STORAGE__URL="$WORK/chat.db" CHAT__LOG__LEVEL=warn \
        CHAT__ASSISTANT__KIND=dummy CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS="$WORD_DELAY_MS" \
        CHAT__WEB__DIST_DIR="$WORK/no-web-client"
    exec "$CHAT_SERVER_BIN"
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 2; }
    sleep 0.1
done

echo "soak: $SECONDS_TOTAL s, concurrency $CONCURRENCY, interval $INTERVAL s, binary $CHAT_SERVER_BIN"
echo "soak: machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
status=0
python3 "$ROOT/tests/soak/soak.py" --port "$PORT" --pid "$SERVER_PID" --seconds "$SECONDS_TOTAL" \
    --concurrency "$CONCURRENCY" --interval "$INTERVAL" ${SOAK_REPORT:+--markdown "$SOAK_REPORT"} || status=$?
echo "soak: database after the run: $(du -sh "$WORK" | cut -f1)"
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "soak: chat-server died during the run" >&2
    tail -30 "$WORK/server.log" >&2
    status=1
fi
if grep -qiE "panick|error" "$WORK/server.log"; then
    echo "soak: server log has errors (first 10):"
    grep -iE "panick|error" "$WORK/server.log" | head -10
fi
exit "$status"
