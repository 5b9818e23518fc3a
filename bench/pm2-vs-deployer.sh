#!/usr/bin/env bash
# The same Node app (bench/node/server.js, 2 workers) under PM2 cluster mode
# and under deployer, each reloaded N times under wrk, with the app's stop
# handler either the common server.close() or a drain as the worker
# protocol asks. Every figure is printed beside its baseline from the same
# run (the machines are shared and noisy: compare ratios).
#
#   bench/pm2-vs-deployer.sh [--quick] [--reloads N] [--conns C] [--warmup W] [--gap S]
#
# deployer runs twice: as configured by default, and with health.warmup: W
# (default 3000 GETs per green worker before the cut-over, what
# docs/recipes/express.md suggests for Node). Reloads start
# S seconds apart (default 5; a reload that takes longer is followed at
# once by the next). --quick runs only the draining stop handler, with 3
# reloads (under 2 minutes).
#
# Needs node, npm (PM2 5 is installed from the npm registry into a cache
# directory), wrk, python3 and go. Everything runs on 127.0.0.1 and stops
# by itself; the daemons and workers it starts are stopped on exit.
set -euo pipefail
RELOADS=8 CONNS=64 STEADY=15 GAP=5 WARMUP=3000 MODES="close drain"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) RELOADS=3 STEADY=6 GAP=4 MODES=drain ;;
    --reloads) RELOADS=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --gap) GAP=$2; shift ;;
    *) echo "usage: $0 [--quick] [--reloads N] [--conns C] [--warmup W] [--gap S]" >&2; exit 2 ;;
  esac
  shift
done
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/deployer-bench
daemon_pid=""
export PM2_HOME="$work/pm2-home"
pm2() { "$cache/node_modules/.bin/pm2" "$@"; }
cleanup() {
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  [ -x "$cache/node_modules/.bin/pm2" ] && pm2 kill > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in node npm wrk python3 go; do
  command -v "$tool" > /dev/null || { echo "$0: needs $tool" >&2; exit 1; }
done
if [ ! -x "$cache/node_modules/.bin/pm2" ]; then
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-audit --no-fund --silent pm2@5 > /dev/null
fi
go build -o "$work/deployer" "$root/cmd/deployer"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/" > /dev/null && return 0; sleep 0.1; done; return 1; }

# run_wrk OUT SECONDS: wrk with latency percentiles.
run_wrk() { wrk -t2 -c"$CONNS" -d"$2s" --latency "http://127.0.0.1:$PORT/" > "$1"; }
# measure NAME RELOAD-COMMAND...: steady run, then a run with RELOADS
# reloads GAP seconds apart: wrk runs from GAP seconds before the first
# reload until GAP seconds after the last one started, or until it
# returned if that is later (ended by SIGINT, on which wrk prints its
# figures): every reload is measured, however long it takes.
measure() {
  local name=$1; shift
  run_wrk "$work/$name-steady.txt" "$STEADY"
  wrk -t2 -c"$CONNS" -d"$((RELOADS * 120 + GAP))s" --latency "http://127.0.0.1:$PORT/" > "$work/$name-swaps.txt" &
  local wrk_pid=$!
  sleep "$GAP"
  for _ in $(seq "$RELOADS"); do
    local s e
    s=$(date +%s.%N)
    "$@" > "$work/$name-reload.txt" 2>&1 || { echo "$name: reload failed:"; cat "$work/$name-reload.txt"; }
    e=$(date +%s.%N)
    echo "$e - $s" | bc >> "$work/$name-reload-seconds.txt"
    sleep "$(echo "$GAP - ($e - $s)" | bc | awk '{print ($1 > 0) ? $1 : 0}')"
  done
  kill -INT "$wrk_pid"
  wait "$wrk_pid"
}

for mode in $MODES; do
  # PM2, cluster mode.
  PORT=$(port)
  cat > "$work/ecosystem.config.js" <<JS
module.exports = { apps: [{ name: 'app', script: '$root/bench/node/server.js', exec_mode: 'cluster',
  instances: 2, kill_timeout: 10000, env: { PORT: '$PORT', STOP_MODE: '$mode' } }] };
JS
  pm2 start "$work/ecosystem.config.js" > /dev/null
  wait_http "$PORT"
  measure "pm2-$mode" pm2 reload app
  pm2 kill > /dev/null

  # deployer, without and with the warm-up.
  for warm in 0 "$WARMUP"; do
  sys=deployer; [ "$warm" -gt 0 ] && sys=deployer-warm
  PORT=$(port); GIT_PORT=$(port)
  rm -rf "$work/d" && mkdir -p "$work/d"
  "$work/deployer" token bench bench-token > "$work/d/tokens"
  cat > "$work/d/deployer.yaml" <<YAML
data_dir: data
git: {http_listen: "127.0.0.1:$GIT_PORT", tokens_file: tokens}
apps:
  app:
    listen: ["127.0.0.1:$PORT"]
    start: "exec node server.js"
    workers: 2
    env: {STOP_MODE: $mode}
    drain_timeout: 10s
    health: {http: /, min_uptime: 1s, warmup: $warm}
YAML
  "$work/deployer" serve -c "$work/d/deployer.yaml" > "$work/d/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do [ -S "$work/d/data/deployer.sock" ] && break; sleep 0.1; done
  rm -rf "$work/app" && mkdir "$work/app" && cp "$root/bench/node/server.js" "$work/app/"
  (cd "$work/app" && git init -q -b main && git add -A && git -c user.name=b -c user.email=b@b commit -qm v1 &&
    git push -q "http://bench:bench-token@127.0.0.1:$GIT_PORT/app.git" main 2> /dev/null)
  wait_http "$PORT"
  measure "$sys-$mode" "$work/deployer" reload app -c "$work/d/deployer.yaml"
  kill -TERM "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""
  done
done

# Report.
reqs() { awk '/requests in/ {print $1}' "$1"; }
rps() { awk '/^Requests\/sec/ {print $2}' "$1"; }
pct() { awk -v p="$2" '$1 == p {print $2}' "$1"; }
errors() {
  local s n
  s=$(grep -o 'Socket errors:.*' "$1" | sed 's/Socket errors: //' || true)
  n=$(awk '/Non-2xx/ {print $NF}' "$1")
  [ -n "$n" ] && s="${s:+$s, }non-2xx $n"
  echo "${s:-0}"
}
ms() { # wrk prints 1.23ms, 456.78us or 1.02s; print milliseconds
  echo "$1" | awk '/us$/ {sub("us","",$1); printf "%.2f", $1/1000; next} /ms$/ {sub("ms","",$1); printf "%.2f", $1; next} /s$/ {sub("s","",$1); printf "%.2f", $1*1000}'
}
ratio() { echo "scale=2; $1 / $2" | bc; }
mean() { awk '{s+=$1} END {printf "%.2f", s/NR}' "$1"; }
echo
echo "$(nproc) CPUs, $(uname -r), node $(node --version), PM2 $(pm2 --version 2>/dev/null | tail -1), 2 workers,"
echo "wrk -t2 -c$CONNS, $RELOADS reloads $GAP s apart; steady: ${STEADY}s of the same load without reloads"
echo
echo "| stop handler | under | requests | failed (kind) | p50 steady → swaps (ms) | p99 steady → swaps (ms) | p99 ratio | reload command (s) |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
  for sys in pm2 deployer deployer-warm; do
    f=$work/$sys-$mode
    p50s=$(ms "$(pct "$f-steady.txt" 50%)"); p50w=$(ms "$(pct "$f-swaps.txt" 50%)")
    p99s=$(ms "$(pct "$f-steady.txt" 99%)"); p99w=$(ms "$(pct "$f-swaps.txt" 99%)")
    under=$sys; [ "$sys" = deployer-warm ] && under="deployer, warmup $WARMUP"
    echo "| $mode | $under | $(reqs "$f-swaps.txt") | $(errors "$f-swaps.txt") | $p50s → $p50w | $p99s → $p99w | $(ratio "$p99w" "$p99s") | $(mean "$f-reload-seconds.txt") |"
  done
done
echo
for mode in $MODES; do
  echo "steady throughput, $mode: deployer $(rps "$work/deployer-$mode-steady.txt") req/s, PM2 $(rps "$work/pm2-$mode-steady.txt") req/s: $(ratio "$(rps "$work/deployer-$mode-steady.txt")" "$(rps "$work/pm2-$mode-steady.txt")")× PM2's"
  echo "p99 during swaps, $mode: deployer with warm-up $(ratio "$(ms "$(pct "$work/deployer-warm-$mode-swaps.txt" 99%)")" "$(ms "$(pct "$work/deployer-$mode-swaps.txt" 99%)")")× without"
done
