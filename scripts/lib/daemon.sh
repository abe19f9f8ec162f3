# shellcheck shell=bash
# The common part of scripts/kafka.sh and scripts/s3.sh: a tool installed from pinned PyPI
# requirements into $SWITCHBOARD_TOOLS and run in the background on 127.0.0.1:<port>, with a
# pidfile and a log per port, an optional owner-pid watchdog, and the install / start / stop /
# status commands. Each script documents its own commands and environment in its header (which
# `usage` prints) and ends with `daemon_main "$@"`.
#
# The sourcing script runs with `set -euo pipefail` and defines, before calling daemon_main:
#   TOOLS, DEST, REQUIREMENTS   the tools folder, the tool's install there, its pinned requirements
#   RUN                         where pidfiles and logs go ($RUN/<name>-<port>.pid and .log)
#   DEFAULT_PORT                the port when none is given
#   START_TIMEOUT_S             how long `start` waits for the port to accept connections
#   START_POLL_S                how often `start` tries it meanwhile
#   DAEMON_NAME                 the tool (tansu, moto): pidfile and log names, messages
#   DAEMON_KIND                 what it is called in messages (broker, server)
#   DAEMON_TAG                  the script's name, the prefix of its messages (kafka.sh)
#   DAEMON_BIN                  the executable whose presence (with the stamp) marks an install
#   DAEMON_OWNER_VAR            the name of the owner-pid variable (KAFKA_OWNER_PID)
#   DAEMON_KEEP_LOG_VAR         the name of the keep-the-log variable (KAFKA_KEEP_LOG)
# and the functions:
#   daemon_pattern <port>       a grep pattern that the process's command line (NULs turned
#                               into spaces) matches when it is the one started for <port>
#   daemon_env_line <port>      prints the KEY=value line that callers eval
#   daemon_launch <port> <log>  starts the tool as exactly one background job (cmd_start
#                               reads its PID from $!), detached with setsid, all three
#                               streams redirected (stdout and stderr to <log>)
#   daemon_install_into <dir>   installs the tool into the fresh, empty <dir>; on failure says
#                               why (warn) and returns non-zero. It runs in a `||` list, so
#                               `set -e` is off there: check every step.
#
# The variables come from the sourcing script, hence:
# shellcheck disable=SC2154

# The script that sources this file: `usage` prints its header, the owner watchdog re-runs it.
DAEMON_SCRIPT="${BASH_SOURCE[1]}"

warn() { echo "$DAEMON_TAG: $*" >&2; }

die() { warn "$*"; exit 1; }

usage() {
    sed -n '2,8p' "$DAEMON_SCRIPT" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The requirements file's hash, recorded beside an install so a changed pin reinstalls.
requirements_stamp() { sha256sum "$REQUIREMENTS" | cut -d' ' -f1; }

installed() { [[ -x "$DAEMON_BIN" && "$(cat "$DEST/.requirements-sha256" 2>/dev/null)" == "$(requirements_stamp)" ]]; }

cmd_install() {
    installed && return 0
    mkdir -p "$TOOLS"
    # One installer at a time (tests start several in parallel); the others then find it done.
    exec 9>"$TOOLS/.$DAEMON_NAME-install.lock"
    flock 9
    if installed; then
        exec 9>&-
        return 0
    fi
    # Install into a fresh directory and move it into place, so a concurrent or interrupted
    # install never leaves a half-written tree at $DEST.
    local tmp old="$TOOLS/.$DAEMON_NAME.old.$$"
    tmp="$(mktemp -d "$TOOLS/.$DAEMON_NAME.XXXXXX")"
    chmod 755 "$tmp"
    daemon_install_into "$tmp" || { rm -rf "$tmp"; exit 1; }
    requirements_stamp >"$tmp/.requirements-sha256"
    [[ -e "$DEST" ]] && mv "$DEST" "$old"
    mv "$tmp" "$DEST"
    rm -rf "$old"
    exec 9>&-
    warn "installed $DAEMON_NAME in $DEST"
}

port_arg() {
    local port="${1:-$DEFAULT_PORT}"
    [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] || die "bad port: $port"
    echo "$port"
}

pidfile() { echo "$RUN/$DAEMON_NAME-$1.pid"; }

logfile() { echo "$RUN/$DAEMON_NAME-$1.log"; }

# The PID from the port's pidfile if that process is alive and is ours (daemon_pattern); nothing
# otherwise. Checking the command line guards against a stale pidfile whose PID was reused.
running_pid() {
    local file pid
    file="$(pidfile "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(daemon_pattern "$1")" || return 1
    echo "$pid"
}

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
    local port pid log deadline
    port="$(port_arg "${1:-}")"
    if pid="$(running_pid "$port")"; then
        daemon_env_line "$port"
        return 0
    fi
    accepts "$port" && die "127.0.0.1:$port is already taken by another process"
    cmd_install
    mkdir -p "$RUN"
    log="$(logfile "$port")"
    # Detached (setsid, all streams redirected): it outlives this shell and holds no pipe of the
    # caller open (a test reading this script's output would otherwise never see EOF).
    daemon_launch "$port" "$log"
    pid=$!
    echo "$pid" >"$(pidfile "$port")"
    deadline=$((SECONDS + START_TIMEOUT_S))
    until accepts "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pidfile "$port")"
            tail -n 20 "$log" >&2 || true
            die "$DAEMON_NAME exited before accepting connections (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$(pidfile "$port")"
            die "$DAEMON_NAME did not accept connections on port $port within ${START_TIMEOUT_S}s (log: $log)"
        fi
        sleep "$START_POLL_S"
    done
    if [[ -n "${!DAEMON_OWNER_VAR:-}" ]]; then
        watch_owner "${!DAEMON_OWNER_VAR}" "$pid" "$port"
    fi
    daemon_env_line "$port"
}

# Stops the process once its owner has gone, polling once a second, detached like the process.
# It stops only the process it was started for: if that one is already gone (stopped by its
# owner) or the pidfile names another, it just exits.
watch_owner() {
    local owner="$1" pid="$2" port="$3"
    [[ "$owner" =~ ^[0-9]+$ ]] || die "bad $DAEMON_OWNER_VAR: $owner"
    # The inner script gets its values as arguments ($1..$5), hence single quotes.
    # shellcheck disable=SC2016
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
        kill -0 "$2" 2>/dev/null && [[ "$(cat "$5" 2>/dev/null)" == "$2" ]] && exec bash "$3" stop "$4"
        exit 0
    ' "${DAEMON_TAG%.sh}-owner-watch" "$owner" "$pid" "$DAEMON_SCRIPT" "$port" "$(pidfile "$port")" \
        </dev/null >/dev/null 2>&1 &
}

cmd_stop() {
    local port pid
    port="$(port_arg "${1:-}")"
    if ! pid="$(running_pid "$port")"; then
        rm -f "$(pidfile "$port")"
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    rm -f "$(pidfile "$port")"
    [[ -n "${!DAEMON_KEEP_LOG_VAR:-}" ]] || rm -f "$(logfile "$port")"
}

cmd_status() {
    local port pid
    port="$(port_arg "${1:-}")"
    if pid="$(running_pid "$port")" && accepts "$port"; then
        daemon_env_line "$port"
        echo "pid $pid, log $(logfile "$port")" >&2
        return 0
    fi
    warn "no $DAEMON_KIND of ours on port $port"
    return 3
}

daemon_main() {
    case "${1:-}" in
        install) [[ $# -eq 1 ]] || usage; cmd_install ;;
        start) [[ $# -le 2 ]] || usage; cmd_start "${2:-}" ;;
        stop) [[ $# -le 2 ]] || usage; cmd_stop "${2:-}" ;;
        status) [[ $# -le 2 ]] || usage; cmd_status "${2:-}" ;;
        *) usage ;;
    esac
}
