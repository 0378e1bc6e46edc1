"""A trickle server that behaves like go-livepeer's (PROTOCOL.md section 1).

Run it in-process with :class:`TrickleServer` or from a shell with
``byockit-testkit trickle-server``.
"""

from byockit.testkit.trickle_server.server import TrickleServer

__all__ = ["TrickleServer"]
