"""Runs main:app under uvicorn on the inherited socket, and drains on TERM.

uvicorn's own TERM handling closes idle keep-alive connections at once:
a client that sent its next request on one at that moment loses it. Here
TERM first stops accepting (the new release takes every new connection),
then answers with "Connection: close" until the open connections are gone
or DRAIN_SECONDS pass, and only then lets uvicorn shut down.
"""
import asyncio
import os
import signal

import uvicorn

from main import app

DRAIN_SECONDS = float(os.environ.get("DRAIN_SECONDS", "5"))


class DrainingServer(uvicorn.Server):
    def install_signal_handlers(self):
        loop = asyncio.get_event_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(self.drain()))
        loop.add_signal_handler(signal.SIGINT, self.handle_exit, signal.SIGINT, None)

    async def drain(self):
        if app.state.draining:
            self.should_exit = True  # a second TERM: stop now
            return
        app.state.draining = True
        for server in self.servers:
            server.close()  # closes uvicorn's own copy of fd 3: the socket stays open for the others
        loop = asyncio.get_event_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while self.server_state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.should_exit = True


if __name__ == "__main__":
    # fd 3 is the socket the daemon holds (LISTEN_FDS=1).
    DrainingServer(uvicorn.Config(app, fd=3, log_level="info")).run()
