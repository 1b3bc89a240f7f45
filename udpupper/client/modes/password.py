"""``udpupper-client --hash-password``: a password in, its hash out, for the
prober's ``--probe-auth`` file (not echoed on a terminal)."""

from __future__ import annotations

import getpass
import os
import sys

from udpupper.client.options import COMMAND, EXIT_USAGE, Options
from udpupper.passwords import hash_password


def run(reactor, options: Options) -> int:
    if os.isatty(0):
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print(f"{COMMAND}: no password given", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(password))
    return 0
