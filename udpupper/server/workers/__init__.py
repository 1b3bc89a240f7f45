"""``--workers N``: N daemons on one port, as one.

:mod:`.parent` binds the group and supervises the workers, :mod:`.steering`
sends each source prefix to one of them (a BPF program), and :mod:`.worker`
is what a worker does that a lone daemon does not.
"""
