# shellcheck shell=bash
# Sourced by the benchmark scripts: what they all need. Each script defines `log` first.

# Each argument is "command" or "command:package" (when the package has another name); the
# packages of the missing commands are installed with apt, which updates its lists only if the
# first try fails.
install_missing() {
    local wanted command package missing=()
    for wanted in "$@"; do
        command="${wanted%%:*}"
        package="${wanted#*:}"
        command -v "$command" >/dev/null 2>&1 || missing+=("$package")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y "${missing[@]}" >/dev/null 2>&1 ||
        { $sudo apt-get update >/dev/null && $sudo apt-get install -y "${missing[@]}" >/dev/null; }
}

# Polls `url` until it answers 2xx; fails after `timeout` seconds.
wait_http() { # url, timeout in s
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        [ $SECONDS -lt $deadline ] || { log "no answer from $1"; return 1; }
        sleep 0.05
    done
}

# The conversations the benchmarks read and write: the seed API's default one, and a small and a
# large one for page reads.
DEFAULT_ID="00000000-0000-7000-8000-000000000000"
SMALL_ID="00000000-0000-7000-8000-0000000000a1"
LARGE_ID="00000000-0000-7000-8000-0000000000a2"

# Seeds a migrated SQLite database directly with SQL, while its server is stopped: each
# conversation gets its exchanges (a user message, then the assistant's) and its last_position.
seed_sqlite() { # db file, exchanges in the small, large and default conversations
    local db="$1" small="$2" large="$3" history="$4" now pair id count tag
    now=$(($(date +%s) * 1000000))
    {
        echo "PRAGMA journal_mode = WAL;"
        echo "BEGIN;"
        echo "INSERT OR IGNORE INTO conversations (id, title, created_at, updated_at, last_position)
              VALUES ('$DEFAULT_ID', 'Chat', $now, $now, 0);"
        echo "INSERT INTO conversations (id, title, created_at, updated_at, last_position) VALUES
              ('$SMALL_ID', 'Small', $now, $now, 0), ('$LARGE_ID', 'Large', $now, $now, 0);"
        for pair in "$DEFAULT_ID:$history:1" "$SMALL_ID:$small:2" "$LARGE_ID:$large:3"; do
            IFS=: read -r id count tag <<<"$pair"
            cat <<ONE
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2 * $count)
INSERT INTO messages (id, conversation_id, position, role, content, created_at)
SELECT printf('%08x-0000-7000-8000-%012x', $tag, i), '$id', i,
       CASE i % 2 WHEN 1 THEN 'user' ELSE 'assistant' END,
       CASE i % 2 WHEN 1 THEN 'bench message ' || ((i + 1) / 2) || ' seeded by sqlite3'
                  ELSE 'Hi there! I''m a simulated AI assistant.' END,
       $now + i
FROM n;
UPDATE conversations SET last_position = 2 * $count WHERE id = '$id';
ONE
        done
        echo "COMMIT;"
    } | sqlite3 "$db" >/dev/null
}
