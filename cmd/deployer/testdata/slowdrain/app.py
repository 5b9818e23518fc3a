"""A worker that takes 3s to drain: on SIGTERM it stops accepting, as the
worker protocol asks, and exits 3s later (as if requests were in flight). It answers / with its release and /healthz with ok."""
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = ("hello from %s\n" % os.environ.get("DEPLOYER_RELEASE", "")).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n" if self.path == "/healthz" else ANSWER
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def drain(*_):
    def later():
        srv.shutdown()  # no more accepts...
        srv.socket.close()  # ...and the listener let go, as the protocol asks
        time.sleep(3)
        os._exit(0)
    threading.Thread(target=later).start()  # not a daemon thread: the exit waits for it


signal.signal(signal.SIGTERM, drain)
srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.serve_forever()
