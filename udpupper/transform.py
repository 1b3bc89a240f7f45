"""The one thing udpupper does to a payload: upper-case it, losing no byte.

The payload is decoded as UTF-8 with ``surrogateescape``, upper-cased with
``str.upper()`` and encoded back the same way.  Valid text therefore becomes
exactly what ``str.upper()`` gives (``ß`` becomes ``SS``), bytes that are not
UTF-8 travel through unchanged, and the empty datagram stays empty.
"""

from __future__ import annotations

from udpupper import helpers

# The largest UDP payload each IP version can carry (65,535 minus the IP and
# UDP headers; IPv6's header is not counted in its payload length).
MAX_IPV4_PAYLOAD = 65_507
MAX_IPV6_PAYLOAD = 65_527


def python_upper_ascii(payload: bytes) -> bytes | None:
    """``payload.upper()`` when ``payload`` is ASCII, else None."""
    # For ASCII, bytes.upper() is exactly str.upper(), without the decode
    # and encode.
    return payload.upper() if payload.isascii() else None


def python_upper(payload: bytes) -> bytes:
    """Return ``payload`` upper-cased as UTF-8 text, other bytes kept as-is."""
    reply = upper_ascii(payload)  # the fast path (C or Python: bound below)
    if reply is not None:
        return reply
    return payload.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")


# Both in C where it could be built: eight bytes a step, a frame fewer.
_transform = helpers.load("transform")
if _transform is not None:
    upper, upper_ascii = _transform.upper, _transform.upper_ascii
else:  # pragma: no cover - depends on the build
    upper, upper_ascii = python_upper, python_upper_ascii


def max_payload(host: str) -> int:
    """Return the largest datagram that can be sent to ``host``.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) travels as IPv4.
    """
    if ":" in host and not host.lower().startswith("::ffff:"):
        return MAX_IPV6_PAYLOAD
    return MAX_IPV4_PAYLOAD
