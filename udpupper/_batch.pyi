"""udpupper._batch (C): receive and send UDP datagrams many at a time."""

from typing import Any

BATCH: int
NOT_UNICAST: int
NO_DESTINATION: int
NOT_IP: int

def recv_batch(
    fd: int, count: int, pktinfo: bool, spin_us: int = ..., /
) -> list[tuple[bytes, tuple[str, int] | None, bytes | int]]: ...
def send_batch(
    fd: int, replies: list[tuple[bytes, bytes]], /
) -> tuple[int, int, list[tuple[int, int]]]: ...
def check_control(control: bytes, flags: int, /) -> bytes | int: ...
def count_into(counts: Any, /) -> None: ...
def reserve() -> None: ...
