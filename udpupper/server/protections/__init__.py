"""What the daemon refuses to answer, and why: pure policies, no sockets.

:mod:`.destination` (where a datagram was sent), :mod:`.policy` (who sent
it: the loop guard, the classified sources), :mod:`.ratelimit` (how much,
by source prefix), :mod:`.loops` (the loop breaker).  Each takes a clock's
time and addresses; ``_ratelimit``, ``_sources`` and ``_loops`` are C twins
of the hot ones, held to the Python ones by the tests.
"""
