// An Express app under deployer (docs/recipes/express.md): it serves the
// socket the daemon passes as fd 3 and drains on SIGTERM.
'use strict';
const http = require('node:http');
const net = require('node:net');
const express = require('express');

const GRACE_MS = 1500; // keep-alive clients take the "Connection: close" hint meanwhile
const DRAIN_TIMEOUT_MS = 25000; // below the app's drain_timeout (30s)

const app = express();
let draining = false;
app.use((req, res, next) => {
  if (draining) res.set('Connection', 'close'); // Node closes the connection after this answer
  next();
});
app.get('/', (req, res) => {
  res.type('text').send(`hello from ${process.env.DEPLOYER_RELEASE || 'dev'} (pid ${process.pid})\n`);
});
app.get('/healthz', (req, res) => res.type('text').send('ok\n'));

const server = http.createServer(app);
server.listen({ fd: 3 }); // LISTEN_FDS=1: the daemon's socket

process.on('SIGTERM', () => {
  if (draining) process.exit(1); // a second signal: give up at once
  draining = true;
  // Stop accepting on our copy of the socket. net.Server's close, not
  // http.Server's: since Node 19 that one also closes idle keep-alive
  // connections at once, racing clients that are sending on them now.
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => {
    server.keepAliveTimeout = 1; // connections going idle from now on close too
    server.closeIdleConnections();
  }, GRACE_MS).unref();
  setTimeout(() => process.exit(1), DRAIN_TIMEOUT_MS).unref();
});
