#!/usr/bin/env python3
"""TLS in front of a plaintext Kafka-compatible broker, for the Kafka TLS tests.

tansu 0.6 does not terminate TLS itself, so scripts/services/kafka.sh starts a second,
plaintext tansu that advertises this proxy's address, and this proxy (Python's own ssl
module, no packages) terminates TLS with the test CA's server certificate and forwards
bytes both ways. Clients therefore speak real TLS (handshake, certificate verification,
hostname check) to what the broker advertises.

usage: tls_proxy.py LISTEN_HOST LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT CERT_PEM KEY_PEM
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    host, port, up_host, up_port, cert, key = sys.argv[1:7]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)

    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(up_host, int(up_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(handle, host, int(port), ssl=ctx)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
