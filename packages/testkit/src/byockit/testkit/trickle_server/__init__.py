"""A trickle server that behaves like go-livepeer's (PROTOCOL.md section 1).

Run it in-process with :class:`TrickleServer` or from a shell with
``byockit-testkit trickle-server``; inject faults through its ``faults``
(:class:`TrickleFaults`).
"""

from byockit.testkit.trickle_server.faults import Fault, FaultKind, TrickleFaults
from byockit.testkit.trickle_server.server import TrickleServer

__all__ = ["Fault", "FaultKind", "TrickleFaults", "TrickleServer"]
