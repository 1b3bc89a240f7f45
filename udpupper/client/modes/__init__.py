"""udpupper-client's modes, one module each, each run the same way:
``run(reactor, options) -> exit status``.

- :mod:`.lines`: lines of standard input as datagrams, replies printed;
- :mod:`.ping`: ``--ping``, probes as ``ping`` sends them;
- :mod:`.sweep`: ``--ping --sweep``, the path's MTU;
- :mod:`.probes`: ``--serve-probes``, a prober for Prometheus;
- :mod:`.password`: ``--hash-password``, a hash for the prober's users.
"""
