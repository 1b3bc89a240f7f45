"""Only what setup.cfg cannot say: the optional C helpers.

udpupper._batch moves datagrams with recvmmsg/sendmmsg (Linux), and
udpupper._transform upper-cases ASCII eight bytes at a time.  Where it
cannot be built (no compiler, another system) udpupper installs and runs
without it, one system call per datagram.  udpupper.server.protections._ratelimit (the rate
limiter's table) and udpupper.server.protections._sources (the classified source addresses) are
the same classes as in Python, in C, and udpupper.server.protections._loops the loop breaker's
comparisons and memory; without them the Python ones run.  The three
share _table.h, their open addressing.
"""

import importlib.util
import os
import sys

from setuptools import Extension, setup

# What the helpers share with their Python twins, defined in udpupper/abi.py
# (imported by path: udpupper itself may not import before it is built).
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "udpupper_abi", os.path.join(HERE, "udpupper", "abi.py")
)
_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_layout)
with open(os.path.join(HERE, "udpupper", "_layout.h"), "w") as header:
    header.write(_layout.c_header())

extensions = []
if sys.platform.startswith("linux"):
    extensions.append(
        Extension(
            "udpupper._batch", ["udpupper/_batch.c"], depends=["udpupper/_layout.h"], optional=True
        )
    )
extensions.append(Extension("udpupper._transform", ["udpupper/_transform.c"], optional=True))
for helper in ("_ratelimit", "_sources", "_loops"):
    extensions.append(
        Extension(
            f"udpupper.server.protections.{helper}",
            [f"udpupper/server/protections/{helper}.c"],
            depends=["udpupper/server/protections/_table.h"],
            optional=True,
        )
    )

setup(ext_modules=extensions)
