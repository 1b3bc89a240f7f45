"""Passwords for HTTP basic authentication, kept as scrypt hashes.

A password file has one ``user:hash`` a line (``#`` starts a comment), the
hash as :func:`hash_password` writes it (``udpupper-client
--hash-password`` prints one): ``scrypt$N$r$p$salt$key``, salt and key in
base64.  No password is kept in the clear, and a stolen file costs a
guesser scrypt's work for each guess.

Checking a password costs that work too, on the thread that serves: a
password once found right is remembered (by a hash of the user and it), so
a scraper that sends the same one every few seconds costs it once; and at
most ``CHECKS_A_SECOND`` passwords not remembered are checked a second, the
rest refused unchecked, so that guessing costs the prober little.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Callable

N, R, P = 1 << 14, 8, 1  # 16 MiB and a few tens of milliseconds a check
KEY_LENGTH = 32
REMEMBERED = 64  # right passwords remembered
CHECKS_A_SECOND = 10  # passwords not remembered checked a second, at most


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    key = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=KEY_LENGTH)
    return "$".join(
        [
            "scrypt",
            str(N),
            str(R),
            str(P),
            base64.b64encode(salt).decode(),
            base64.b64encode(key).decode(),
        ]
    )


def verify(password: str, hashed: str) -> bool:
    try:
        kind, n, r, p, salt, key = hashed.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 << 20,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def read_users(path: str) -> dict[str, str]:
    """user -> hash, from a password file; ValueError naming a bad line."""
    users = {}
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, colon, hashed = line.partition(":")
            if (
                not colon
                or not user
                or not hashed.startswith("scrypt$")
                or len(hashed.split("$")) != 6
            ):
                raise ValueError(f"{path}, line {number}: not user:scrypt$...")
            users[user] = hashed
    if not users:
        raise ValueError(f"{path}: no user in it")
    return users


def checker(
    users: dict[str, str], now: Callable[[], float] = time.monotonic
) -> Callable[[str, str], bool]:
    """A check of (user, password) against ``users``, remembering right ones,
    and checking at most CHECKS_A_SECOND others a second."""
    remembered: dict[bytes, None] = {}
    bucket = {"tokens": float(CHECKS_A_SECOND), "at": now()}

    def may_check() -> bool:
        at = now()
        bucket["tokens"] = min(
            float(CHECKS_A_SECOND), bucket["tokens"] + max(0.0, at - bucket["at"]) * CHECKS_A_SECOND
        )
        bucket["at"] = at
        if bucket["tokens"] < 1:
            return False
        bucket["tokens"] -= 1
        return True

    def check(user: str, password: str) -> bool:
        hashed = users.get(user)
        if hashed is None:
            return False
        seen = hashlib.sha256(f"{user}\0{password}\0{hashed}".encode()).digest()
        if seen in remembered:
            return True
        if not may_check() or not verify(password, hashed):
            return False
        if len(remembered) >= REMEMBERED:
            remembered.clear()
        remembered[seen] = None
        return True

    return check
