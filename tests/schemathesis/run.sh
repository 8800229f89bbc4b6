#!/usr/bin/env bash
# Property-based tests of the HTTP API from the server's own OpenAPI document (schemathesis).
#
# Starts the already built chat-server (CHAT_SERVER_BIN, default target/debug/chat-server) on a
# free port with a fresh SQLite database and the dummy assistant, fetches /openapi.json from it and
# lets schemathesis generate valid and invalid requests for every operation with every check on:
# no 5xx, every status documented, every body and content type as documented, invalid data
# rejected, and valid data accepted except on the operations KNOWN-1 below names (which leaves that
# last check only the bodiless GETs). Exits non-zero on any failure.
#
# Knobs: SCHEMATHESIS_MAX_EXAMPLES (per operation and phase, default 40),
#        SCHEMATHESIS_MAX_TIME (seconds for the generating phases, default 120), SCHEMATHESIS_SEED,
#        SCHEMATHESIS_WORKERS (default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SCHEMATHESIS_VERSION="4.32.5"
VENV="$ROOT/.tools/schemathesis-venv"
BIN="${CHAT_SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/chat-server}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-40}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-120}"
WORKERS="${SCHEMATHESIS_WORKERS:-2}"
SEED="${SCHEMATHESIS_SEED:-}"

if [[ ! -x "$BIN" ]]; then
    echo "schemathesis: no server binary at $BIN (run: cargo build -p server --bin chat-server)" >&2
    exit 2
fi

# A pinned schemathesis in its own venv, reused between runs.
if [[ ! -x "$VENV/bin/schemathesis" ]] \
    || [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
    echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
# shellcheck disable=SC2329 # run by the EXIT trap, which shellcheck does not count as a call
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# A signal ends the script (and so runs cleanup once); a handler that returned would let it go on.
trap 'exit 130' INT TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT"

(
    cd "$WORK"
    export CHAT__SERVER__PORT="$PORT" CHAT__SERVER__HOST=127.0.0.1 \
        CHAT__STORAGE__URL="$WORK/chat.db" CHAT__LOG__LEVEL=warn \
        CHAT__ASSISTANT__KIND=dummy CHAT__ASSISTANT__DUMMY__WORD_DELAY_MS=0 \
        CHAT__WEB__DIST_DIR="$WORK/no-web-client"
    exec "$BIN"
) >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 1 100); do
    if curl -fsS "$BASE/readyz" >/dev/null 2>&1; then ready=1; break; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "schemathesis: chat-server did not become ready on $BASE; its log:" >&2
    cat "$WORK/server.log" >&2
    exit 2
fi

# Schemathesis configuration, written next to the database for this run.
#
# All checks are on: that is schemathesis 4's default. `--checks all` is deliberately NOT passed on
# the command line, because a command-line check list overrides the per-operation entries of the
# config file, and KNOWN_FAILURES below could then not be limited to the operations they concern.
#
# Stateful phase: the document declares no OpenAPI links, so schemathesis infers them. Its
# "location-headers" inference (4.32.5) derives a link from the `Location` of
# `POST /api/v1/conversations` to `POST /chat/message` with an `id` parameter that operation does
# not have, and then refuses to run the stateful phase at all ("Invalid OpenAPI Links
# Definition"). That is a schemathesis bug, not an API one, so only the "dependency-analysis"
# inference is used; it links create -> get/rename/delete/list/send correctly.
CONFIG="$WORK/schemathesis.toml"
cat >"$CONFIG" <<'TOML'
[phases.stateful.inference]
algorithms = ["dependency-analysis"]
TOML

# KNOWN_FAILURES: API/spec mismatches found by this test and not fixed yet. Each entry switches
# off ONE check for the operations named, nothing else; delete the entry together with the fix
# (the run then proves the fix). An entry here hides a real bug: keep the list short.
KNOWN_FAILURES=$(cat <<'TOML'
# KNOWN-1 (positive_data_acceptance, ST202): some rules the server enforces cannot be said in
# JSON Schema, so a few schema-valid requests get 400: text that is only whitespace or contains
# NUL ("content": " "), a cursor string that is not one the server issued, and a message over
# `limits.max_message_chars` (a setting, so not in the static document). Ids are `format: uuid`,
# titles `maxLength: 200` and texts and cursors `minLength: 1`, so only these remain.
[[operations]]
include-path-regex = "^/api/v1/conversations|^/chat/message$"
checks.positive_data_acceptance.enabled = false
TOML
)
printf '\n%s\n' "$KNOWN_FAILURES" >>"$CONFIG"

args=(
    --config-file "$CONFIG"
    run "$BASE/openapi.json"
    --max-examples "$MAX_EXAMPLES"
    --max-time "$MAX_TIME"
    --workers "$WORKERS"
    --request-timeout 10
    --suppress-health-check all
    --report junit --report-junit-path "$WORK/junit.xml"
)
[[ -n "$SEED" ]] && args+=(--seed "$SEED")

set +e
# From the temp dir, so schemathesis' cache (.schemathesis/) does not land in the work tree.
# Through launch.py, which works around a CPython 3.11 thread-safety bug in `ast.parse`.
(cd "$WORK" && "$VENV/bin/python" "$ROOT/tests/schemathesis/launch.py" "${args[@]}") 2>&1 | tee "$WORK/output.txt"
status=${PIPESTATUS[0]}
set -e

# The closing line: one JUnit test per operation plus one for the stateful phase.
read -r passed failed < <(python3 - "$WORK/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 0); sys.exit()
cases = root.iter("testcase")
passed = failed = 0
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    else:
        passed += 1
print(passed, failed)
PY
)
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "schemathesis: chat-server died during the run; its log:" >&2
    tail -50 "$WORK/server.log" >&2
    status=1
fi
if [[ "$status" -ne 0 && "$failed" -eq 0 ]]; then failed=1; fi
cases="$(grep -oE '[0-9]+ generated' "$WORK/output.txt" | tail -1 | cut -d' ' -f1)"
echo "schemathesis: $passed passed, $failed failed (operations + stateful phase; ${cases:-?} test cases)"
exit "$status"
