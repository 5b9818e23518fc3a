// A deployer worker in plain Node (no dependencies): serve on the socket the
// daemon passes at fd 3 and drain on SIGTERM. See docs/worker-protocol.md.
'use strict';
const http = require('node:http');
const net = require('node:net');

const GRACE_MS = 1500; // let keep-alive clients take the "Connection: close" hint
const DRAIN_TIMEOUT_MS = 25000; // below the daemon's drain_timeout (30s)

const env = process.env;
if (!env.LISTEN_FDS) {
  console.error('no inherited sockets: LISTEN_FDS not set; run under deployer');
  process.exit(1);
}
if (env.LISTEN_PID && Number(env.LISTEN_PID) !== process.pid) {
  console.error(`LISTEN_PID=${env.LISTEN_PID} but this is pid ${process.pid}: exec node from the start command`);
  process.exit(1);
}
if (env.NOTIFY_SOCKET) {
  // Node has no unix datagram sockets: use health.http, not health.notify.
  console.error('NOTIFY_SOCKET is set but plain Node cannot send READY=1; turn health.notify off');
}
for (const k of ['LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES']) delete env[k];

const answer = `hello from ${env.DEPLOYER_RELEASE || ''} (${(env.DEPLOYER_REVISION || '').slice(0, 7)}) ` +
  `worker ${env.DEPLOYER_WORKER || ''}: ${env.GREETING || 'hi'}\n`;

let draining = false;
const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close'); // Node closes after this response
  res.end(req.url === '/healthz' ? 'ok\n' : answer);
});
server.listen({ fd: 3 });

process.on('SIGTERM', () => {
  if (draining) process.exit(1); // a second signal: give up at once
  draining = true;
  // Stop accepting on our copy of the socket. net.Server's close, not
  // http.Server's: since Node 19 that one also closes idle keep-alive
  // connections at once, racing clients that are sending on them right now.
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => {
    server.keepAliveTimeout = 1; // connections going idle from now on close too
    server.closeIdleConnections();
  }, GRACE_MS).unref();
  setTimeout(() => {
    console.error('drain timed out');
    process.exit(1);
  }, DRAIN_TIMEOUT_MS).unref();
});
