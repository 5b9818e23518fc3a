#!/usr/bin/env bash
# Push-to-live time and failed requests during deploys, against baselines
# measured in the same run (the machines are shared and noisy: compare
# ratios, not absolute seconds).
#
#   bench/deploy-under-load.sh [PUSHES] [CONNECTIONS]
#
# Needs wrk (apt-get install wrk). Everything runs on 127.0.0.1 and stops by
# itself; the daemon and its workers are stopped on exit.
set -euo pipefail
PUSHES=${1:-6}
CONNS=${2:-64}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GIT_PORT=$(port); APP_PORT=$(port)
go build -o "$work/deployer" "$root/cmd/deployer"
"$work/deployer" token bench bench-token > "$work/tokens"
cat > "$work/deployer.yaml" <<YAML
data_dir: data
git: {http_listen: "127.0.0.1:$GIT_PORT", tokens_file: tokens}
apps:
  hello:
    listen: ["127.0.0.1:$APP_PORT"]
    build: "go build -o bin/hello ."
    start: ./bin/hello
    workers: 2
    health: {http: /healthz, min_uptime: 1s}
YAML
"$work/deployer" serve -c "$work/deployer.yaml" > "$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/data/deployer.sock" ] && break; sleep 0.1; done

cp -r "$root/examples/hello" "$work/app"
cd "$work/app"
git init -q -b main && git add -A && git -c user.name=b -c user.email=b@b commit -qm v1
URL="http://bench:bench-token@127.0.0.1:$GIT_PORT/hello.git"
git push -q "$URL" main 2>/dev/null

# Baseline for push-to-live: a plain push to a bare repo plus the same build.
git init -q --bare "$work/plain.git"
t0=$(date +%s.%N)
git push -q "file://$work/plain.git" main 2>/dev/null
(cd "$work/app" && go build -o "$work/plain-hello" .)
t1=$(date +%s.%N)
baseline=$(echo "$t1 - $t0" | bc)

# Baseline for load: the same wrk run with no deploy.
DUR=$((PUSHES * 4 + 8))
wrk -t2 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$APP_PORT/" > "$work/wrk-idle.txt"

wrk -t2 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$APP_PORT/" > "$work/wrk-deploy.txt" &
wrk_pid=$!
sleep 1
total=0
for i in $(seq 2 $((PUSHES + 1))); do
  echo "v$i" > message.txt
  git add -A && git -c user.name=b -c user.email=b@b commit -qm "v$i"
  s=$(date +%s.%N)
  git push "$URL" main > "$work/push.txt" 2>&1
  e=$(date +%s.%N)
  d=$(echo "$e - $s" | bc)
  total=$(echo "$total + $d" | bc)
  grep -o 'Deployed v[0-9]* in .*' "$work/push.txt" | sed 's/ *$//'
done
# Rollbacks under the same load: command to live, no rebuild.
rtotal=0
for i in 1 2 3; do
  s=$(date +%s.%N)
  if [ $((i % 2)) -eq 1 ]; then "$work/deployer" rollback hello -c "$work/deployer.yaml" > /dev/null
  else "$work/deployer" rollback hello --to "v$((PUSHES + 1))" -c "$work/deployer.yaml" > /dev/null; fi
  e=$(date +%s.%N)
  rtotal=$(echo "$rtotal + $e - $s" | bc)
done
wait $wrk_pid

reqs() { awk '/requests in/ {print $1}' "$1"; }
errs() { grep -E 'Socket errors|Non-2xx' "$1" || echo "no errors"; }
avg=$(echo "scale=3; $total / $PUSHES" | bc)
echo
echo "push to live, mean of $PUSHES: ${avg}s; baseline (plain push + build): ${baseline}s; ratio $(echo "scale=2; $avg / $baseline" | bc)"
ravg=$(echo "scale=3; $rtotal / 3" | bc)
echo "rollback to live, mean of 3: ${ravg}s; against push to live: ratio $(echo "scale=2; $ravg / $avg" | bc)"
echo "requests under load with $PUSHES deploys and 3 rollbacks: $(reqs "$work/wrk-deploy.txt"); without: $(reqs "$work/wrk-idle.txt"); ratio $(echo "scale=2; $(reqs "$work/wrk-deploy.txt") / $(reqs "$work/wrk-idle.txt")" | bc)"
echo "failed requests during deploys and rollbacks: $(errs "$work/wrk-deploy.txt")"
