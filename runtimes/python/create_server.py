"""socket.create_server (Python 3.8+), as its documentation shows it."""

import socket
import sys
import threading

import report


def echo(conn):
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


HOST, PORT = report.address(sys.argv)
report.exit_at_end_of_stdin()
try:
    server = socket.create_server((HOST, PORT))
except OSError as err:
    report.failed(err)
with server:
    report.ready(server)
    while True:
        conn, addr = server.accept()
        report.accepted()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
