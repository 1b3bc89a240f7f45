"""Only what setup.cfg cannot say: the optional C helper for batched I/O.

udpupper._batch moves datagrams with recvmmsg/sendmmsg (Linux).  Where it
cannot be built (no compiler, another system) udpupper installs and runs
without it, one system call per datagram.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension("udpupper._batch", ["udpupper/_batch.c"], optional=True)
    )

setup(ext_modules=extensions)
