#!/usr/bin/env bash
# The embedded spool vs the Kafka backend, end to end, in one run (issue 5).
#
# The SAME load (`loadtest e2e`: N messages of SIZE bytes over CONNECTIONS connections,
# one recipient each, the default weighted domain mix) goes
#   1. through one `postroad serve` on the embedded spool (every role in one process),
#   2. through INGRESS `postroad serve --roles ingress` processes (connections spread
#      over them) and RELAYS `postroad serve --roles relay` workers sharing Kafka
#      topics on a tansu broker (PostgreSQL storage) started for the run.
# Every relay delivers to the e2e sink as its smarthost. Reported per setup:
# accepted/s, delivered/s, ack p50/p95 (end of data -> 250), submit->delivered
# p50/p99, lost and duplicated.
#
# Durability of what is compared (both acknowledge only durable mail):
#   spool: fsync of each group commit before 250 (spool.fsync = true)
#   kafka: 250 after the broker acknowledged the record (acks=all, idempotent
#          producer); tansu's PostgreSQL storage commits each produce request
#          (PostgreSQL's default synchronous_commit = on)
#
# Usage:
#   loadtest/compare-kafka.sh
#   N=20000 CONNECTIONS=50 RELAYS=2 SKIP_BUILD=1 loadtest/compare-kafka.sh
#
# Environment:
#   N=5000 SIZE=4096 CONNECTIONS=50   load (loadtest e2e -n/--size/-c)
#   INGRESS=2 RELAYS=2                Kafka-backend processes
#   PARTITIONS=16                     partitions of the send topic
#   TIER_PARTITIONS=4                 partitions of each retry tier (1m, 10m, 1h, 6h)
#   EVENTS_PARTITIONS=2               partitions of the events topic
#   FETCH_WAIT_MS=20                  kafka.fetch_wait_max_ms of the relay workers
#   PUBLISH_EVENTS=true               kafka.publish_events (delivery events to the events topic)
#   ONLY=both                         both | spool | kafka
#   BROKER_PORT=29092                 the run's own broker (database tansu_bench, emptied)
#   DELIVERY_TIMEOUT=600              loadtest e2e --drain-timeout
#   WORK_ROOT=/var/tmp  SKIP_BUILD=0  CARGO_TARGET_DIR=/var/tmp/postroad-target  KEEP=0
#
# Needs tansu (scripts/kafka/install) and PostgreSQL on 127.0.0.1:5432.
set -euo pipefail

N=${N:-5000}
SIZE=${SIZE:-4096}
CONNECTIONS=${CONNECTIONS:-50}
INGRESS=${INGRESS:-2}
RELAYS=${RELAYS:-2}
PARTITIONS=${PARTITIONS:-16}
TIER_PARTITIONS=${TIER_PARTITIONS:-4}
EVENTS_PARTITIONS=${EVENTS_PARTITIONS:-2}
FETCH_WAIT_MS=${FETCH_WAIT_MS:-20}
PUBLISH_EVENTS=${PUBLISH_EVENTS:-true}
ONLY=${ONLY:-both}
BROKER_PORT=${BROKER_PORT:-29092}
DELIVERY_TIMEOUT=${DELIVERY_TIMEOUT:-600}
WORK_ROOT=${WORK_ROOT:-/var/tmp}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/postroad-target}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BROKER=$ROOT/scripts/kafka/broker
LOADTEST=${LOADTEST:-$CARGO_TARGET_DIR/release/loadtest}
POSTROAD=${POSTROAD:-$CARGO_TARGET_DIR/release/postroad}

log() { printf '[compare-kafka] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case $ONLY in both | spool | kafka) ;; *) die "ONLY must be both, spool or kafka" ;; esac
for v in N SIZE CONNECTIONS INGRESS RELAYS PARTITIONS TIER_PARTITIONS EVENTS_PARTITIONS FETCH_WAIT_MS BROKER_PORT DELIVERY_TIMEOUT; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then die "$v must be a positive integer (got '${!v}')"; fi
done

WORK=$(mktemp -d "$WORK_ROOT/postroad-compare-kafka.XXXXXX")
PIDS=()
BROKER_STARTED=0

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$? pid
    set +e
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 30; done
    ((BROKER_STARTED)) && "$BROKER" stop --port "$BROKER_PORT" >/dev/null
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf -- "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

stop_pid() {
    local pid=$1 secs=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until the log file $1 says "postroad ready" (bounded by $2 seconds).
wait_ready() {
    local file=$1 deadline=$((SECONDS + $2))
    until grep -q "postroad ready" "$file" 2>/dev/null; do
        ((SECONDS < deadline)) || { tail -n 20 "$file" >&2; die "not ready: $file"; }
        sleep 0.1
    done
}

# Writes a config for one process: $1 name, $2 SMTP port (0: none), $3 sink port,
# $4 backend.
write_config() {
    local name=$1 port=$2 sink=$3 backend=$4 conf=$WORK/$1.toml
    printf '[default]\nconnection_limit = 20\n' >"$WORK/shaping.toml"
    cat >"$conf" <<EOF
[server]
hostname = "$name.compare.test"
data_dir = "$WORK/$name-data"

[queue]
backend = "$backend"

[kafka]
brokers = "127.0.0.1:$BROKER_PORT"
group_id = "bench-relay"
instance_id = "$name"
fetch_wait_max_ms = $FETCH_WAIT_MS
publish_events = $PUBLISH_EVENTS

[kafka.topics]
send = { name = "bench-send", partitions = $PARTITIONS }
bulk = { name = "bench-bulk", partitions = $PARTITIONS }
events = { name = "bench-events", partitions = $EVENTS_PARTITIONS }
$(for t in 1m:60 10m:600 1h:3600 6h:21600; do
    printf '[[kafka.retry_tier]]\ntopic = "bench-retry-%s"\ndelay_secs = %s\npartitions = %s\n' "${t%%:*}" "${t##*:}" "$TIER_PARTITIONS"
done)

[smtp]
max_connections = 1000
max_connections_per_ip = 500

[relay]
tls = "none"
smarthost = "127.0.0.1:$sink"
shaping_file = "$WORK/shaping.toml"

[admin]
listen = "127.0.0.1:$(free_port)"

[http]
listen = "127.0.0.1:$(free_port)"

[[listener]]
name = "relay"
address = "127.0.0.1:$port"
role = "relay"
tls = "none"
EOF
    echo "$conf"
}

start() { # $1 name, $2 config, $3.. serve args
    local name=$1 conf=$2
    shift 2
    RUST_LOG=${RUST_LOG:-warn,postroad=info} "$POSTROAD" serve --config "$conf" "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$WORK/$name.log" 90
}

run_e2e() { # $1 name, $2 addrs, $3 sink port
    "$LOADTEST" e2e --addr "$2" --sink-listen "127.0.0.1:$3" --dns-listen "127.0.0.1:$(free_port)" \
        -n "$N" -c "$CONNECTIONS" --size "$SIZE" --drain-timeout "$DELIVERY_TIMEOUT" --no-progress \
        --json "$WORK/e2e-$1.json" >"$WORK/e2e-$1.txt" 2>&1 || {
        log "loadtest e2e ($1) failed:"
        sed 's/^/    /' "$WORK/e2e-$1.txt" >&2
    }
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 30; done
    PIDS=()
}

row() {
    python3 - "$1" "$2" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{name:<24} (no report: {e})"); sys.exit(0)
a, l = r["ack_latency_ms"], r["e2e_latency_ms"]
status = "ok" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
print(f"{name:<24} {r['accepted_per_sec']:>10.1f} {r['delivered_per_sec']:>11.1f} {a['p50']:>8.2f} {a['p95']:>8.2f} "
      f"{l['p50']:>9.1f} {l['p99']:>9.1f} {r['lost']:>6} {r['duplicates']:>5}   {status}")
PY
}

if [ "$SKIP_BUILD" != 1 ]; then
    log "building loadtest and postroad (release)"
    (cd "$ROOT" && cargo build --release -q -p postroad-loadtest -p postroad) || die "build failed"
fi
[ -x "$LOADTEST" ] && [ -x "$POSTROAD" ] || die "binaries missing in $CARGO_TARGET_DIR/release"

if [ "$ONLY" != kafka ]; then
    sink=$(free_port) port=$(free_port)
    conf=$(write_config spool "$port" "$sink" spool)
    start spool "$conf"
    log "spool: one process on 127.0.0.1:$port"
    run_e2e spool "127.0.0.1:$port" "$sink"
    stop_all
fi

if [ "$ONLY" != spool ]; then
    "$BROKER" start --storage postgres --port "$BROKER_PORT" --db tansu_bench --fresh >&2
    BROKER_STARTED=1
    sink=$(free_port)
    conf=$(write_config init 0 "$sink" kafka)
    "$POSTROAD" kafka init --config "$conf" >"$WORK/init.txt" || die "kafka init failed"
    addrs=()
    for ((i = 1; i <= INGRESS; i++)); do
        port=$(free_port)
        start "ingress-$i" "$(write_config "ingress-$i" "$port" "$sink" kafka)" --roles ingress
        addrs+=("127.0.0.1:$port")
    done
    for ((i = 1; i <= RELAYS; i++)); do
        start "relay-$i" "$(write_config "relay-$i" 0 "$sink" kafka)" --roles relay
        # Static members join one at a time (some brokers mishandle simultaneous joins).
        deadline=$((SECONDS + 90))
        until grep -q "Kafka partitions assigned" "$WORK/relay-$i.log"; do
            ((SECONDS < deadline)) || die "relay-$i got no partitions"
            sleep 0.2
        done
    done
    # Each join rebalances the group: relay-i has been assigned once per relay started
    # after it, plus its own join.
    for ((i = 1; i <= RELAYS; i++)); do
        deadline=$((SECONDS + 120))
        until (($(grep -c "Kafka partitions assigned" "$WORK/relay-$i.log") >= RELAYS - i + 1)); do
            ((SECONDS < deadline)) || die "relay-$i was not given its share of partitions"
            sleep 0.2
        done
    done
    log "kafka: $INGRESS ingress (${addrs[*]}), $RELAYS relay workers, broker 127.0.0.1:$BROKER_PORT"
    run_e2e kafka "$(IFS=,; echo "${addrs[*]}")" "$sink"
    stop_all
fi

cat <<EOF

== embedded spool vs Kafka backend, end to end (loadtest e2e -> Postroad -> loadtest sink) ==
load:     N=$N messages, body $SIZE bytes, $CONNECTIONS connections in, 1 recipient each
kafka:    $INGRESS ingress + $RELAYS relay processes, send topic $PARTITIONS partitions, retry tiers $TIER_PARTITIONS each, events $EVENTS_PARTITIONS (publish $PUBLISH_EVENTS), fetch wait $FETCH_WAIT_MS ms, tansu $("${TANSU_ROOT:-/var/tmp/tansu-root}/bin/tansu" --version 2>/dev/null | cut -d' ' -f2) on PostgreSQL
machine:  $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); everything (generator, broker, PostgreSQL, MTAs, sink) on it

                         accepted/s delivered/s ack p50  ack p95  e2e p50ms e2e p99ms   lost   dup   status
EOF
[ "$ONLY" = kafka ] || row "spool (1 process)" "$WORK/e2e-spool.json"
[ "$ONLY" = spool ] || row "kafka (${INGRESS}i + ${RELAYS}r)" "$WORK/e2e-kafka.json"
