"""A worker that tries, from inside its app, to reach what belongs to the
daemon and to another app, and answers GET /probe with what it got.
Run as `python3 app.py probe` it prints the same once (for a build)."""
import glob
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

DATA = os.environ["DATA"]
OTHER = DATA + "/apps/other"


def outcome(f):
    try:
        f()
        return "ok"
    except Exception as e:  # the kind of refusal is the answer
        return type(e).__name__


def read(path):
    with open(path, "rb") as f:
        f.read(64)


def connect(path, kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_UNIX, kind) as s:
        s.connect(path)


def write(path):
    with open(path, "w") as f:
        f.write("x")


def secret_in_environ():
    for p in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(p, "rb") as f:
                if b"s3cret-of-other" in f.read():
                    return p
        except OSError:
            pass
    return ""


def probe():
    return {
        "uid": os.getuid(),
        "groups": os.getgroups(),
        "home": os.environ.get("HOME", ""),
        "tokens": outcome(lambda: read(os.environ["TOKENS"])),
        "host_key": outcome(lambda: read(DATA + "/ssh_host_ed25519_key")),
        "control": outcome(lambda: connect(DATA + "/deployer.sock")),
        "keeper": outcome(lambda: connect(DATA + "/fdstore.sock", socket.SOCK_SEQPACKET)),
        "list_data": outcome(lambda: os.listdir(DATA)),
        "list_apps": outcome(lambda: os.listdir(DATA + "/apps")),
        "other_meta": outcome(lambda: read(OTHER + "/releases/v1.json")),
        "other_code": outcome(lambda: read(OTHER + "/releases/v1/app.py")),
        "other_list": outcome(lambda: os.listdir(OTHER + "/releases")),
        "other_repo": outcome(lambda: read(OTHER + "/repo.git/HEAD")),
        "other_ledger": outcome(lambda: read(OTHER + "/history.jsonl")),
        "other_shared": outcome(lambda: os.listdir(OTHER + "/shared")),
        "own_meta": outcome(lambda: read(DATA + "/apps/hello/releases/v1.json")),
        "own_repo": outcome(lambda: read(DATA + "/apps/hello/repo.git/HEAD")),
        "write_releases": outcome(lambda: write(DATA + "/apps/hello/releases/evil")),
        "write_data": outcome(lambda: write(DATA + "/evil")),
        "own_code": outcome(lambda: read("app.py")),
        "own_tree_write": outcome(lambda: write("written-by-app")),
        "shared_write": outcome(lambda: write("storage/written-by-app")),
        "secret_environ": secret_in_environ(),
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/probe":
            body = json.dumps(probe()).encode()
        else:
            body = ("hello from %s\n" % os.environ.get("DEPLOYER_RELEASE", "")).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if sys.argv[1:] == ["probe"]:
        print(json.dumps(probe()))
        sys.exit(0)
    srv = HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = socket.socket(fileno=3)
    addr = os.environ.get("NOTIFY_SOCKET")
    if addr:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", addr)
    srv.serve_forever()
