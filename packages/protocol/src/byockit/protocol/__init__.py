"""byockit.protocol: the Livepeer BYOC wire contract, shared by every byockit package.

Subpackages:

- :mod:`byockit.protocol.models`: attrs models of every JSON message, strict parsing.
- :mod:`byockit.protocol.trickle`: the async trickle publisher, subscriber and channel codecs.
- :mod:`byockit.protocol.media`: MPEG-TS segment encoder and streaming decoder (PyAV).
"""

__version__ = "0.1.0"
