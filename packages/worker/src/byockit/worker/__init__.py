"""byockit worker SDK: run a frame processor as a Livepeer BYOC worker.

The smallest worker is a function from frame to frame::

    def invert(frame):
        return 255 - frame.data

served with ``byockit-worker serve my_module:invert --port 8000``. A
:class:`Processor` subclass adds lifecycle hooks (load, stream start, params
update, stream stop), typed and validated params, and torch frames.

- :class:`Processor`, :class:`Frame`, :class:`FrameFormat`, :class:`StreamContext`,
  :class:`ParamsRejected`: what processors are written against.
- :class:`WorkerServer`: the REST contract an orchestrator drives (PROTOCOL.md 2).
- :class:`StreamSession`: one running stream (channels wired to the pipeline).
- :class:`Registrar`: registers the capability with an orchestrator.
"""

from byockit.worker.frames import AudioFrame, Frame, FrameFormat
from byockit.worker.processor import (
    ParamsRejected,
    ParsedParams,
    Processor,
    ProcessorRuntime,
    StreamContext,
    build_params,
)
from byockit.worker.registration import Registrar, RegistrationError, RegistrationSettings
from byockit.worker.server import WorkerServer
from byockit.worker.session import SessionHealth, StreamSession

__version__ = "0.1.0"

__all__ = [
    "AudioFrame",
    "Frame",
    "FrameFormat",
    "ParamsRejected",
    "ParsedParams",
    "Processor",
    "ProcessorRuntime",
    "Registrar",
    "RegistrationError",
    "RegistrationSettings",
    "SessionHealth",
    "StreamContext",
    "StreamSession",
    "WorkerServer",
    "build_params",
]
