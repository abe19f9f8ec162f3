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
# How long `start` waits for the port to accept connections (moto needs about a second), and how
# often it tries meanwhile.
START_TIMEOUT_S=30
START_POLL_S=0.05

# The commands, pidfiles, logs and owner watchdog are shared with scripts/kafka.sh; what follows
# fills in what scripts/lib/daemon.sh asks of this script (its header lists it).
DAEMON_NAME=moto
DAEMON_KIND=server
DAEMON_TAG=s3.sh
DAEMON_BIN="$PY"
DAEMON_OWNER_VAR=S3_OWNER_PID
DAEMON_KEEP_LOG_VAR=S3_KEEP_LOG
# shellcheck source=SCRIPTDIR/lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

# Our moto server on this very port (as daemon_launch starts it).
daemon_pattern() { echo "-m moto.server -H 127.0.0.1 -p $1 "; }

daemon_env_line() { echo "S3_ENDPOINT=http://127.0.0.1:$1"; }

# -I: the venv's packages only, never the user's site-packages or PYTHON* variables.
daemon_launch() { setsid "$PY" -I -m moto.server -H 127.0.0.1 -p "$1" </dev/null >"$2" 2>&1 & }

# moto and its dependencies go into a venv of their own, built in the directory. (A moved venv
# still works through `bin/python -m ...`; only console-script shebangs would name the old path,
# and none is used.)
daemon_install_into() {
    local dir="$1"
    command -v python3 >/dev/null || { warn "python3 is needed to install moto"; return 1; }
    if ! python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        warn "tools/s3-requirements.txt pins wheels for CPython 3.11; python3 is $(python3 -V 2>&1)"
        return 1
    fi
    if ! python3 -m venv "$dir"; then
        warn "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
        return 1
    fi
    # No --no-deps: pip then also checks that the file pins every dependency moto needs.
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$dir/bin/python" -m pip install --quiet \
        --only-binary=:all: --require-hashes -r "$REQUIREMENTS"; then
        warn "pip could not install $REQUIREMENTS"
        return 1
    fi
    "$dir/bin/python" -c 'import moto.server, flask, flask_cors' || { warn "moto.server does not import"; return 1; }
}

daemon_main "$@"
