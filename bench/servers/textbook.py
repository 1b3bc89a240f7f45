"""The textbook's blocking loop (Kurose & Ross 2.7.1), for comparison.

    python bench/servers/textbook.py PORT

The textbook's loop as it stands (UDPServer.py): one recvfrom, one sendto
per datagram, decode, upper, encode.  Two changes keep it comparable: it
reads whole datagrams (65,535 bytes, not 2,048) and survives bytes that are
not UTF-8 (surrogateescape), as udpupper does.
"""

import socket
import sys

server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    message, client = server.recvfrom(65535)
    reply = message.decode("utf-8", "surrogateescape").upper()
    server.sendto(reply.encode("utf-8", "surrogateescape"), client)
