"""socketserver's echo server as its documentation shows it, with the
threading variant of TCPServer (ThreadingTCPServer: the same socket setup,
a thread per client, so that several clients can stay connected)."""

import socketserver
import sys

import report


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        report.accepted()
        for line in self.rfile:
            self.wfile.write(line)


HOST, PORT = report.address(sys.argv)
report.exit_at_end_of_stdin()
try:
    server = socketserver.ThreadingTCPServer((HOST, PORT), EchoHandler)
except OSError as err:
    report.failed(err)
with server:
    report.ready(server.socket)
    server.serve_forever()
