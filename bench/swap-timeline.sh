#!/usr/bin/env bash
# Where a swap's latency goes: bench/node/server.js (2 workers, the
# draining stop handler) under deployer, loaded by bench/latency-timeline
# (64 keep-alive connections), reloaded RELOADS times; prints the latency
# of the requests by when they were sent, per 100 ms, with each reload's
# start and end marked.
#
#   bench/swap-timeline.sh [WARMUP]     # health.warmup (default 0)
#
# Needs node, python3 and go; everything runs on 127.0.0.1.
set -euo pipefail
WARMUP=${1:-0} RELOADS=${RELOADS:-2}
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
"$work/timeline" -addr "127.0.0.1:$PORT" -c 64 -d "$((4 + RELOADS * 6))s" < "$work/marks" > "$work/out.txt" &
timeline_pid=$!
exec 3> "$work/marks"
sleep 4
for i in $(seq "$RELOADS"); do
  echo "reload $i starts" >&3
  "$work/deployer" reload app -c "$work/d/deployer.yaml" > "$work/reload.txt" 2>&1
  echo "reload $i returned" >&3
  sleep 4
done
exec 3>&-
wait "$timeline_pid"
cat "$work/out.txt"
echo
cat "$work/reload.txt"
