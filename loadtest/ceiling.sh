#!/usr/bin/env bash
# The ceiling of this machine for the harness (issue 4), and Postroad as a fraction of it.
#
# 1. Ceiling: `loadtest smtp --stamp` straight into `loadtest sink --verify` (no MTA,
#    nothing stored): N messages of SIZE bytes over CONNECTIONS connections. The sink
#    accepts at once, so what it counts per second is the most this machine moves
#    through the generator and the sink alone.
# 2. Postroad: `loadtest e2e --spawn-postroad` with the same load (spool.fsync = true,
#    delivery by MX through the DNS stub to the e2e sink), unless E2E_JSON names the
#    JSON report of such a run already made.
# It prints both and Postroad's delivered/s as a fraction of the ceiling.
#
# Usage:
#   loadtest/ceiling.sh
#   N=50000 CONNECTIONS=50 SIZE=4096 loadtest/ceiling.sh
#   E2E_JSON=e2e.json loadtest/ceiling.sh        # fraction of an existing e2e run
#
# Environment:
#   N=50000 SIZE=4096 CONNECTIONS=50   the load (same for both runs)
#   FSYNC=true                         spool.fsync of the spawned Postroad
#   WORK_ROOT=/var/tmp                 where the temporary directory goes (Postroad's spool)
#   CARGO_TARGET_DIR=/var/tmp/postroad-target
#   SKIP_BUILD=0                       1: use the release binaries already built
#   LOADTEST, POSTROAD                 binaries to use
#   E2E_JSON=                          skip step 2, use this e2e report
#   REPORT_DIR=                        keep the JSON/HTML reports here
#   KEEP=0                             1: keep the temporary directory
set -euo pipefail

N=${N:-50000}
SIZE=${SIZE:-4096}
CONNECTIONS=${CONNECTIONS:-50}
FSYNC=${FSYNC:-true}
WORK_ROOT=${WORK_ROOT:-/var/tmp}
SKIP_BUILD=${SKIP_BUILD:-0}
E2E_JSON=${E2E_JSON:-}
REPORT_DIR=${REPORT_DIR:-}
KEEP=${KEEP:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/postroad-target}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$CARGO_TARGET_DIR
LOADTEST=${LOADTEST:-$T/release/loadtest}
POSTROAD=${POSTROAD:-$T/release/postroad}

log() { printf '[ceiling] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for v in N SIZE CONNECTIONS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then die "$v must be a positive integer (got '${!v}')"; fi
done
case $FSYNC in true | false) ;; *) die "FSYNC must be true or false" ;; esac
command -v python3 >/dev/null || die "python3 is needed (free ports, JSON)"
[ -z "$REPORT_DIR" ] || mkdir -p "$REPORT_DIR"

WORK=$(mktemp -d "$WORK_ROOT/postroad-ceiling.XXXXXX")
SINK_PID=
LOAD_PID=

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [ -n "$LOAD_PID" ] && kill -TERM "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf -- "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_220() {
    local port=$1 deadline=$((SECONDS + $2)) line
    while ((SECONDS < deadline)); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            line=
            IFS= read -r -t 5 line <&3 || true
            printf 'QUIT\r\n' >&3 2>/dev/null || true
            exec 3>&- 3<&-
            [[ $line == 220* ]] && return 0
        fi
        sleep 0.1
    done
    return 1
}

if [ "$SKIP_BUILD" != 1 ]; then
    log "building loadtest and postroad (release, CARGO_TARGET_DIR=$T)"
    (cd "$ROOT" && cargo build --release -q -p postroad-loadtest -p postroad) || die "build failed"
fi
[ -x "$LOADTEST" ] || die "$LOADTEST missing"

# --- 1. ceiling: loadtest smtp -> loadtest sink ---------------------------------------
PORT=$(free_port)
"$LOADTEST" sink --listen "127.0.0.1:$PORT" --verify --report-every 0 \
    --json "$WORK/ceiling-sink.json" >"$WORK/ceiling-sink.txt" 2>&1 &
SINK_PID=$!
wait_220 "$PORT" 10 || die "loadtest sink did not start: $(cat "$WORK/ceiling-sink.txt")"
log "ceiling: loadtest smtp -> loadtest sink 127.0.0.1:$PORT, N=$N SIZE=$SIZE CONNECTIONS=$CONNECTIONS"
rc=0
"$LOADTEST" smtp --addr "127.0.0.1:$PORT" -n "$N" -c "$CONNECTIONS" --size "$SIZE" --stamp \
    --no-progress --json "$WORK/ceiling-smtp.json" --html "$WORK/ceiling-smtp.html" \
    >"$WORK/ceiling-smtp.txt" 2>&1 &
LOAD_PID=$!
wait "$LOAD_PID" || rc=$?
LOAD_PID=
kill -TERM "$SINK_PID"
wait "$SINK_PID" || die "loadtest sink --verify failed: $(cat "$WORK/ceiling-sink.txt")"
SINK_PID=
((rc == 0)) || die "loadtest smtp exited $rc: $(cat "$WORK/ceiling-smtp.txt")"

# --- 2. Postroad end to end ------------------------------------------------------------
if [ -z "$E2E_JSON" ]; then
    [ -x "$POSTROAD" ] || die "$POSTROAD missing"
    E2E_JSON=$WORK/e2e-postroad.json
    log "postroad: loadtest e2e --spawn-postroad $POSTROAD --fsync $FSYNC, same load"
    rc=0
    "$LOADTEST" e2e --spawn-postroad "$POSTROAD" --fsync "$FSYNC" --work-dir "$WORK" \
        -n "$N" -c "$CONNECTIONS" --size "$SIZE" --no-progress \
        --json "$E2E_JSON" --html "$WORK/e2e-postroad.html" >"$WORK/e2e-postroad.txt" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    ((rc == 0)) || log "loadtest e2e exited $rc: $(cat "$WORK/e2e-postroad.txt")"
fi
[ -e "$E2E_JSON" ] || die "no e2e report $E2E_JSON"
if [ -n "$REPORT_DIR" ]; then
    cp -f "$WORK"/ceiling-* "$REPORT_DIR/"
    cp -f "$E2E_JSON" "$REPORT_DIR/e2e-postroad.json"
    [ -e "$WORK/e2e-postroad.html" ] && cp -f "$WORK/e2e-postroad.html" "$REPORT_DIR/"
fi

disk=$(df -P "$WORK" | awk 'NR==2 {print $1}')
python3 - "$WORK/ceiling-smtp.json" "$WORK/ceiling-sink.json" "$E2E_JSON" "$(nproc)" "$disk" <<'PY'
import json, sys
smtp, sink, e2e = (json.load(open(p)) for p in sys.argv[1:4])
cores, disk = sys.argv[4], sys.argv[5]
a, s = smtp["ack_latency_ms"], sink["stats"]["e2e_latency_ms"]
e, ea = e2e["e2e_latency_ms"], e2e["ack_latency_ms"]
print()
print("== Ceiling of the harness on this machine, and Postroad end to end ==")
print(f"machine: {cores} cores, spool disk {disk}; load: {smtp['mode']}, {smtp['connections']} connections")
print()
print("                                      msgs/s   ack p50/p99 ms   e2e p50/p95/p99 ms   lost/dup")
print(f"ceiling  loadtest smtp -> sink   {smtp['messages_per_sec']:>10.1f}   {a['p50']:>6.2f} /{a['p99']:>6.2f}"
      f"   {s['p50']:>6.2f} /{s['p95']:>6.2f} /{s['p99']:>6.2f}   -/{sink['stats']['duplicates']}")
fsync = (e2e.get("postroad") or {}).get("spool_fsync", "?")
print(f"postroad e2e (delivered/s)      {e2e['delivered_per_sec']:>10.1f}   {ea['p50']:>6.2f} /{ea['p99']:>6.2f}"
      f"   {e['p50']:>6.2f} /{e['p95']:>6.2f} /{e['p99']:>6.2f}   {e2e['lost']}/{e2e['duplicates']}")
print(f"         (accepted/s)           {e2e['accepted_per_sec']:>10.1f}   spool.fsync = {str(fsync).lower()}")
print()
frac = e2e["delivered_per_sec"] / smtp["messages_per_sec"] if smtp["messages_per_sec"] else 0
print(f"Postroad delivers at {frac:.1%} of the ceiling ({e2e['delivered_per_sec']:.0f} of "
      f"{smtp['messages_per_sec']:.0f} msgs/s).")
if not e2e["ok"]:
    print("postroad e2e run FAILED: " + "; ".join(e2e["problems"]))
    sys.exit(1)
PY
