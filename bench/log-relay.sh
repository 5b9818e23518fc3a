#!/usr/bin/env bash
# What relaying a worker's output costs the daemon: one worker prints an
# access-log line RATE times a second, each flushed on its own (as gunicorn
# and most servers do); the daemon's CPU time over SECS seconds is compared
# with the worker's own in the same run (the baseline: the cost of making
# the lines). Give several daemon binaries to compare them side by side.
#
#   bench/log-relay.sh [BIN...]     (default: a build of this tree)
#   RATE=3200 SECS=10 bench/log-relay.sh /tmp/old /tmp/new
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rate=${RATE:-3200}; secs=${SECS:-10}
work=$(mktemp -d); daemon=
trap '[ -n "$daemon" ] && kill $daemon 2>/dev/null; sleep 0.5; rm -rf "$work"' EXIT
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  (cd "$here" && go build -o "$work/deployer" ./cmd/deployer); bins=("$work/deployer")
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/repo"
cat > "$work/repo/app.py" <<'PY'
import os, socket, sys, time, threading, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket = socket.socket(fileno=3)
threading.Thread(target=srv.serve_forever, daemon=True).start()
rate = int(os.environ["RATE"])
line = '127.0.0.1 - - [28/Nov/2026:18:00:00 +0000] "GET /api/items?page=2 HTTP/1.1" 200 5123 "-" "Mozilla/5.0 (X11; Linux x86_64)"\n'
out = sys.stdout
while True:
    t = time.time()
    for _ in range(rate // 100):
        out.write(line); out.flush()
    time.sleep(max(0, 0.01 - (time.time() - t)))
PY
printf 'web: exec python3 app.py\n' > "$work/repo/Procfile"
git -C "$work/repo" init -q -b main && git -C "$work/repo" add -A &&
  git -C "$work/repo" -c user.name=b -c user.email=b@b commit -qm bench
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
printf "%-40s %12s %12s %14s %8s\n" binary lines/s daemon_cpu worker_cpu ratio
for bin in "${bins[@]}"; do
  d="$work/d-$RANDOM"; mkdir -p "$d"
  cp "$here/examples/tokens" "$d/tokens"
  git_port=$(free_port); app_port=$(free_port)
  cat > "$d/deployer.yaml" <<YAML
data_dir: data
git: {http_listen: "127.0.0.1:$git_port", tokens_file: tokens}
apps:
  logs:
    listen: ["127.0.0.1:$app_port"]
    workers: 1
    env: {RATE: "$rate"}
    health: {http: /, min_uptime: 300ms}
YAML
  "$bin" serve -c "$d/deployer.yaml" >"$d/daemon.log" 2>&1 & daemon=$!
  for _ in $(seq 100); do [ -S "$d/data/deployer.sock" ] && break; sleep 0.1; done
  git -C "$work/repo" push -q "http://demo:demo-token@127.0.0.1:$git_port/logs.git" main 2>/dev/null
  worker=$(pgrep -n -f "python3 app.py")
  log="$d/data/apps/logs/logs/workers.log"
  sleep 1
  d1=$(ticks $daemon); w1=$(ticks $worker); l1=$(wc -l <"$log")
  sleep "$secs"
  d2=$(ticks $daemon); w2=$(ticks $worker); l2=$(wc -l <"$log")
  kill $daemon; wait $daemon 2>/dev/null || true; daemon=
  awk -v b="$bin" -v l=$((l2-l1)) -v s="$secs" -v dc=$((d2-d1)) -v wc=$((w2-w1)) \
    'BEGIN{printf "%-40s %12.0f %11.2fs %13.2fs %8.2f\n", b, l/s, dc/100, wc/100, dc/wc}'
done
