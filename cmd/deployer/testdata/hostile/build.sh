# A hostile build, as the app's user: it leaves what a daemon might choke
# on when it cleans up, and tries to leave processes and links behind.
d=deep; i=0
while [ $i -lt 400 ]; do d=$d/dd; i=$((i+1)); done
mkdir -p "$d" && touch "$d/f"
mkfifo pipe
rm -rf storage && ln -s /etc storage          # the shared dir's link replaced
mkdir -p "$SHARED/sub" && rm -f "$SHARED/fifo" && mkfifo "$SHARED/fifo"
ln -s /etc "$SHARED/etc"                       # in shared: a link out
ln /etc/passwd hard 2>/dev/null || true        # refused: protected_hardlinks
(setsid sh -c 'exec sleep 4242' </dev/null >/dev/null 2>&1 &)
chmod -R 000 deep
chmod 0777 . 2>/dev/null
python3 -c '
import os, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(2000):
    try: s.sendto(b"READY=1", os.environ["DATA"] + "/notify.sock")
    except OSError: pass
'
