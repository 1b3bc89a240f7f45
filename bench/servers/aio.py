"""An asyncio DatagramProtocol echo, for comparison.

    python bench/servers/aio.py PORT [uvloop]

With "uvloop", on uvloop's event loop instead of asyncio's default.
"""

import asyncio
import sys

from udpupper.transform import upper


class Upper(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(upper(data), addr)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Upper, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[2:] == ["uvloop"]:
        import uvloop

        uvloop.install()
    asyncio.run(serve(int(sys.argv[1])))
