#!/usr/bin/env bash
# The HTTP API's ingress (issue 11): one `postroad serve` with its relay off (only
# ingress is measured; spool.fsync on), an API key of its own, and `loadtest http` runs
# against it, one after the other. Prints each run's throughput and ack latency.
#
# Usage:
#   loadtest/http-bench.sh
#   RUNS="--form template -n 50000 -c 32;--form template --rate 3000 --duration 20 -c 64" loadtest/http-bench.sh
#
# Environment:
#   RUNS="ARGS;ARGS;..."    `loadtest http` arguments of each run, separated by ';'
#                            (default: the table of the README)
#   PORT=8080                the API's port (127.0.0.1)
#   WORK_ROOT=/var/tmp       where the temporary data directory goes
#   CARGO_TARGET_DIR=/var/tmp/postroad-target
#   SKIP_BUILD=0             1: use the release binaries already built
#   LOADTEST, POSTROAD       binaries to use
set -euo pipefail

DEFAULT_RUNS="--form template -n 50000 -c 32;--form template --rate 3000 --duration 20 -c 64;\
--form explicit -n 50000 -c 32;--form explicit --rate 2500 --duration 20 -c 64;\
--form raw -n 50000 -c 32;--form template --http2 -n 50000 -c 32;\
--form raw --batch 100 -n 200000 -c 4;--form template --batch 100 -n 200000 -c 4;\
--form explicit --batch 100 -n 200000 -c 4"
RUNS=${RUNS:-$DEFAULT_RUNS}
PORT=${PORT:-8080}
WORK_ROOT=${WORK_ROOT:-/var/tmp}
SKIP_BUILD=${SKIP_BUILD:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/postroad-target}

cd "$(dirname "$0")/.."
if [ "$SKIP_BUILD" != 1 ]; then
    cargo build --release --locked -p postroad -p postroad-loadtest
fi
LOADTEST=${LOADTEST:-$CARGO_TARGET_DIR/release/loadtest}
POSTROAD=${POSTROAD:-$CARGO_TARGET_DIR/release/postroad}

work=$(mktemp -d "$WORK_ROOT/postroad-http-bench.XXXXXX")
cat > "$work/postroad.toml" <<TOML
[relay]
enabled = false
[http]
listen = "127.0.0.1:$PORT"
TOML
export POSTROAD_API_KEY
POSTROAD_API_KEY=$("$POSTROAD" api-key create --name http-bench --data-dir "$work/data" 2>/dev/null)
"$POSTROAD" serve -c "$work/postroad.toml" --data-dir "$work/data" > "$work/postroad.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/openapi.json" && break
    sleep 0.1
done

# A short warm-up (page cache, connections, the template).
"$LOADTEST" http --addr "127.0.0.1:$PORT" --no-progress --form template -n 5000 -c 8 > /dev/null
IFS=';' read -ra runs <<< "$RUNS"
for args in "${runs[@]}"; do
    echo "== loadtest http $args"
    # shellcheck disable=SC2086 # each run's arguments are split on purpose
    "$LOADTEST" http --addr "127.0.0.1:$PORT" --no-progress $args |
        grep -E "^(throughput|ack latency|errors|rejected)" | grep -vE " 0$" || true
done
