#!/usr/bin/env bash
# An S3-compatible server for development and tests: moto in server mode, in memory, on loopback.
#
#   scripts/s3.sh install          install moto (pinned by hash) into a venv unless already there
#   scripts/s3.sh start [port]     start a server on 127.0.0.1:<port> (default 19000) in the
#                                  background; prints S3_ENDPOINT=http://127.0.0.1:<port>
#   scripts/s3.sh stop [port]      stop the server this script started on <port>
#   scripts/s3.sh status [port]    exit 0 and print S3_ENDPOINT=... if it runs, else exit 3
#
# moto and every dependency come as wheels pinned by hash in tools/s3-requirements.txt and go into
# their own venv (the machine's site-packages are never used); installing takes a few seconds and
# needs python3 (3.11, the pins' wheels) with venv and pip. Everything is idempotent: `install`
# and `start` do nothing when already done, `stop` succeeds when nothing runs.
#
# moto accepts any credentials and any region; buckets are created with a plain (unsigned)
# `PUT /<bucket>`. It keeps everything in the server process: a restarted server starts empty.
#
# Environment:
#   SWITCHBOARD_TOOLS   where tools go (default ~/.cache/switchboard-tools); the venv lands in
#                       $SWITCHBOARD_TOOLS/moto, pidfiles and logs in $SWITCHBOARD_TOOLS/run
#   S3_OWNER_PID        with `start`: stop the server when this process exits (tests pass their
#                       own pid so an interrupted run leaves no server behind)
#   S3_KEEP_LOG         with `stop`: keep the server's log ($SWITCHBOARD_TOOLS/run/moto-<port>.log)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="$ROOT/tools/s3-requirements.txt"
TOOLS="${SWITCHBOARD_TOOLS:-$HOME/.cache/switchboard-tools}"
DEST="$TOOLS/moto"
PY="$DEST/bin/python"
RUN="$TOOLS/run"
DEFAULT_PORT=19000
# How long `start` waits for the port to accept connections (moto needs about a second).
START_TIMEOUT_S=30

die() { echo "s3.sh: $*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# The requirements file's hash, recorded beside an install so a changed pin reinstalls.
requirements_stamp() { sha256sum "$REQUIREMENTS" | cut -d' ' -f1; }

installed() { [[ -x "$PY" && "$(cat "$DEST/.requirements-sha256" 2>/dev/null)" == "$(requirements_stamp)" ]]; }

cmd_install() {
    installed && return 0
    command -v python3 >/dev/null || die "python3 is needed to install moto"
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
        die "tools/s3-requirements.txt pins wheels for CPython 3.11; python3 is $(python3 -V 2>&1)"
    mkdir -p "$TOOLS"
    # One installer at a time (tests start servers in parallel); the others then find it done.
    exec 9>"$TOOLS/.moto-install.lock"
    flock 9
    if installed; then
        exec 9>&-
        return 0
    fi
    # Build the venv in a fresh directory and move it into place, so a concurrent or interrupted
    # install never leaves a half-written tree at $DEST. (A moved venv still works through
    # `bin/python -m ...`; only console-script shebangs would name the old path, and none is used.)
    local tmp
    tmp="$(mktemp -d "$TOOLS/.moto.XXXXXX")"
    chmod 755 "$tmp"
    if ! python3 -m venv "$tmp"; then
        rm -rf "$tmp"
        die "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    # No --no-deps: pip then also checks that the file pins every dependency moto needs.
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$tmp/bin/python" -m pip install --quiet \
        --only-binary=:all: --require-hashes -r "$REQUIREMENTS"; then
        rm -rf "$tmp"
        die "pip could not install $REQUIREMENTS"
    fi
    "$tmp/bin/python" -c 'import moto.server, flask, flask_cors' || { rm -rf "$tmp"; die "moto.server does not import"; }
    requirements_stamp >"$tmp/.requirements-sha256"
    local old="$TOOLS/.moto.old.$$"
    [[ -e "$DEST" ]] && mv "$DEST" "$old"
    mv "$tmp" "$DEST"
    rm -rf "$old"
    exec 9>&-
    echo "s3.sh: installed moto in $DEST" >&2
}

port_arg() {
    local port="${1:-$DEFAULT_PORT}"
    [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]] || die "bad port: $port"
    echo "$port"
}

pidfile() { echo "$RUN/moto-$1.pid"; }

# The PID from the port's pidfile if that process is alive and is our moto server; nothing
# otherwise. Checking the command line guards against a stale pidfile whose PID was reused.
running_pid() {
    local file pid
    file="$(pidfile "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-m moto.server -H 127.0.0.1 -p $1 " || return 1
    echo "$pid"
}

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
    local port pid log deadline
    port="$(port_arg "${1:-}")"
    if pid="$(running_pid "$port")"; then
        echo "S3_ENDPOINT=http://127.0.0.1:$port"
        return 0
    fi
    accepts "$port" && die "127.0.0.1:$port is already taken by another process"
    cmd_install
    mkdir -p "$RUN"
    log="$RUN/moto-$port.log"
    # setsid + all three streams redirected: the server outlives this shell and holds no pipe of
    # the caller open (a test reading this script's output would otherwise never see EOF).
    # -I: the venv's packages only, never the user's site-packages or PYTHON* variables.
    setsid "$PY" -I -m moto.server -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$(pidfile "$port")"
    deadline=$((SECONDS + START_TIMEOUT_S))
    until accepts "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$(pidfile "$port")"
            tail -n 20 "$log" >&2 || true
            die "moto exited before accepting connections (log: $log)"
        fi
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$(pidfile "$port")"
            die "moto did not accept connections on port $port within ${START_TIMEOUT_S}s (log: $log)"
        fi
        sleep 0.05
    done
    if [[ -n "${S3_OWNER_PID:-}" ]]; then
        watch_owner "$S3_OWNER_PID" "$pid" "$port"
    fi
    echo "S3_ENDPOINT=http://127.0.0.1:$port"
}

# Stops the server once its owner has gone, polling once a second, detached like the server.
# It stops only the server it was started for: if that one is already gone (stopped by its
# owner) or the pidfile names another, it just exits.
watch_owner() {
    local owner="$1" pid="$2" port="$3"
    [[ "$owner" =~ ^[0-9]+$ ]] || die "bad S3_OWNER_PID: $owner"
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
        kill -0 "$2" 2>/dev/null && [[ "$(cat "$5" 2>/dev/null)" == "$2" ]] && exec bash "$3" stop "$4"
        exit 0
    ' s3-owner-watch "$owner" "$pid" "${BASH_SOURCE[0]}" "$port" "$(pidfile "$port")" </dev/null >/dev/null 2>&1 &
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
    [[ -n "${S3_KEEP_LOG:-}" ]] || rm -f "$RUN/moto-$port.log"
}

cmd_status() {
    local port pid
    port="$(port_arg "${1:-}")"
    if pid="$(running_pid "$port")" && accepts "$port"; then
        echo "S3_ENDPOINT=http://127.0.0.1:$port"
        echo "pid $pid, log $RUN/moto-$port.log" >&2
        return 0
    fi
    echo "s3.sh: no server of ours on port $port" >&2
    return 3
}

case "${1:-}" in
    install) [[ $# -eq 1 ]] || usage; cmd_install ;;
    start) [[ $# -le 2 ]] || usage; cmd_start "${2:-}" ;;
    stop) [[ $# -le 2 ]] || usage; cmd_stop "${2:-}" ;;
    status) [[ $# -le 2 ]] || usage; cmd_status "${2:-}" ;;
    *) usage ;;
esac
