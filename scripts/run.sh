#!/usr/bin/env bash
# Runs playhead on localhost for a person to try: playhead-node (which starts its own embedded
# nats-server on 127.0.0.1:4222) and playhead-gateway, with state under ./data
# (PLAYHEAD_DATA_DIR overrides). `make run` builds the binaries and installs the broker first.
#
# Ctrl-C or SIGTERM stops the gateway first (no new requests reach the node), then the node, and
# exits 0. If either process dies on its own, the script says which, stops the other, exits 1.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${PLAYHEAD_DATA_DIR:-$root/data}"
[[ "$data_dir" == /* ]] || data_dir="$PWD/$data_dir"

node_bin="$root/target/debug/playhead-node"
gateway_bin="$root/target/debug/playhead-gateway"
cli_bin="target/debug/playhead"
cli_path="$root/$cli_bin"
nats_server_bin="$root/.tools/nats/bin/nats-server"

host=127.0.0.1
nats_port=4222
node_metrics_port=9464
grpc_port=50051
gateway_metrics_port=9465
console_port=9466

startup_timeout_s=30
stop_timeout_s=30

node_pid=""
gateway_pid=""
stopping=0

log() { echo "run.sh: $*" >&2; }

for bin in "$node_bin" "$gateway_bin" "$cli_path" "$nats_server_bin"; do
    if [[ ! -x "$bin" ]]; then
        log "missing $bin: run \`make run\` (it installs the broker and builds the binaries)"
        exit 1
    fi
done

port_open() {
    # bash's /dev/tcp: no dependency on nc; a refused connect on loopback fails at once.
    (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

for port in "$nats_port" "$node_metrics_port" "$grpc_port" "$gateway_metrics_port"; do
    if port_open "$port"; then
        log "$host:$port is already in use (another playhead or nats-server running?); stop it first"
        exit 1
    fi
done

is_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

# SIGTERM, then poll until the process is gone or the deadline passes (then SIGKILL), and reap it.
stop_process() {
    local name=$1 pid=$2 deadline
    [[ -n "$pid" ]] || return 0
    is_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + stop_timeout_s))
    while is_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if is_alive "$pid"; then
        log "$name did not stop within ${stop_timeout_s}s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    stop_process playhead-gateway "$gateway_pid"
    stop_process playhead-node "$node_pid"
}

on_signal() {
    ((stopping)) && return 0
    stopping=1
    echo
    stop_all
    log "stopped"
    exit 0
}

# $4: the exit status when the caller already reaped the process (wait -n), else it is reaped here.
died() {
    local name=$1 pid=$2 logfile=$3 status=${4:-}
    if [[ -z "$status" ]]; then
        status=0
        wait "$pid" 2>/dev/null || status=$?
    fi
    log "$name exited unexpectedly (status $status); last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    stopping=1
    stop_all
    exit 1
}

trap on_signal INT TERM
# Whatever way the script ends (including `set -e`), leave no child behind.
trap 'stop_all' EXIT

# Wait until `check ARG` succeeds, failing fast if the process that should get there dies.
wait_until() {
    local name=$1 pid=$2 logfile=$3 what=$4 check=$5 arg=$6 deadline=$((SECONDS + startup_timeout_s))
    until "$check" "$arg"; do
        is_alive "$pid" || died "$name" "$pid" "$logfile"
        if ((SECONDS >= deadline)); then
            log "$name was not $what within ${startup_timeout_s}s; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
}

# 0 when GET /readyz on $host:$1 answers 200 (plain bash: no HTTP client needed).
is_ready() {
    (
        exec 3<>"/dev/tcp/$host/$1" || exit 1
        printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
        read -r -t 5 _ status _ <&3 || exit 1
        [[ $status == 200 ]]
    ) 2>/dev/null
}

wait_for_port() { wait_until "$1" "$2" "$3" "listening on $host:$4" port_open "$4"; }
wait_for_ready() { wait_until "$1" "$2" "$3" "ready (http://$host:$4/readyz says why)" is_ready "$4"; }

mkdir -p "$data_dir/logs"
node_log="$data_dir/logs/playhead-node.log"
gateway_log="$data_dir/logs/playhead-gateway.log"

# setsid: a Ctrl-C in the terminal reaches only this script, which then stops the children in
# order (gateway before node) instead of the terminal signalling all of them at once.
log "starting playhead-node (data in $data_dir, log $node_log)"
setsid "$node_bin" --data-dir "$data_dir" --nats-server-bin "$nats_server_bin" \
    >>"$node_log" 2>&1 </dev/null &
node_pid=$!
wait_for_port playhead-node "$node_pid" "$node_log" "$nats_port"
wait_for_ready playhead-node "$node_pid" "$node_log" "$node_metrics_port"

# The development token keys: made once, kept with the data (readable by this user only).
auth_keys="$data_dir/auth-keys"
if [[ ! -f "$auth_keys" ]]; then
    log "making the development token keys ($auth_keys)"
    "$cli_path" token keygen --out "$auth_keys" --kid dev
fi
admin_token="$("$cli_path" token mint --keys "$auth_keys" --user dev --role admin --valid-for 7d)"

# The embedded broker's users: the node made a seed per role at its first start.
nats_credentials="$data_dir/nats-credentials"

log "starting playhead-gateway (log $gateway_log)"
setsid "$gateway_bin" --nats-url "nats://$host:$nats_port" --auth-keys "$auth_keys" \
    --nats-nkey-file "$nats_credentials/gateway.nk" \
    >>"$gateway_log" 2>&1 </dev/null &
gateway_pid=$!
wait_for_port playhead-gateway "$gateway_pid" "$gateway_log" "$grpc_port"
wait_for_ready playhead-gateway "$gateway_pid" "$gateway_log" "$gateway_metrics_port"

cat <<EOF

playhead is running (Ctrl-C stops it)

  NATS            nats://$host:$nats_port   (no anonymous clients: one nkey seed per role in
                  $nats_credentials)
  gRPC            $host:$grpc_port
  node metrics    http://$host:$node_metrics_port/metrics   (and /readyz, /livez)
  gateway metrics http://$host:$gateway_metrics_port/metrics   (and /readyz, /livez)
  console         http://$host:$console_port/   (wall, history, users, dead letters; sign in with the token below)
  data            $data_dir
  logs            $node_log
                  $gateway_log

every gRPC call needs a token; an admin one, valid for 7 days:

  export PLAYHEAD_TOKEN=$admin_token
  export PLAYHEAD_NATS_CREDENTIALS=$nats_credentials   # for \`publish\` (signs in as publisher or backoffice)

  (others: $cli_bin token mint --keys $auth_keys --user ann --role listener)

try, from another terminal in $root (after that export):

  $cli_bin publish song --station radio-1 --artist "Nina Simone" --title Sinnerman
  $cli_bin now-playing radio-1
  $cli_bin plays radio-1
  $cli_bin watch radio-1

EOF

# Block until a child exits or a signal arrives; a signal runs on_signal, which exits 0.
while true; do
    exited_pid=""
    status=0
    wait -n -p exited_pid "$node_pid" "$gateway_pid" || status=$?
    ((stopping)) && break
    case "$exited_pid" in
        "$gateway_pid") died playhead-gateway "$gateway_pid" "$gateway_log" "$status" ;;
        "$node_pid") died playhead-node "$node_pid" "$node_log" "$status" ;;
    esac
done
