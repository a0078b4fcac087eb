"""The echo server of Python's socket documentation (bind, listen, accept),
with a thread per connection so that several clients can stay connected."""

import socket
import sys
import threading

import report


def echo(conn):
    with conn:
        while True:
            data = conn.recv(1024)
            if not data:
                break
            conn.sendall(data)


HOST, PORT = report.address(sys.argv)  # '' = all available interfaces
report.exit_at_end_of_stdin()
with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    try:
        s.bind((HOST, PORT))
        s.listen(1)
    except OSError as err:
        report.failed(err)
    report.ready(s)
    while True:
        conn, addr = s.accept()
        report.accepted()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()
