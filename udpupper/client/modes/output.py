"""A mode's lines to standard output, where a reader may go away (``| head
-1``): the closed pipe is noted once and the mode told, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class Output:
    """``say(line)`` writes a line; at a closed pipe ``lost`` turns true,
    ``on_lost()`` is called once, and later lines go nowhere."""

    def __init__(self, on_lost: Callable[[], object] = lambda: None) -> None:
        self.lost = False
        self.on_lost = on_lost

    def say(self, line: str) -> None:
        if self.lost:
            return
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            self.lost = True
            self.on_lost()
