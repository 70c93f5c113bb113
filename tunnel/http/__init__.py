"""HTTP/1.1 over tunnel streams, for the two services that use the tunnel.

The multiplexer (the package above) carries bytes and leaves HTTP to its callers, as yamux
does; this subpackage is one such caller, shared by both ends: :mod:`.serve` answers on the
agent with an aiohttp application, :mod:`.client` asks from the aggregator, and
:mod:`.transport` lets aiohttp's protocols run on a stream.
"""
