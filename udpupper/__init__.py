"""udpupper: a Twisted UDP daemon that answers every datagram in upper case."""

__version__ = "1.2.0"
