"""http.server's server class as its documentation shows it
(HTTPServer(('', 8000), handler), here the threading variant that
`python -m http.server` runs). Only the socket matters: the handler echoes
lines instead of speaking HTTP, so that every server here talks alike."""

import http.server
import sys

import report


class EchoHandler(http.server.BaseHTTPRequestHandler):
    def handle(self):
        report.accepted()
        for line in self.rfile:
            self.wfile.write(line)


HOST, PORT = report.address(sys.argv)
report.exit_at_end_of_stdin()
try:
    httpd = http.server.ThreadingHTTPServer((HOST, PORT), EchoHandler)
except OSError as err:
    report.failed(err)
with httpd:
    report.ready(httpd.socket)
    httpd.serve_forever()
