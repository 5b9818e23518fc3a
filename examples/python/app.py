"""A deployer worker in Python 3 with the standard library only: serve on the
socket the daemon passes at fd 3, send READY=1, drain on SIGTERM.
See docs/worker-protocol.md."""
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GRACE = 1.5  # seconds for keep-alive clients to take the "Connection: close" hint
DRAIN_TIMEOUT = 25.0  # below the daemon's drain_timeout (30s)


def notify(state):
    """sd_notify: one datagram to NOTIFY_SOCKET ('@' = abstract), if set."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


def inherited_socket():
    if "LISTEN_FDS" not in os.environ:
        sys.exit("no inherited sockets: LISTEN_FDS not set; run under deployer")
    pid = os.environ.get("LISTEN_PID")
    if pid and int(pid) != os.getpid():
        sys.exit(f"LISTEN_PID={pid} but this is pid {os.getpid()}: exec python from the start command")
    for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    # socket() reads family and type from the descriptor. Leave its blocking
    # mode alone: it is shared with the other workers.
    return socket.socket(fileno=3)


env = os.environ
rev = env.get("DEPLOYER_REVISION", "")[:7]
ANSWER = (f"hello from {env.get('DEPLOYER_RELEASE', '')} ({rev}) "
          f"worker {env.get('DEPLOYER_WORKER', '')}: {env.get('GREETING') or 'hi'}\n").encode()

draining = False  # answer with "Connection: close" from now on
closing = False  # past the grace period: close every connection once idle
cond = threading.Condition()  # guards conns and busy, notified as connections end
conns = set()  # open connections (handlers)
busy = set()  # those with a request in progress


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self):
        super().setup()
        with cond:
            conns.add(self)

    def finish(self):
        with cond:
            conns.discard(self)
            cond.notify_all()
        super().finish()

    def parse_request(self):  # called once a request line has arrived
        with cond:
            busy.add(self)
        return super().parse_request()

    def handle_one_request(self):
        try:
            super().handle_one_request()
        finally:
            with cond:
                busy.discard(self)
                if closing:
                    self.close_connection = True

    def do_GET(self):
        body = b"ok\n" if self.path == "/healthz" else ANSWER
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if draining:
            self.send_header("Connection", "close")  # also ends this handler's loop
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = inherited_socket()
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notify("READY=1")
    stop.wait()

    global draining, closing
    draining = True
    notify("STOPPING=1")
    server.shutdown()  # stop accepting ...
    server.socket.close()  # ... and close our copy of the socket, never shutdown(2) it
    with cond:
        cond.wait_for(lambda: not conns, GRACE)  # cut short once no connection is left
        closing = True  # close idle connections; busy ones close after their response
        for h in conns - busy:
            h.connection.shutdown(socket.SHUT_RDWR)
        drained = cond.wait_for(lambda: not conns, DRAIN_TIMEOUT)
    sys.exit(0 if drained else "drain timed out")


if __name__ == "__main__":
    main()
