"""``udpupper-client``: lines in, replies out, or ``--ping``.

:mod:`.protocol` sends lines and matches each reply to its line,
:mod:`.ping` probes a path as ``ping`` does, :mod:`.cli` is the command.
"""
