// Node's echo server as the net documentation shows it:
// net.createServer(handler).listen(port). Usage: node echo.js PORT [any|loopback]
// It prints the line protocol of runtimes/README.md. Node has no getsockopt,
// so the options are `?` here: on Linux the harness reads them from outside.
'use strict';
const net = require('node:net');

const port = Number(process.argv[2]);
const loopback = process.argv[3] === 'loopback';
const say = (line) => process.stdout.write(line + '\n');

const server = net.createServer((socket) => {
  say('accepted');
  socket.on('error', () => {});
  socket.pipe(socket);
});
server.on('error', (err) => {
  // libuv reports a bind's EADDRINUSE at listen(): err.syscall says which.
  say(`failed ${err.code || 'error'} ${err.syscall || ''}: ${err.message}`);
  process.exit(1);
});
const ready = () => {
  const { address, family, port } = server.address();
  const host = family === 'IPv6' ? `[${address}]` : address;
  const exclusive = process.platform === 'win32' ? '?' : '-';
  const reuseport = process.platform === 'win32' ? '-' : '?';
  const v6only = family === 'IPv6' ? '?' : '-';
  say(`ready ${process.versions.node} ${host}:${port},reuseaddr=?,reuseport=${reuseport},v6only=${v6only},exclusive=${exclusive}`);
};
if (loopback) {
  server.listen(port, '127.0.0.1', ready);
} else {
  server.listen(port, ready); // all interfaces
}
// The end of stdin is the harness's word to stop.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
