"""byockit worker SDK: run a frame processor as a Livepeer BYOC worker.

The server, session pipeline and processor API arrive with the worker SDK
issue; this package currently only reserves the namespace and its dependency
on :mod:`byockit.protocol`.
"""

__version__ = "0.1.0"
