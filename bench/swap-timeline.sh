#!/usr/bin/env bash
# Where a swap's latency goes: bench/node/server.js (2 workers, the
# draining stop handler) under deployer, loaded by bench/latency-timeline
# (64 keep-alive connections), reloaded RELOADS times; prints the latency
# of the requests by when they were sent, per 100 ms, with each reload's
# start and end marked, and a table of the slow requests by the step of
# the reload they were sent in (each step of the reload's output starts a
# phase; "between" is from 2 s after a reload to the next).
#
#   bench/swap-timeline.sh [WARMUP]     # health.warmup (default 0)
#   RATE=12000 bench/swap-timeline.sh   # an open load of 12000 requests/s
#                                       # (default: back to back, closed)
#
# Needs node, python3 and go; everything runs on 127.0.0.1.
set -euo pipefail
WARMUP=${1:-0} RELOADS=${RELOADS:-2} RATE=${RATE:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
go build -o "$work/deployer" "$root/cmd/deployer"
go build -o "$work/timeline" "$root/bench/latency-timeline"
PORT=$(port); GIT_PORT=$(port)
mkdir -p "$work/d"
"$work/deployer" token bench bench-token > "$work/d/tokens"
cat > "$work/d/deployer.yaml" <<YAML
data_dir: data
git: {http_listen: "127.0.0.1:$GIT_PORT", tokens_file: tokens}
apps:
  app:
    listen: ["127.0.0.1:$PORT"]
    start: "exec node server.js"
    workers: 2
    env: {STOP_MODE: drain}
    drain_timeout: 10s
    health: {http: /, min_uptime: 1s, warmup: $WARMUP}
YAML
"$work/deployer" serve -c "$work/d/deployer.yaml" > "$work/d/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/d/data/deployer.sock" ] && break; sleep 0.1; done
mkdir "$work/app" && cp "$root/bench/node/server.js" "$work/app/"
(cd "$work/app" && git init -q -b main && git add -A && git -c user.name=b -c user.email=b@b commit -qm v1 &&
  git push -q "http://bench:bench-token@127.0.0.1:$GIT_PORT/app.git" main 2> /dev/null)
mkfifo "$work/marks"
"$work/timeline" -rate "$RATE" -addr "127.0.0.1:$PORT" -c 64 -d "$((4 + RELOADS * 60))s" < "$work/marks" > "$work/out.txt" &
timeline_pid=$!
exec 3> "$work/marks"
sleep 4
# phase STEP-LINE: sets p to the phase a step of the reload's output
# starts, if any (no subshell: a fork at the cut-over would compete with
# what is measured).
phase() {
  case "$1" in
    *"-----> Reloading"*) p=preflight ;;
    *"-----> Starting"*) p="green starting" ;;
    *"-----> Green is up"*) p=warm-up ;;
    *"-----> Warm-up:"*) p=cut-over ;;
    *"-----> Cut-over:"*) p=after ;;
    *) p="" ;;
  esac
}
for i in $(seq "$RELOADS"); do
  echo "reload $i starts" >&3
  : > "$work/reload.txt"
  "$work/deployer" reload app -c "$work/d/deployer.yaml" 2>&1 | while IFS= read -r line; do
    echo "$line" >> "$work/reload.txt"
    phase "$line"
    [ -z "$p" ] || echo "phase $p" >&3
  done
  echo "reload $i returned" >&3
  sleep 2
  echo "phase between" >&3
  sleep 6
done
echo stop >&3
exec 3>&-
wait "$timeline_pid"
cat "$work/out.txt"
echo
cat "$work/reload.txt"
