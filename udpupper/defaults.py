"""The daemon's defaults that the other programs speak of: the client says
at start when ``--ping`` asks for more than the rate limit answers."""

DEFAULT_RATE = 200  # replies a second per source prefix: NSD's default
