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
