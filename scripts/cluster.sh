#!/usr/bin/env bash
# A local Switchboard cluster: two gateway nodes, a router and a storage worker, against the
# local Redis (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432, database `test`, schema
# `switchboard_local`) and a tansu Kafka-protocol broker (started here on 127.0.0.1:19092
# unless KAFKA_BROKERS names one).
#
#   scripts/cluster.sh start    # build (release, --features cluster) and start everything
#   scripts/cluster.sh status
#   scripts/cluster.sh stop     # stop what start started (by PID)
#
# Gateways: http://127.0.0.1:8081 and :8082 (admin :9191 and :9192). Put deploy/nginx-switchboard.conf
# in front of them to get one address. State, configs and logs live in .cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state="$root/.cluster"
target="${CARGO_TARGET_DIR:-$root/target}"
brokers="${KAFKA_BROKERS:-127.0.0.1:19092}"

config() { # node listen admin
  cat <<TOML
mode = "cluster"
node_id = "$1"
[server]
listen = "$2"
admin_listen = "$3"
data_dir = "$state/$1"
[auth]
jwt_secret_file = "$state/jwt.key"
[cluster]
kafka_brokers = "$brokers"
postgres_url = "postgres://postgres@127.0.0.1:5432/test"
postgres_schema = "switchboard_local"
inbound_partitions = 6
kafka_fetch_wait = "20ms"
kafka_session_timeout = "6s"
kafka_heartbeat_interval = "500ms"
TOML
}

start_bg() { # name command...
  local name=$1; shift
  "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
  echo "started $name (pid $!, log .cluster/$name.log)"
}

case "${1:-}" in
  start)
    mkdir -p "$state"
    cargo build --release --features cluster -p gatewayd -p router -p storage-workers
    [ -f "$state/jwt.key" ] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/jwt.key"; chmod 600 "$state/jwt.key"; }
    if [ -z "${KAFKA_BROKERS:-}" ]; then scripts/kafka.sh start 19092 >/dev/null; fi
    config gw-1 127.0.0.1:8081 127.0.0.1:9191 >"$state/gw-1.toml"
    config gw-2 127.0.0.1:8082 127.0.0.1:9192 >"$state/gw-2.toml"
    config router-1 127.0.0.1:0 127.0.0.1:0 >"$state/shared.toml"
    start_bg router "$target/release/router" --config "$state/shared.toml"
    start_bg storage-workers "$target/release/storage-workers" --config "$state/shared.toml"
    start_bg gw-1 "$target/release/gatewayd" --config "$state/gw-1.toml"
    start_bg gw-2 "$target/release/gatewayd" --config "$state/gw-2.toml"
    for port in 9191 9192; do
      for _ in $(seq 100); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
    done
    echo "gateways: http://127.0.0.1:8081 http://127.0.0.1:8082"
    ;;
  stop)
    for name in gw-1 gw-2 router storage-workers; do
      if [ -f "$state/$name.pid" ]; then
        kill "$(cat "$state/$name.pid")" 2>/dev/null || true
        rm -f "$state/$name.pid"
      fi
    done
    if [ -z "${KAFKA_BROKERS:-}" ]; then scripts/kafka.sh stop 19092 >/dev/null || true; fi
    echo stopped
    ;;
  status)
    for name in gw-1 gw-2 router storage-workers; do
      if [ -f "$state/$name.pid" ] && kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
        echo "$name: running (pid $(cat "$state/$name.pid"))"
      else
        echo "$name: stopped"
      fi
    done
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
