"""udpupper.server.protections._ratelimit (C): ratelimit.PythonRateLimiter's twin."""

from collections.abc import Hashable

class RateLimiter:
    rate: float
    burst: float
    size: int
    new_rate: float
    probation: int
    trial: int
    def __init__(
        self,
        rate: float,
        burst: float,
        size: int = ...,
        new_rate: float = ...,
        probation: int | None = ...,
        trial: int | None = ...,
    ) -> None: ...
    def allow(self, key: Hashable, now: float, sender: Hashable = ...) -> bool | None: ...
    def where(self, key: Hashable, /) -> int: ...
    def __contains__(self, key: Hashable) -> bool: ...
    def __len__(self) -> int: ...
