"""What every Python echo server here prints, so that the harness can read
it (runtimes/README.md): the ready line with the options of the live
listening sockets, read with getsockopt; `accepted` for each connection;
`failed NAME message` when the server cannot start. Each server exits at
the end of its stdin (how the harness stops it gracefully)."""

import errno
import os
import platform
import socket
import sys
import threading

WINDOWS = sys.platform == "win32"


def address(argv):
    """PORT [any|loopback] -> (host, port): '' is "all interfaces" as the
    socket docs write it."""
    port = int(argv[1])
    where = argv[2] if len(argv) > 2 else "any"
    return ("" if where == "any" else "127.0.0.1"), port


def _option(sock, level, name):
    try:
        return "1" if sock.getsockopt(level, name) else "0"
    except OSError:
        return "?"


def describe(sock):
    host, port = sock.getsockname()[:2]
    v6 = sock.family == socket.AF_INET6
    fields = [f"[{host}]:{port}" if v6 else f"{host}:{port}"]
    fields.append("reuseaddr=" + _option(sock, socket.SOL_SOCKET, socket.SO_REUSEADDR))
    if WINDOWS or not hasattr(socket, "SO_REUSEPORT"):
        fields.append("reuseport=-")
    else:
        fields.append("reuseport=" + _option(sock, socket.SOL_SOCKET, socket.SO_REUSEPORT))
    fields.append("v6only=" + (_option(sock, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) if v6 else "-"))
    if WINDOWS:
        fields.append("exclusive=" + _option(sock, socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE))
    else:
        fields.append("exclusive=-")
    return ",".join(fields)


def ready(*socks):
    print("ready", platform.python_version(), *(describe(s) for s in socks), flush=True)


def failed(err):
    code = getattr(err, "winerror", None) or getattr(err, "errno", None)
    name = errno.errorcode.get(code, type(err).__name__) if code else type(err).__name__
    print("failed", name, err, flush=True)
    sys.exit(1)


def accepted():
    print("accepted", flush=True)


def exit_at_end_of_stdin():
    def watch():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
