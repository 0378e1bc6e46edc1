"""byockit client SDK: drive BYOC capabilities on a Livepeer gateway.

The gateway client, sessions, sources and sinks arrive with the client SDK
issue; this package currently only reserves the namespace and its dependency
on :mod:`byockit.protocol`.
"""

__version__ = "0.1.0"
