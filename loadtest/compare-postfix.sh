#!/usr/bin/env bash
# Postroad vs Postfix, end to end, in one run (issues 3 and 4).
#
# The SAME load (`loadtest smtp`, N messages of SIZE bytes over CONNECTIONS connections,
# one recipient each) goes first through a private Postfix relay instance
# (scripts/postfix/instance, relayhost = the sink), then through `postroad serve
# --smarthost` (same sink, fresh sink per run). For each MTA it reports
#   accepted/s   loadtest's messages_per_sec (250s received / load duration)
#   delivered/s  N / (time from the start of the load until the sink has counted all N)
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
#   N=20000 SIZE=4096 CONNECTIONS=32 loadtest/compare-postfix.sh
#
# Environment:
#   N=2000                  messages
#   SIZE=4096               body bytes per message
#   CONNECTIONS=16          concurrent inbound SMTP connections (loadtest -c)
#   DELIVERY_CONNECTIONS=20 outbound connections to the sink, both MTAs (Postfix
#                           *_destination_concurrency_limit, Postroad connections_per_site)
#   ONLY=both               both | postfix | postroad
#   DELIVERY_TIMEOUT=600    max seconds to wait for the sink to have all N
#   STALL_SECS=30           give up earlier when the sink count has not moved for this
#                           long after the load finished
#   WORK_ROOT=/var/tmp      where the temporary directory goes (Postfix queue, Postroad
#                           spool: same disk for both)
#   CARGO_TARGET_DIR=/var/tmp/postroad-target
#   SKIP_BUILD=0            1: use the binaries already in $CARGO_TARGET_DIR/release
#   LOADTEST, POSTROAD      binaries to use (default: $CARGO_TARGET_DIR/release/...)
#   JSON_OUT=               also write the results as JSON to this file
#   KEEP=0                  1: keep the temporary directory (logs) after the run
#   SINK_CMD                see below
#
# Exit: 0 when every run that could run delivered all N; 1 otherwise (including when
# Postroad could not be built or does not deliver yet: the Postfix half still runs and
# is printed).
set -euo pipefail

N=${N:-2000}
SIZE=${SIZE:-4096}
CONNECTIONS=${CONNECTIONS:-16}
DELIVERY_CONNECTIONS=${DELIVERY_CONNECTIONS:-20}
ONLY=${ONLY:-both}
DELIVERY_TIMEOUT=${DELIVERY_TIMEOUT:-600}
STALL_SECS=${STALL_SECS:-30}
WORK_ROOT=${WORK_ROOT:-/var/tmp}
SKIP_BUILD=${SKIP_BUILD:-0}
JSON_OUT=${JSON_OUT:-}
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
for v in N SIZE CONNECTIONS DELIVERY_CONNECTIONS DELIVERY_TIMEOUT STALL_SECS; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then die "$v must be a positive integer (got '${!v}')"; fi
done
command -v python3 >/dev/null || die "python3 is needed (free ports, JSON); scripts/install-test-deps installs it"
[ -x /usr/sbin/smtp-sink ] || die "/usr/sbin/smtp-sink missing: apt-get install postfix ('No configuration')"

WORK=$(mktemp -d "$WORK_ROOT/postroad-compare.XXXXXX")
chmod 0755 "$WORK" # the postfix user must traverse it to reach the instance's queue
SINK_PID=
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
    [ -n "$SINK_PID" ] && stop_pid "$SINK_PID" 5
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
    local port=$1 secs=$2 deadline=$((SECONDS + $2)) line
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

now() { date +%s.%N; }

# ---------------------------------------------------------------------------------
# The sink. SINK_CMD is started in the background with SINK_PORT set and its stdout
# in $SINK_OUT; sink_count prints how many messages it has received so far.
# >>> To switch to `loadtest sink` (issue 4), replace SINK_CMD and sink_count here. <<<
# smtp-sink -c prints running counters ("\rsess=6 quit=6 mesg=500") to stdout each time
# a session ends or "." is received; -u is required when it runs as root. 5000 is its
# listen backlog. It advertises PIPELINING and 8BITMIME, no STARTTLS, answers 250 at once.
# shellcheck disable=SC2016  # $SINK_PORT is expanded when the sink starts
SINK_CMD=${SINK_CMD:-'/usr/sbin/smtp-sink -u nobody -c 127.0.0.1:$SINK_PORT 5000'}
sink_count() {
    local n
    n=$(tail -c 256 "$SINK_OUT" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1)
    n=${n#mesg=}
    echo "${n:-0}"
}
# ---------------------------------------------------------------------------------

start_sink() {
    local name=$1
    [ -n "$SINK_PID" ] && stop_pid "$SINK_PID" 5
    SINK_PORT=$(free_port)
    SINK_OUT=$WORK/sink-$name.out
    export SINK_PORT
    # shellcheck disable=SC2086  # SINK_CMD is a command line
    # exec: $! is the sink itself, not a subshell around it.
    eval "exec $SINK_CMD" >"$SINK_OUT" 2>"$WORK/sink-$name.err" &
    SINK_PID=$!
    wait_220 "$SINK_PORT" 10 || die "sink did not start on 127.0.0.1:$SINK_PORT: $(cat "$WORK/sink-$name.err")"
    # The probe connection counts as a session, not a message.
    log "sink: $SINK_CMD (port $SINK_PORT, pid $SINK_PID)"
}

# Runs the load against 127.0.0.1:$1, writes $WORK/load-$2.json; sets LOAD_START/END.
run_load() {
    local port=$1 name=$2 rc=0
    LOAD_START=$(now)
    # In the background + wait, so that INT/TERM run the cleanup at once.
    "$LOADTEST" smtp --addr "127.0.0.1:$port" -n "$N" -c "$CONNECTIONS" --size "$SIZE" \
        --no-progress --json "$WORK/load-$name.json" >"$WORK/load-$name.txt" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=
    LOAD_END=$(now)
    ((rc == 0)) || log "loadtest ($name) exited $rc: $(tail -n 5 "$WORK/load-$name.txt")"
    return 0
}

# Waits until the sink has as many messages as were accepted (N when all went well),
# or DELIVERY_TIMEOUT, or no progress for STALL_SECS. Sets DELIVERED and DELIVER_END.
wait_delivered() {
    local deadline last=-1 last_change=$SECONDS c TARGET
    TARGET=$(json_field "$WORK/load-$1.json" accepted)
    ((TARGET > 0)) || TARGET=$N
    deadline=$((SECONDS + DELIVERY_TIMEOUT))
    while :; do
        c=$(sink_count)
        if ((c >= TARGET)); then
            DELIVER_END=$(now)
            DELIVERED=$c
            return 0
        fi
        if ((c != last)); then
            last=$c
            last_change=$SECONDS
        fi
        if ((SECONDS >= deadline)) || ((SECONDS - last_change >= STALL_SECS)); then
            DELIVER_END=
            DELIVERED=$c
            return 1
        fi
        sleep 0.05
    done
}

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2" 2>/dev/null || echo 0; }
calc() { python3 -c "print(round($1, 1))"; }

declare -A R # results: R[name.key]

record() {
    local name=$1 ok=$2
    local j=$WORK/load-$name.json
    R[$name.accepted]=$(json_field "$j" accepted)
    R[$name.accepted_per_sec]=$(calc "$(json_field "$j" messages_per_sec)")
    R[$name.load_secs]=$(calc "$LOAD_END - $LOAD_START")
    R[$name.delivered]=$DELIVERED
    if [ "$ok" = 1 ]; then
        R[$name.delivered_secs]=$(calc "$DELIVER_END - $LOAD_START")
        R[$name.delivered_per_sec]=$(calc "$N / ($DELIVER_END - $LOAD_START)")
    else
        R[$name.delivered_secs]=
        R[$name.delivered_per_sec]=
    fi
    R[$name.status]=$3
    # Nothing lost or duplicated: the sink must end with exactly as many as were accepted.
    if [ "$ok" = 1 ]; then
        sleep 1
        local total accepted=${R[$name.accepted]}
        total=$(sink_count)
        R[$name.delivered]=$total
        if ((accepted != N)); then
            R[$name.status]="only $accepted of $N accepted (see $name's loadtest output)"
            STATUS=1
        elif ((total != N)); then
            R[$name.status]="sink counted $total for $N accepted (duplicates?)"
            STATUS=1
        fi
    fi
}

# --- build ------------------------------------------------------------------------
POSTROAD_BUILD_OK=1
if [ "$SKIP_BUILD" != 1 ]; then
    log "building loadtest (release, CARGO_TARGET_DIR=$T)"
    (cd "$ROOT" && cargo build --release -q -p postroad-loadtest) || die "loadtest does not build"
    if [ "$ONLY" != postfix ]; then
        log "building postroad (release)"
        if ! (cd "$ROOT" && cargo build --release -q -p postroad) >"$WORK/build-postroad.log" 2>&1; then
            POSTROAD_BUILD_OK=0
            log "postroad does not build; only the Postfix half runs. First errors:"
            grep -m 5 -A 3 '^error' "$WORK/build-postroad.log" >&2 || tail -n 20 "$WORK/build-postroad.log" >&2
        fi
    fi
fi
[ -x "$LOADTEST" ] || die "$LOADTEST missing"

STATUS=0

# --- Postfix ------------------------------------------------------------------------
if [ "$ONLY" != postroad ]; then
    start_sink postfix
    PF_PORT=$(free_port)
    maxproc=$((CONNECTIONS + 50 > 200 ? CONNECTIONS + 50 : 200))
    "$INSTANCE" start "$PF_DIR" --mode relay --port "$PF_PORT" \
        --relayhost "127.0.0.1:$SINK_PORT" --concurrency "$DELIVERY_CONNECTIONS" \
        --maxproc "$maxproc" >&2
    log "Postfix $(postconf -dh mail_version): loading 127.0.0.1:$PF_PORT with N=$N SIZE=$SIZE CONNECTIONS=$CONNECTIONS"
    run_load "$PF_PORT" postfix
    if wait_delivered postfix; then
        record postfix 1 ok
    else
        record postfix 0 "sink got $DELIVERED of $N; $("$INSTANCE" queue "$PF_DIR") still queued"
        STATUS=1
    fi
    log "Postfix: ${R[postfix.status]}"
    "$INSTANCE" stop "$PF_DIR" >&2
fi

# --- Postroad -----------------------------------------------------------------------
if [ "$ONLY" != postfix ]; then
    if [ "$POSTROAD_BUILD_OK" != 1 ]; then
        R[postroad.status]="not run: postroad does not build (see above)"
        STATUS=1
    elif ! "$POSTROAD" serve --help 2>/dev/null | grep -q -- '--smarthost'; then
        R[postroad.status]="not run: this postroad has no 'serve --smarthost' (relay not built in yet)"
        STATUS=1
    else
        start_sink postroad
        PR_PORT=$(free_port)
        PR_CONF=$WORK/postroad.toml
        per_ip=$((CONNECTIONS > 100 ? CONNECTIONS + 10 : 100))
        cat >"$PR_CONF" <<EOF
# written by loadtest/compare-postfix.sh
[server]
hostname = "postroad-compare.test"

[spool]
fsync = true

[smtp]
max_connections = $((per_ip + 100))
max_connections_per_ip = $per_ip

[relay]
enabled = true
tls = "none"
connections_per_site = $DELIVERY_CONNECTIONS

[[listener]]
name = "relay"
address = "127.0.0.1:$PR_PORT"
role = "relay"
tls = "none"
EOF
        if ! "$POSTROAD" check-config --config "$PR_CONF" >"$WORK/postroad-effective.txt" 2>&1; then
            R[postroad.status]="not run: postroad rejects the config: $(tail -n 3 "$WORK/postroad-effective.txt" | tr '\n' ' ')"
            STATUS=1
        else
            RUST_LOG=${RUST_LOG:-warn} "$POSTROAD" serve --config "$PR_CONF" --data-dir "$WORK/postroad-data" \
                --smarthost "127.0.0.1:$SINK_PORT" >"$WORK/postroad.log" 2>&1 &
            POSTROAD_PID=$!
            if ! wait_220 "$PR_PORT" 30; then
                tail -n 20 "$WORK/postroad.log" >&2
                R[postroad.status]="not run: postroad did not greet on 127.0.0.1:$PR_PORT"
                STATUS=1
            else
                log "Postroad: loading 127.0.0.1:$PR_PORT with N=$N SIZE=$SIZE CONNECTIONS=$CONNECTIONS"
                run_load "$PR_PORT" postroad
                if wait_delivered postroad; then
                    record postroad 1 ok
                else
                    if ((DELIVERED == 0)); then
                        record postroad 0 "DELIVERS NOTHING: sink got 0 of $N (serve --smarthost does not deliver yet?)"
                    else
                        record postroad 0 "sink got $DELIVERED of $N"
                    fi
                    STATUS=1
                fi
            fi
            stop_pid "$POSTROAD_PID" 30
            POSTROAD_PID=
            log "Postroad: ${R[postroad.status]}"
        fi
    fi
fi

# --- report ----------------------------------------------------------------------------
ratio() { # $1/$2 or "-"
    if [ -n "${1:-}" ] && [ -n "${2:-}" ] && python3 -c "import sys; sys.exit(0 if float('$2') > 0 else 1)" 2>/dev/null; then
        python3 -c "print(f'{$1/$2:.2f}x')"
    else
        echo -
    fi
}
disk=$(df -P "$WORK" | awk 'NR==2 {print $1}')
cat <<EOF

== Postroad vs Postfix, end to end (loadtest -> MTA -> sink), 127.0.0.1 ==
load:    N=$N messages, body $SIZE bytes, $CONNECTIONS connections, 1 recipient each
outbound: $DELIVERY_CONNECTIONS connections to the sink; sink: ${SINK_CMD//\$SINK_PORT/PORT}
machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), spool/queue disk $disk ($WORK_ROOT)

                      accepted/s   delivered/s   load s   all delivered s   status
EOF
for name in postfix postroad; do
    [ -n "${R[$name.status]:-}" ] || continue
    printf '%-20s %11s %13s %8s %17s   %s\n' "$name" "${R[$name.accepted_per_sec]:--}" \
        "${R[$name.delivered_per_sec]:--}" "${R[$name.load_secs]:--}" "${R[$name.delivered_secs]:--}" \
        "${R[$name.status]}"
done
printf '%-20s %11s %13s\n' "postroad/postfix" \
    "$(ratio "${R[postroad.accepted_per_sec]:-}" "${R[postfix.accepted_per_sec]:-}")" \
    "$(ratio "${R[postroad.delivered_per_sec]:-}" "${R[postfix.delivered_per_sec]:-}")"
cat <<EOF

durability: Postfix $(postconf -dh mail_version): fsync of each queue file before 250 (cleanup(8) default)
            Postroad: spool fsync per group commit before 250 (spool.fsync = true)
delivered/s = N / (time from the start of the load until the sink counted all N)
EOF

if [ -n "$JSON_OUT" ]; then
    {
        printf '{"n":%s,"size":%s,"connections":%s,"delivery_connections":%s' "$N" "$SIZE" "$CONNECTIONS" "$DELIVERY_CONNECTIONS"
        for name in postfix postroad; do
            [ -n "${R[$name.status]:-}" ] || continue
            printf ',"%s":{"accepted_per_sec":%s,"delivered_per_sec":%s,"load_secs":%s,"delivered_secs":%s,"delivered":%s,"status":%s}' \
                "$name" "${R[$name.accepted_per_sec]:-null}" "${R[$name.delivered_per_sec]:-null}" \
                "${R[$name.load_secs]:-null}" "${R[$name.delivered_secs]:-null}" "${R[$name.delivered]:-0}" \
                "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "${R[$name.status]}")"
        done
        printf '}\n'
    } >"$JSON_OUT"
fi
exit "$STATUS"
