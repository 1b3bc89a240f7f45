"""Only what setup.cfg cannot say: the optional C helpers.

udpupper._batch moves datagrams with recvmmsg/sendmmsg (Linux).  Where it
cannot be built (no compiler, another system) udpupper installs and runs
without it, one system call per datagram.  udpupper._ratelimit is the rate
limiter's table in C, one cache line a look-up; without it the same class
runs in Python.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension("udpupper._batch", ["udpupper/_batch.c"], optional=True)
    )
extensions.append(
    Extension("udpupper._ratelimit", ["udpupper/_ratelimit.c"], optional=True)
)

setup(ext_modules=extensions)
