#!/usr/bin/env bash
# Receive time and peak memory of a large push to the daemon, against a
# plain `git push` of the same repository to a bare repo over file:// in the
# same run; and the per-push overhead the daemon adds on a small repository.
#
#   bench/large-push.sh [FILES] [HISTORY_MB]
#
# The synthetic repository has FILES files and about HISTORY_MB of
# incompressible history. Everything runs on 127.0.0.1 and stops on exit.
set -euo pipefail
FILES=${1:-5000}
HISTORY_MB=${2:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill -TERM "$(cat "$work/data/deployer.pid")" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GIT_PORT=$(port); APP_PORT=$(port)
go build -o "$work/deployer" "$root/cmd/deployer"
"$work/deployer" token bench bench-token > "$work/tokens"
# The app: a no-build static server, so the numbers are about receiving.
cat > "$work/deployer.yaml" <<YAML
data_dir: data
git: {http_listen: "127.0.0.1:$GIT_PORT", tokens_file: tokens, max_pack_size: 4GiB}
apps:
  big:
    listen: ["127.0.0.1:$APP_PORT"]
    start: "exec python3 -c 'import socket,http.server as h; s=h.HTTPServer((\"127.0.0.1\",0),h.SimpleHTTPRequestHandler,False); s.socket=socket.socket(fileno=3); s.serve_forever()'"
    workers: 1
    health: {min_uptime: 200ms}
  small:
    listen: ["127.0.0.1:$(port)"]
    start: "exec sleep 1000"
    workers: 1
    health: {preflight: false, min_uptime: 0s}
YAML
start_daemon() { # under /usr/bin/time: its peak RSS and its children's (git receive-pack) when it stops
  /usr/bin/time -f "%M" -o "$work/daemon-rss.txt" "$work/deployer" serve -c "$work/deployer.yaml" > "$work/daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do [ -S "$work/data/deployer.sock" ] && break; sleep 0.1; done
}
stop_daemon() { kill -TERM "$(cat "$work/data/deployer.pid")"; wait "$daemon_pid" || true; daemon_pid=""; }
start_daemon

echo "building a repository: $FILES files, ~${HISTORY_MB} MB of history"
mkdir "$work/repo" && cd "$work/repo" && git init -q -b main
python3 - "$FILES" "$HISTORY_MB" <<'PY'
import os, sys
files, mb = int(sys.argv[1]), int(sys.argv[2])
for i in range(files):
    d = "src/%03d" % (i % 100)
    os.makedirs(d, exist_ok=True)
    with open("%s/f%05d.txt" % (d, i), "w") as f:
        f.write(("line %d of file %d\n" % (i, i)) * 20)
os.makedirs("blobs", exist_ok=True)
PY
git add -A && git -c user.name=b -c user.email=b@b commit -qm "tree"
per=$((HISTORY_MB / 20 + 1))
for i in $(seq 20); do
  head -c "${per}M" /dev/urandom > "blobs/data.bin"
  git add -A && git -c user.name=b -c user.email=b@b commit -qm "history $i"
done
du -sh .git | awk '{print "repository: " $1}'

measure() { # label, command...: wall seconds, and peak RSS (KB) of the largest process of it or its children
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time.txt" "$@" > "$work/out.txt" 2>&1
  read -r secs kb < "$work/time.txt"
  echo "$label: ${secs}s, peak RSS ${kb} KB"
}

git init -q --bare "$work/plain.git"
measure "plain git push over file:// (client and receive-pack)" git push -q "file://$work/plain.git" main
plain=$secs; plain_kb=$kb
measure "push to the daemon over HTTP, client side" git push "http://bench:bench-token@127.0.0.1:$GIT_PORT/big.git" main
ours=$secs
grep -o 'Deployed v1 in .*' "$work/out.txt" | sed 's/ *$//'
stop_daemon
server_kb=$(cat "$work/daemon-rss.txt" | tail -1)
echo "server side peak RSS (daemon or its git receive-pack, the larger): ${server_kb} KB; plain push's: ${plain_kb} KB; ratio $(echo "scale=2; $server_kb / $plain_kb" | bc)"
echo "time ratio daemon push (to live) / plain push: $(echo "scale=2; $ours / $plain" | bc)"
start_daemon

# Per-push overhead on a small repository: N pushes of one small change.
mkdir "$work/small" && cd "$work/small" && git init -q -b main && echo 1 > a && git add a && git -c user.name=b -c user.email=b@b commit -qm 1
git init -q --bare "$work/small-plain.git"
N=10; tp=0; to=0
for i in $(seq $N); do
  echo "change $i" > a && git -c user.name=b -c user.email=b@b commit -qam "$i"
  s=$(date +%s.%N); git push -q "file://$work/small-plain.git" main; e=$(date +%s.%N); tp=$(echo "$tp + $e - $s" | bc)
  s=$(date +%s.%N); git push -q "http://bench:bench-token@127.0.0.1:$GIT_PORT/small.git" main 2>/dev/null; e=$(date +%s.%N); to=$(echo "$to + $e - $s" | bc)
done
echo "small repo, mean of $N: plain push $(echo "scale=3; $tp / $N" | bc)s, push to live $(echo "scale=3; $to / $N" | bc)s, overhead $(echo "scale=3; ($to - $tp) / $N" | bc)s per push"
