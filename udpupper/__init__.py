"""udpupper: a Twisted UDP daemon that answers every datagram in upper case."""

__version__ = "1.2.0.dev0"

# The optional C helpers (setup.py builds them where it can), by module: what
# the tests' banner checks, and what the bench hides to run the pure paths.
C_HELPERS = (
    "udpupper._batch",
    "udpupper._transform",
    "udpupper.server.protections._ratelimit",
    "udpupper.server.protections._sources",
    "udpupper.server.protections._loops",
)
