"""``udpupper-bench``: how fast an upper-case echo answers, and at what cost.

:mod:`.load` is the closed-loop load generator, :mod:`.flood` an open-loop
flood from many sources, :mod:`.histogram` shows the latencies, :mod:`.cli`
is the command.
"""
