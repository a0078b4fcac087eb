"""asyncio's TCP echo server as its documentation shows it
(asyncio.start_server); host None means all interfaces, one socket per
address family."""

import asyncio
import sys

import report


async def handle_echo(reader, writer):
    report.accepted()
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def main():
    host, port = report.address(sys.argv)
    try:
        server = await asyncio.start_server(handle_echo, host or None, port)
    except OSError as err:
        report.failed(err)
    report.ready(*server.sockets)
    async with server:
        await server.serve_forever()


report.exit_at_end_of_stdin()
asyncio.run(main())
