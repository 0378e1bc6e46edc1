"""byockit.testkit: Livepeer BYOC without the network.

- :class:`byockit.testkit.trickle_server.TrickleServer`: a trickle server that behaves like
  go-livepeer's, in-process or as ``byockit-testkit trickle-server``.
- :class:`byockit.testkit.orchestrator.FakeOrchestrator`: registrations, channel set-up and
  the worker REST calls of a go-livepeer orchestrator.
- :mod:`byockit.testkit.synthetic`: video whose frames carry their own index.
"""

__version__ = "0.1.0"
