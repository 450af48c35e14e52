"""A TLS terminator on loopback: ``python -m tests.tls_proxy LISTEN_PORT TARGET_PORT CERT KEY``.

The embedded broker (Tansu 0.6.0) speaks SASL but its TLS options cannot be combined (``--cert`` refuses
``--key``), so the tests put this in front of it the way a load balancer or stunnel would: clients speak TLS
(and SASL inside it) to LISTEN_PORT, the broker sees the SASL exchange in plain TCP on TARGET_PORT.
"""

from __future__ import annotations

import asyncio
import ssl
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def main(listen_port: int, target_port: int, cert: str, key: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen_port, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]))
