// The benchmark's Node app, the same under PM2 (cluster mode, PORT) and
// under deployer (the socket at fd 3). STOP_MODE says how it stops:
//   close  the common handler: server.close() and exit when it is done
//          (Node closes idle keep-alive connections at once, so requests
//          already on their way on them fail);
//   drain  as the worker protocol asks (docs/worker-protocol.md): stop
//          accepting, answer with "Connection: close" for a grace period
//          so keep-alive clients move on, then close what is left.
'use strict';
const http = require('http');
const net = require('net');

const mode = process.env.STOP_MODE || 'close';
const GRACE_MS = 1500;
const id = process.env.DEPLOYER_WORKER || process.env.NODE_APP_INSTANCE || '';
const body = `hello from worker ${id}\n`;
let draining = false;

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  res.end(body);
});
server.keepAliveTimeout = 65000;

if (process.env.LISTEN_FDS) server.listen({ fd: 3 });
else server.listen(Number(process.env.PORT || 3000));

function stop() {
  if (draining) return;
  draining = true;
  if (mode === 'close') {
    server.close(() => process.exit(0));
    return;
  }
  // Stop accepting: net.Server's close, not http.Server's, which since
  // Node 19 also closes idle keep-alive connections at once (as in
  // examples/node).
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => {
    server.keepAliveTimeout = 1; // connections going idle from now on close too
    server.closeIdleConnections();
  }, GRACE_MS).unref();
}
process.on('SIGTERM', stop); // deployer's stop_signal
process.on('SIGINT', stop); // PM2's
