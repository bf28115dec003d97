#!/usr/bin/env bash
# Postroad vs Postfix, end to end, in one run (issues 3 and 4).
#
# The SAME load (`loadtest e2e`: N messages of SIZE bytes over CONNECTIONS connections,
# one recipient each, stamped with X-Loadtest-Sent-At) goes first through a private
# Postfix relay instance (scripts/postfix/instance, relayhost = the sink), then through
# `postroad serve --smarthost` (same kind of sink, a fresh one per run). The sink is
# `loadtest sink` with --verify (checksums, dedupe by Message-ID and recipient), run
# inside `loadtest e2e` so that every delivery is matched to the 250 the MTA gave for
# it. For each MTA it reports
#   accepted/s    messages the MTA answered 250 to / load time
#   delivered/s   distinct deliveries / (first send until the sink had the last one)
#   e2e p50/p95/p99  submit (X-Loadtest-Sent-At) -> received by the sink, per delivery
#   lost, dup     accepted but never delivered / delivered more than once
# and the ratio Postroad/Postfix. Everything runs on 127.0.0.1; all state lives in one
# temporary directory that is removed on exit, and every process started is stopped.
#
# Durability of what is compared (both acknowledge only durable mail):
#   Postfix:  cleanup(8) fsyncs each queue file before smtpd answers 250 (one fsync per
#             message; Postfix's default, unchanged here).
#   Postroad: the spool fsyncs each group commit before 250 (spool.fsync = true, the
#             default; concurrent messages share one fsync).
#
# Usage (as root: Postfix's master runs as root):
#   loadtest/compare-postfix.sh
#   N=20000 SIZE=4096 CONNECTIONS=50 loadtest/compare-postfix.sh
#
# Environment:
#   N=2000                  messages
#   SIZE=4096               body bytes per message
#   CONNECTIONS=16          concurrent inbound SMTP connections (loadtest -c)
#   DELIVERY_CONNECTIONS=20 outbound connections to the sink, both MTAs (Postfix
#                           *_destination_concurrency_limit, Postroad's shaping connection_limit)
#   ONLY=both               both | postfix | postroad
#   DELIVERY_TIMEOUT=600    max seconds after the load for the sink to get everything
#                           (loadtest e2e --drain-timeout)
#   WORK_ROOT=/var/tmp      where the temporary directory goes (Postfix queue, Postroad
#                           spool: same disk for both)
#   CARGO_TARGET_DIR=/var/tmp/postroad-target
#   SKIP_BUILD=0            1: use the binaries already in $CARGO_TARGET_DIR/release
#   LOADTEST, POSTROAD      binaries to use (default: $CARGO_TARGET_DIR/release/...)
#   JSON_OUT=               also write the results as JSON to this file
#   REPORT_DIR=             also keep each run's e2e JSON and HTML report here
#   KEEP=0                  1: keep the temporary directory (logs) after the run
#
# Exit: 0 when every run that could run delivered everything it accepted, exactly
# once; 1 otherwise (the other half still runs and is printed).
set -euo pipefail

N=${N:-2000}
SIZE=${SIZE:-4096}
CONNECTIONS=${CONNECTIONS:-16}
DELIVERY_CONNECTIONS=${DELIVERY_CONNECTIONS:-20}
ONLY=${ONLY:-both}
DELIVERY_TIMEOUT=${DELIVERY_TIMEOUT:-600}
WORK_ROOT=${WORK_ROOT:-/var/tmp}
SKIP_BUILD=${SKIP_BUILD:-0}
JSON_OUT=${JSON_OUT:-}
REPORT_DIR=${REPORT_DIR:-}
KEEP=${KEEP:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/postroad-target}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
INSTANCE=$ROOT/scripts/postfix/instance
T=$CARGO_TARGET_DIR
LOADTEST=${LOADTEST:-$T/release/loadtest}
POSTROAD=${POSTROAD:-$T/release/postroad}

log() { printf '[compare] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the Postfix instance's master runs as root)"
case $ONLY in both | postfix | postroad) ;; *) die "ONLY must be both, postfix or postroad" ;; esac
for v in N SIZE CONNECTIONS DELIVERY_CONNECTIONS DELIVERY_TIMEOUT; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then die "$v must be a positive integer (got '${!v}')"; fi
done
command -v python3 >/dev/null || die "python3 is needed (free ports, JSON); scripts/install-test-deps installs it"
if [ "$ONLY" != postroad ]; then
    [ -x /usr/sbin/postfix ] || die "Postfix missing: apt-get install postfix ('No configuration')"
fi
[ -z "$REPORT_DIR" ] || mkdir -p "$REPORT_DIR"

WORK=$(mktemp -d "$WORK_ROOT/postroad-compare.XXXXXX")
chmod 0755 "$WORK" # the postfix user must traverse it to reach the instance's queue
POSTROAD_PID=
LOAD_PID=
PF_DIR=$WORK/postfix

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [ -n "$LOAD_PID" ] && stop_pid "$LOAD_PID" 5
    [ -n "$POSTROAD_PID" ] && stop_pid "$POSTROAD_PID" 30
    [ -e "$PF_DIR" ] && "$INSTANCE" stop "$PF_DIR" >/dev/null 2>&1
    if [ "$KEEP" = 1 ]; then
        log "kept $WORK"
    else
        [ -e "$PF_DIR" ] && "$INSTANCE" stop "$PF_DIR" --purge >/dev/null 2>&1
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

# SIGTERM, wait up to $2 seconds, then SIGKILL.
stop_pid() {
    local pid=$1 secs=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 0
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:$1 greets with 220 (bounded by $2 seconds).
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

# Runs `loadtest e2e` against the MTA on 127.0.0.1:$1, whose relay delivers to
# 127.0.0.1:$3 (the e2e sink binds it); writes $WORK/e2e-$2.{json,html,txt}.
run_e2e() {
    local port=$1 name=$2 sink_port=$3 rc=0
    # In the background + wait, so that INT/TERM run the cleanup at once.
    "$LOADTEST" e2e --addr "127.0.0.1:$port" --sink-listen "127.0.0.1:$sink_port" \
        --dns-listen "127.0.0.1:$(free_port)" -n "$N" -c "$CONNECTIONS" --size "$SIZE" \
        --drain-timeout "$DELIVERY_TIMEOUT" --no-progress \
        --json "$WORK/e2e-$name.json" --html "$WORK/e2e-$name.html" >"$WORK/e2e-$name.txt" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    if ((rc != 0)); then
        log "loadtest e2e ($name) exited $rc:"
        sed 's/^/    /' "$WORK/e2e-$name.txt" >&2
        STATUS=1
    fi
    if [ -n "$REPORT_DIR" ]; then
        cp -f "$WORK/e2e-$name.json" "$WORK/e2e-$name.html" "$WORK/e2e-$name.txt" "$REPORT_DIR/" 2>/dev/null || true
    fi
    return 0
}

# One line of the table from an e2e JSON report.
row() {
    python3 - "$1" "$2" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{name:<18} (no report: {e})")
    sys.exit(0)
l = r["e2e_latency_ms"]
status = "ok" if r["ok"] else "FAILED: " + "; ".join(r["problems"])
print(f"{name:<18} {r['accepted_per_sec']:>10.1f} {r['delivered_per_sec']:>11.1f} "
      f"{l['p50']:>9.1f} {l['p95']:>9.1f} {l['p99']:>9.1f} {r['lost']:>6} {r['duplicates']:>5}   {status}")
PY
}

ratio() { # key: Postroad's value / Postfix's
    python3 - "$WORK/e2e-postroad.json" "$WORK/e2e-postfix.json" "$1" <<'PY'
import json, sys
try:
    a, b = (json.load(open(p))[sys.argv[3]] for p in sys.argv[1:3])
    print(f"{a / b:.2f}x" if b else "-")
except Exception:
    print("-")
PY
}

# --- build ------------------------------------------------------------------------
if [ "$SKIP_BUILD" != 1 ]; then
    log "building loadtest and postroad (release, CARGO_TARGET_DIR=$T)"
    (cd "$ROOT" && cargo build --release -q -p postroad-loadtest -p postroad) || die "build failed"
fi
[ -x "$LOADTEST" ] || die "$LOADTEST missing"
"$LOADTEST" e2e --help >/dev/null 2>&1 || die "$LOADTEST has no e2e mode (rebuild it)"

STATUS=0

# --- Postfix ------------------------------------------------------------------------
if [ "$ONLY" != postroad ]; then
    SINK_PORT=$(free_port)
    PF_PORT=$(free_port)
    maxproc=$((CONNECTIONS + 50 > 200 ? CONNECTIONS + 50 : 200))
    "$INSTANCE" start "$PF_DIR" --mode relay --port "$PF_PORT" \
        --relayhost "127.0.0.1:$SINK_PORT" --concurrency "$DELIVERY_CONNECTIONS" \
        --maxproc "$maxproc" >&2
    log "Postfix $(postconf -dh mail_version) on 127.0.0.1:$PF_PORT -> sink 127.0.0.1:$SINK_PORT: N=$N SIZE=$SIZE CONNECTIONS=$CONNECTIONS"
    run_e2e "$PF_PORT" postfix "$SINK_PORT"
    left=$("$INSTANCE" queue "$PF_DIR" 2>/dev/null || echo '?')
    log "Postfix: $(grep -m1 "^result" "$WORK/e2e-postfix.txt" || true) (queue now: $left)"
    "$INSTANCE" stop "$PF_DIR" >&2
fi

# --- Postroad -----------------------------------------------------------------------
if [ "$ONLY" != postfix ]; then
    [ -x "$POSTROAD" ] || die "$POSTROAD missing"
    SINK_PORT=$(free_port)
    PR_PORT=$(free_port)
    PR_CONF=$WORK/postroad.toml
    per_ip=$((CONNECTIONS > 90 ? CONNECTIONS + 10 : 100))
    printf '[default]\nconnection_limit = %s\n' "$DELIVERY_CONNECTIONS" >"$WORK/shaping.toml"
    cat >"$PR_CONF" <<EOF
# written by loadtest/compare-postfix.sh
[server]
hostname = "postroad-compare.test"

[spool]
# every group commit is fsync'd before the 250 (the default)
fsync = true

[smtp]
max_connections = $((per_ip + 100))
max_connections_per_ip = $per_ip

[relay]
enabled = true
tls = "none"
shaping_file = "$WORK/shaping.toml"

[admin]
listen = "127.0.0.1:$(free_port)"

[http]
listen = "127.0.0.1:$(free_port)"

[[listener]]
name = "relay"
address = "127.0.0.1:$PR_PORT"
role = "relay"
tls = "none"
EOF
    "$POSTROAD" check-config --config "$PR_CONF" >"$WORK/postroad-effective.txt" 2>&1 ||
        die "postroad rejects the config: $(tail -n 3 "$WORK/postroad-effective.txt")"
    RUST_LOG=${RUST_LOG:-warn} "$POSTROAD" serve --config "$PR_CONF" --data-dir "$WORK/postroad-data" \
        --smarthost "127.0.0.1:$SINK_PORT" >"$WORK/postroad.log" 2>&1 &
    POSTROAD_PID=$!
    if ! wait_220 "$PR_PORT" 30; then
        tail -n 20 "$WORK/postroad.log" >&2
        die "postroad did not greet on 127.0.0.1:$PR_PORT"
    fi
    log "Postroad on 127.0.0.1:$PR_PORT -> sink 127.0.0.1:$SINK_PORT (smarthost): N=$N SIZE=$SIZE CONNECTIONS=$CONNECTIONS"
    run_e2e "$PR_PORT" postroad "$SINK_PORT"
    stop_pid "$POSTROAD_PID" 30
    POSTROAD_PID=
fi

# --- report ----------------------------------------------------------------------------
disk=$(df -P "$WORK" | awk 'NR==2 {print $1}')
cat <<EOF

== Postroad vs Postfix, end to end (loadtest e2e -> MTA -> loadtest sink), 127.0.0.1 ==
load:     N=$N messages, body $SIZE bytes, $CONNECTIONS connections in, 1 recipient each
outbound: $DELIVERY_CONNECTIONS connections to the sink (Postfix relayhost, Postroad --smarthost)
machine:  $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), queue/spool disk $disk ($WORK_ROOT)

                   accepted/s delivered/s  e2e p50ms  e2e p95ms  e2e p99ms   lost   dup   status
EOF
[ "$ONLY" = postroad ] || row postfix "$WORK/e2e-postfix.json"
[ "$ONLY" = postfix ] || row postroad "$WORK/e2e-postroad.json"
if [ "$ONLY" = both ]; then
    printf '%-18s %10s %11s\n' "postroad/postfix" "$(ratio accepted_per_sec)" "$(ratio delivered_per_sec)"
fi
cat <<EOF

durability: Postfix $(postconf -dh mail_version 2>/dev/null || echo '?'): fsync of each queue file before 250 (cleanup(8) default)
            Postroad: spool fsync per group commit before 250 (spool.fsync = true)
accepted/s  = messages answered 250 / load time; delivered/s = distinct deliveries /
              (first send until the sink got the last one); e2e = X-Loadtest-Sent-At to
              the end of data at the sink, per delivery
EOF

if [ -n "$JSON_OUT" ]; then
    python3 - "$JSON_OUT" "$N" "$SIZE" "$CONNECTIONS" "$DELIVERY_CONNECTIONS" "$WORK" <<'PY'
import json, os, sys
out, n, size, conns, dconns, work = sys.argv[1:]
res = {"n": int(n), "size": int(size), "connections": int(conns), "delivery_connections": int(dconns)}
for name in ("postfix", "postroad"):
    p = os.path.join(work, f"e2e-{name}.json")
    if os.path.exists(p):
        r = json.load(open(p))
        res[name] = {k: r[k] for k in ("accepted_per_sec", "delivered_per_sec", "messages_accepted",
                                       "delivered", "lost", "duplicates", "drain_secs", "ok", "problems",
                                       "e2e_latency_ms", "ack_latency_ms")}
json.dump(res, open(out, "w"), indent=2)
PY
fi
for name in postfix postroad; do
    f=$WORK/e2e-$name.json
    [ -e "$f" ] || continue
    python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$f" || STATUS=1
done
exit "$STATUS"
