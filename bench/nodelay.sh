#!/usr/bin/env bash
# TCP_NODELAY on the daemon's app sockets: uvicorn on an inherited socket
# (--fd 3) with the option off, as the daemon held it before, and on, as
# it does now (supervisor.Socket.noDelay; systemd's NoDelay=yes). Same
# machine, same run, alternating rounds; prints requests/s and latency of
# each and the ratio on/off.
#
#   bench/nodelay.sh [rounds] [seconds]      (needs uvicorn and wrk)
set -euo pipefail
rounds=${1:-3}; secs=${2:-5}
command -v uvicorn >/dev/null && command -v wrk >/dev/null || { echo "needs uvicorn and wrk" >&2; exit 2; }
dir=$(mktemp -d); trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
pid=
cat > "$dir/app.py" <<'PY'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello\n"})
PY
# serve NODELAY: uvicorn --fd 3 on a socket made the way the daemon makes it.
serve() {
  python3 - "$1" "$dir" <<'PY' &
import os, socket, sys
nodelay, d = int(sys.argv[1]), sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(4096)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, nodelay)
open(d + "/port", "w").write(str(s.getsockname()[1]))
os.dup2(s.fileno(), 3); os.set_inheritable(3, True); os.chdir(d)
os.execvp("uvicorn", ["uvicorn", "--fd", "3", "--log-level", "warning", "app:app"])
PY
  pid=$!
  for _ in $(seq 100); do curl -fs "127.0.0.1:$(cat "$dir/port" 2>/dev/null)/" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "uvicorn did not come up" >&2; exit 1
}
declare -A rps lat
for r in $(seq "$rounds"); do
  for nd in 0 1; do
    rm -f "$dir/port"; serve $nd
    out=$(wrk -t2 -c16 -d"${secs}s" "http://127.0.0.1:$(cat "$dir/port")/")
    kill $pid; wait $pid 2>/dev/null || true
    rps[$nd]="${rps[$nd]:-} $(awk '/Requests\/sec/{print $2}' <<<"$out")"
    lat[$nd]="${lat[$nd]:-} $(awk '/Latency/{print $2}' <<<"$out")"
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
off=$(median <<<"${rps[0]}"); on=$(median <<<"${rps[1]}")
echo "uvicorn --fd 3, wrk -t2 -c16 -d${secs}s, $rounds rounds, medians"
echo "TCP_NODELAY off: $off req/s (latency:${lat[0]})"
echo "TCP_NODELAY on:  $on req/s (latency:${lat[1]})"
awk -v a="$on" -v b="$off" 'BEGIN{printf "ratio on/off: %.1fx\n", a/b}'
