#!/usr/bin/env bash
# A local Switchboard cluster: two gateway nodes, a router and a storage worker, against the
# local Redis (127.0.0.1:6379), PostgreSQL (127.0.0.1:5432, database `test`, schema
# `switchboard_local`) and a tansu Kafka-protocol broker (started here on 127.0.0.1:19092
# unless KAFKA_BROKERS names one).
#
#   scripts/cluster.sh start    # build (release, --features cluster) and start everything
#   scripts/cluster.sh status   # exit 0 when all four run, 3 otherwise
#   scripts/cluster.sh stop     # stop what start started (by PID)
#
# Gateways: http://127.0.0.1:8081 and :8082 (admin :9191 and :9192); router admin :9100,
# storage worker admin :9110. Put deploy/nginx-switchboard.conf in front of the gateways to get
# one address. State, configs and logs live in .cluster/.
#
# Environment (defaults in brackets), for running several clusters or tests side by side:
#   CLUSTER_STATE          state directory [.cluster]
#   CLUSTER_BIN_DIR        use the binaries there instead of building release ones
#   CLUSTER_HTTP_PORTS     the two gateways' client ports ["8081 8082"]
#   CLUSTER_ADMIN_PORTS    gw-1, gw-2, router, storage worker admin ports ["9191 9192 9100 9110"]
#   CLUSTER_SCHEMA         PostgreSQL schema [switchboard_local]
#   CLUSTER_REDIS_PREFIX   Redis key prefix [sb:]
#   CLUSTER_TOPIC_PREFIX   Kafka topic prefix [sb.]
#   KAFKA_BROKERS          use this broker instead of starting tansu on 127.0.0.1:19092
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state="${CLUSTER_STATE:-$root/.cluster}"
target="${CARGO_TARGET_DIR:-$root/target}"
brokers="${KAFKA_BROKERS:-127.0.0.1:19092}"
read -r -a http_ports <<<"${CLUSTER_HTTP_PORTS:-8081 8082}"
read -r -a admin_ports <<<"${CLUSTER_ADMIN_PORTS:-9191 9192 9100 9110}"
names=(gw-1 gw-2 router storage-workers)

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
postgres_schema = "${CLUSTER_SCHEMA:-switchboard_local}"
redis_prefix = "${CLUSTER_REDIS_PREFIX:-sb:}"
topic_prefix = "${CLUSTER_TOPIC_PREFIX:-sb.}"
inbound_partitions = 6
kafka_fetch_wait = "20ms"
kafka_session_timeout = "6s"
kafka_heartbeat_interval = "500ms"
TOML
}

start_bg() { # name command...
  local name=$1; shift
  "$@" >>"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
  echo "started $name (pid $!, log $state/$name.log)"
}

running() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

wait_ready() { # name admin-port
  for _ in $(seq 600); do
    curl -sf "127.0.0.1:$2/readyz" >/dev/null && return 0
    running "$1" || { echo "$1 exited; last lines of its log:" >&2; tail -n 20 "$state/$1.log" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 not ready within 60 s (log: $state/$1.log)" >&2
  return 1
}

case "${1:-}" in
  start)
    mkdir -p "$state"
    for name in "${names[@]}"; do
      if running "$name"; then echo "$name already runs (pid $(cat "$state/$name.pid")); stop first" >&2; exit 1; fi
    done
    if [ -n "${CLUSTER_BIN_DIR:-}" ]; then
      bin="$CLUSTER_BIN_DIR"
    else
      cargo build --release --features cluster -p gatewayd -p router -p storage-workers
      bin="$target/release"
    fi
    [ -f "$state/jwt.key" ] || { (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/jwt.key"); }
    if [ -z "${KAFKA_BROKERS:-}" ]; then scripts/kafka.sh start 19092 >/dev/null; fi
    config gw-1 "127.0.0.1:${http_ports[0]}" "127.0.0.1:${admin_ports[0]}" >"$state/gw-1.toml"
    config gw-2 "127.0.0.1:${http_ports[1]}" "127.0.0.1:${admin_ports[1]}" >"$state/gw-2.toml"
    config workers 127.0.0.1:0 127.0.0.1:0 >"$state/workers.toml"
    SWITCHBOARD_NODE_ID=router-1 start_bg router "$bin/router" --config "$state/workers.toml" --admin-listen "127.0.0.1:${admin_ports[2]}"
    SWITCHBOARD_NODE_ID=storage-1 start_bg storage-workers "$bin/storage-workers" --config "$state/workers.toml" --admin-listen "127.0.0.1:${admin_ports[3]}"
    start_bg gw-1 "$bin/gatewayd" --config "$state/gw-1.toml"
    start_bg gw-2 "$bin/gatewayd" --config "$state/gw-2.toml"
    for i in 0 1 2 3; do wait_ready "${names[$i]}" "${admin_ports[$i]}"; done
    echo "gateways: http://127.0.0.1:${http_ports[0]} http://127.0.0.1:${http_ports[1]}"
    ;;
  stop)
    for name in "${names[@]}"; do
      if [ -f "$state/$name.pid" ]; then
        pid=$(cat "$state/$name.pid")
        if kill "$pid" 2>/dev/null; then
          # Graceful: gateways close sockets with 1001 and flush; workers finish their batch.
          for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
          kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$state/$name.pid"
      fi
    done
    if [ -z "${KAFKA_BROKERS:-}" ]; then scripts/kafka.sh stop 19092 >/dev/null || true; fi
    echo stopped
    ;;
  status)
    all=0
    for name in "${names[@]}"; do
      if running "$name"; then
        echo "$name: running (pid $(cat "$state/$name.pid"))"
      else
        echo "$name: stopped"; all=3
      fi
    done
    exit $all
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
