"""The daemon, ``twistd udpupper``: from the plugin's ``tap`` to the reply.

One datagram: :mod:`.tap` (options -> service) -> :mod:`.service` (binds)
-> :mod:`.port` (the transport: reads a batch) ->
:class:`.protocol.UpperProtocol` ``datagramReceived`` (the protections,
:mod:`udpupper.transform`) -> ``transport.write``.  Counters in
:mod:`.stats`, read by :mod:`.droplog` and :mod:`.metrics`;
:mod:`.systemd` speaks to the service manager.  The policies are in
:mod:`.protections`; ``--workers`` is :mod:`.workers`.
"""
